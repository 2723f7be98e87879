//! A loader thread that reads the next batches while the current step computes.
//!
//! The batches are known in advance (the epoch's order is a function of the seed), so a
//! thread reads them in order, `depth` ahead, and hands each over through a bounded
//! channel: reading from disk and converting to f32 overlap the step instead of adding to it.

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;

use anyhow::Result;

use super::Dataset;

/// One batch: its scenes and the model's input for them (features `[B, N, F]`, or images
/// `[B, H, W, 3]` in [0, 1]).
pub struct Batch {
    pub scenes: Vec<usize>,
    pub inputs: Vec<f32>,
}

impl Dataset {
    /// The model's input for `scenes`: features, or images in [0, 1].
    pub fn model_inputs(&self, scenes: &[usize]) -> Result<Vec<f32>> {
        if self.kind_is_features() {
            self.features_batch(scenes)
        } else {
            self.images_batch_f32(scenes)
        }
    }
}

pub struct Prefetch {
    rx: Option<Receiver<Result<Batch>>>,
    thread: Option<JoinHandle<()>>,
}

impl Prefetch {
    /// Read `batches` of `data` in order on a thread, at most `depth` ahead of [`next`](Self::next).
    pub fn new(data: Dataset, batches: Vec<Vec<usize>>, depth: usize) -> Prefetch {
        let (tx, rx) = sync_channel(depth.max(1));
        let thread = std::thread::Builder::new()
            .name("slotforge-loader".into())
            .spawn(move || {
                for scenes in batches {
                    let batch = data.model_inputs(&scenes).map(|inputs| Batch { scenes, inputs });
                    let failed = batch.is_err();
                    // the receiver is gone when training stopped early: nothing more to read
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawning the loader thread");
        Prefetch { rx: Some(rx), thread: Some(thread) }
    }

    /// The next batch (None after the last).
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // closing the channel first lets a thread blocked on a full channel finish
        self.rx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

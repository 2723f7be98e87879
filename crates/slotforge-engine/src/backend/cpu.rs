//! Native CPU backend: buffers are plain `Vec<f32>`; ops run on slices immediately.

use super::Buf;

#[derive(Default, Debug)]
pub struct CpuStore {
    bufs: Vec<Vec<f32>>,
}

impl CpuStore {
    pub fn alloc(&mut self, len: usize) -> Buf {
        self.bufs.push(vec![0.0; len]);
        Buf { id: self.bufs.len() - 1, len }
    }

    pub fn get(&self, b: Buf) -> &[f32] {
        &self.bufs[b.id]
    }

    pub fn get_mut(&mut self, b: Buf) -> &mut [f32] {
        &mut self.bufs[b.id]
    }

    /// Run `f` with the `reads` borrowed shared and the `writes` borrowed mutably.
    /// Writes must be distinct from each other and from the reads.
    pub fn run<R>(&mut self, reads: &[Buf], writes: &[Buf], f: impl FnOnce(&[&[f32]], &mut [&mut [f32]]) -> R) -> R {
        for (i, w) in writes.iter().enumerate() {
            assert!(!reads.contains(w), "buffer {} is both read and written", w.id);
            assert!(!writes[..i].contains(w), "buffer {} written twice", w.id);
        }
        let mut taken: Vec<Vec<f32>> = writes.iter().map(|w| std::mem::take(&mut self.bufs[w.id])).collect();
        let r = {
            let rs: Vec<&[f32]> = reads.iter().map(|b| self.bufs[b.id].as_slice()).collect();
            let mut ws: Vec<&mut [f32]> = taken.iter_mut().map(|v| v.as_mut_slice()).collect();
            f(&rs, &mut ws)
        };
        for (w, v) in writes.iter().zip(taken) {
            self.bufs[w.id] = v;
        }
        r
    }
}

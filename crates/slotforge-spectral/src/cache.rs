//! Segmentations cached per scene: the inputs are frozen features, so each scene is
//! decomposed once per run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rayon::prelude::*;

use crate::*;

// ---------------------------------------------------------------------------------------------
// cache

/// Segmentations keyed by scene index. The inputs are frozen features, so each scene is
/// decomposed once; the cache is tied to one `(n, f, grid, num_slots, cfg)` and must be
/// cleared (or a new one made) if any of them, or the features, change.
pub struct SpectralCache {
    cfg: SpectralConfig,
    n: usize,
    f: usize,
    grid: (usize, usize),
    num_slots: usize,
    map: Mutex<HashMap<usize, Arc<Segmentation>>>,
}

impl SpectralCache {
    pub fn new(
        cfg: SpectralConfig,
        n: usize,
        f: usize,
        grid: (usize, usize),
        num_slots: usize,
    ) -> Self {
        assert_eq!(grid.0 * grid.1, n, "grid (h, w) must have h * w == n");
        SpectralCache {
            cfg,
            n,
            f,
            grid,
            num_slots,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &SpectralConfig {
        &self.cfg
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.map.lock().unwrap().clear();
    }

    /// The cached segmentation of `scene`, if computed.
    pub fn get(&self, scene: usize) -> Option<Arc<Segmentation>> {
        self.map.lock().unwrap().get(&scene).cloned()
    }

    /// The segmentation of `scene` (tokens `[n, f]`), computed on first use.
    pub fn get_or_compute(&self, scene: usize, tokens: &[f32]) -> Arc<Segmentation> {
        if let Some(s) = self.get(scene) {
            return s;
        }
        let seg = Arc::new(segment(
            tokens,
            self.n,
            self.f,
            self.grid,
            self.num_slots,
            &self.cfg,
        ));
        self.map.lock().unwrap().entry(scene).or_insert(seg).clone()
    }

    /// Segmentations of a batch: `scenes[i]` is the index of the scene whose tokens are
    /// `tokens[i * n * f..(i + 1) * n * f]`. Missing scenes are computed in parallel (rayon).
    pub fn get_batch(&self, scenes: &[usize], tokens: &[f32]) -> Vec<Arc<Segmentation>> {
        let nf = self.n * self.f;
        assert_eq!(
            tokens.len(),
            scenes.len() * nf,
            "tokens must be [scenes.len(), n, f]"
        );
        let missing: Vec<(usize, usize)> = {
            let map = self.map.lock().unwrap();
            let mut seen = std::collections::HashSet::new();
            scenes
                .iter()
                .enumerate()
                .filter(|(_, s)| !map.contains_key(s) && seen.insert(**s))
                .map(|(i, &s)| (i, s))
                .collect()
        };
        let computed: Vec<(usize, Arc<Segmentation>)> = missing
            .par_iter()
            .map(|&(i, s)| {
                let t = &tokens[i * nf..(i + 1) * nf];
                (
                    s,
                    Arc::new(segment(
                        t,
                        self.n,
                        self.f,
                        self.grid,
                        self.num_slots,
                        &self.cfg,
                    )),
                )
            })
            .collect();
        let mut map = self.map.lock().unwrap();
        for (s, seg) in computed {
            map.entry(s).or_insert(seg);
        }
        scenes.iter().map(|s| map[s].clone()).collect()
    }
}

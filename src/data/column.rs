//! A column: one array of a dataset (features, images or masks), scene-major, over one or
//! more parts (shards) that are held in memory or read from disk by position.

use std::sync::Arc;

use anyhow::{bail, Result};

use super::npy::{fmt_index, NpyArray};

#[derive(Clone, Debug)]
enum Part {
    F32(Arc<Vec<f32>>),
    U8(Arc<Vec<u8>>),
    Npy(NpyArray),
}

/// What a column holds, which decides how its values are read and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    /// float features, |x| <= [`MAX_FEATURE_ABS`](super::MAX_FEATURE_ABS)
    Features,
    /// uint8 RGB
    Images,
    /// integer labels in 0..=255
    Masks,
}

#[derive(Clone, Debug)]
pub struct Column {
    kind: ColumnKind,
    parts: Vec<Part>,
    /// first scene of each part, and the total at the end
    starts: Vec<usize>,
    /// values per scene
    pub per_scene: usize,
    /// the shape after the scene axis
    pub tail: Vec<usize>,
}

impl Column {
    pub fn mem_f32(data: Vec<f32>, tail: &[usize]) -> Column {
        let per: usize = tail.iter().product();
        let scenes = if per == 0 { 0 } else { data.len() / per };
        Column { kind: ColumnKind::Features, parts: vec![Part::F32(Arc::new(data))], starts: vec![0, scenes], per_scene: per, tail: tail.to_vec() }
    }

    pub fn mem_u8(kind: ColumnKind, data: Vec<u8>, tail: &[usize]) -> Column {
        let per: usize = tail.iter().product();
        let scenes = if per == 0 { 0 } else { data.len() / per };
        Column { kind, parts: vec![Part::U8(Arc::new(data))], starts: vec![0, scenes], per_scene: per, tail: tail.to_vec() }
    }

    /// Shards read from disk, in order; their shapes were checked to agree by the caller.
    pub fn files(kind: ColumnKind, arrays: Vec<NpyArray>) -> Column {
        let tail = arrays[0].shape()[1..].to_vec();
        let mut starts = vec![0];
        for a in &arrays {
            starts.push(starts.last().unwrap() + a.shape()[0]);
        }
        Column { kind, parts: arrays.into_iter().map(Part::Npy).collect(), starts, per_scene: tail.iter().product(), tail }
    }

    pub fn scenes(&self) -> usize {
        *self.starts.last().unwrap()
    }

    /// The files behind the column (empty when it is held in memory).
    pub fn files_of(&self) -> Vec<&NpyArray> {
        self.parts.iter().filter_map(|p| if let Part::Npy(a) = p { Some(a) } else { None }).collect()
    }

    pub fn in_memory(&self) -> bool {
        self.files_of().is_empty()
    }

    /// Bytes the column takes on disk or in memory.
    pub fn bytes(&self) -> u64 {
        self.parts
            .iter()
            .map(|p| match p {
                Part::F32(v) => v.len() as u64 * 4,
                Part::U8(v) => v.len() as u64,
                Part::Npy(a) => a.header.data_bytes(),
            })
            .sum()
    }

    fn locate(&self, scene: usize) -> (&Part, usize) {
        assert!(scene < self.scenes(), "scene {scene} out of range (count {})", self.scenes());
        let p = self.starts.partition_point(|&s| s <= scene) - 1;
        (&self.parts[p], scene - self.starts[p])
    }

    /// Scene `scene` as f32 into `out` (`per_scene` values); features only.
    pub fn read_f32(&self, scene: usize, out: &mut [f32]) -> Result<()> {
        let per = self.per_scene;
        match self.locate(scene) {
            (Part::F32(v), i) => out.copy_from_slice(&v[i * per..(i + 1) * per]),
            (Part::Npy(a), i) => {
                a.read_f32(i * per, out)?;
                if let Some(j) = out.iter().position(|v| v.abs() > super::MAX_FEATURE_ABS) {
                    bail!(
                        "{}: value {:e} at index {} is out of range: feature values must satisfy |x| <= {:e} \
                         (the reconstruction loss would overflow float32)",
                        a.name,
                        out[j],
                        fmt_index(i * per + j, a.shape()),
                        super::MAX_FEATURE_ABS
                    );
                }
            }
            (Part::U8(_), _) => bail!("a byte column read as floats"),
        }
        Ok(())
    }

    /// Scene `scene` as bytes into `out` (`per_scene` values); images and masks.
    pub fn read_u8(&self, scene: usize, out: &mut [u8]) -> Result<()> {
        let per = self.per_scene;
        match self.locate(scene) {
            (Part::U8(v), i) => out.copy_from_slice(&v[i * per..(i + 1) * per]),
            (Part::Npy(a), i) if self.kind == ColumnKind::Masks => a.read_labels_u8(i * per, out)?,
            (Part::Npy(a), i) => a.read_u8(i * per, out)?,
            (Part::F32(_), _) => bail!("a float column read as bytes"),
        }
        Ok(())
    }
}

//! safetensors files: named f32 tensors with shapes plus string metadata.
//! Reading accepts F32 and F64 (PyTorch references are float64); writing is atomic.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn new(shape: &[usize], data: Vec<f32>) -> Tensor {
        assert_eq!(shape.iter().product::<usize>(), data.len());
        Tensor { shape: shape.to_vec(), data }
    }
}

#[derive(Clone, Debug, Default)]
pub struct TensorFile {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    pub fn load(path: &Path) -> Result<TensorFile> {
        let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read the safetensors file", path.display()))?;
        check_complete(path, &bytes)?;
        let st = SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
                Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32).collect(),
                other => bail!("{}: tensor {name} has dtype {other:?}; only F32 and F64 are supported", path.display()),
            };
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                bail!("{}: tensor {name} has a non-finite value at flat index {i}", path.display());
            }
            tensors.insert(name, Tensor { shape: view.shape().to_vec(), data });
        }
        Ok(TensorFile { tensors, metadata: meta.metadata().clone().unwrap_or_default().into_iter().collect() })
    }

    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).with_context(|| format!("tensor {name:?} is missing"))
    }

    pub fn insert(&mut self, name: &str, shape: &[usize], data: Vec<f32>) {
        self.tensors.insert(name.to_string(), Tensor::new(shape, data));
    }

    /// Write as F32 safetensors via a temporary file, a sync and a rename.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.save_with(path, true)
    }

    /// [`save`](Self::save); `durable` = false skips the sync (a kill still cannot tear the
    /// file, only a power loss could lose it). The bytes depend on the contents alone: the
    /// header's keys are sorted (the safetensors crate writes metadata in hash order).
    pub fn save_with(&self, path: &Path, durable: bool) -> Result<()> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), bytemuck::cast_slice::<f32, u8>(&t.data).to_vec(), t.shape.clone()))
            .collect();
        let views: Vec<(String, TensorView)> = bytes
            .iter()
            .map(|(n, b, s)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap()))
            .collect();
        let meta = if self.metadata.is_empty() { None } else { Some(self.metadata.clone().into_iter().collect()) };
        let mut out = safetensors::serialize(views, meta)?;
        canonical_header(&mut out)?;
        crate::data::npy::write_atomic_with(path, durable, |w| w.write_all(&out))
    }
}

/// Rewrite a serialized file's JSON header with its keys sorted (same length: only the order
/// of the keys changes), so that equal contents give equal bytes.
fn canonical_header(bytes: &mut [u8]) -> Result<()> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n])?;
    // serde_json's maps are sorted (BTreeMap) without the preserve_order feature
    let mut sorted = serde_json::to_vec(&header)?;
    anyhow::ensure!(sorted.len() <= n, "safetensors header grew when sorted");
    sorted.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&sorted);
    Ok(())
}

/// Name the two ways a cut-off file shows up (the safetensors crate reports them only as
/// "header too small" / "incomplete metadata"): fewer bytes than the header's length prefix
/// announces, or fewer data bytes than the header's tensors cover.
fn check_complete(path: &Path, bytes: &[u8]) -> Result<()> {
    let len = bytes.len();
    if len == 0 {
        bail!("{}: empty file (0 bytes): not a safetensors file", path.display());
    }
    if len < 8 {
        bail!("{}: truncated: {len} bytes, shorter than the 8-byte header length of a safetensors file", path.display());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    // a plausible header (JSON starting with '{') that the file does not hold in full
    if n > (len - 8) as u64 && n < 100_000_000 && bytes.get(8) == Some(&b'{') {
        bail!("{}: truncated: the header claims {n} bytes but the file has {} after the length prefix", path.display(), len - 8);
    }
    if n <= (len - 8) as u64 {
        let header: Option<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(&bytes[8..8 + n as usize]).ok();
        let end = header
            .iter()
            .flat_map(|h| h.iter())
            .filter(|(k, _)| k.as_str() != "__metadata__")
            .filter_map(|(_, v)| v.get("data_offsets")?.get(1)?.as_u64())
            .max();
        if let Some(end) = end {
            let have = (len - 8 - n as usize) as u64;
            if have < end {
                bail!("{}: truncated: the tensors need {end} data bytes but the file has {have}", path.display());
            }
        }
    }
    Ok(())
}

/// Write `bytes` to `path` through `<path>.tmp` + sync + rename, so a reader never sees half a
/// file; on any error the temporary file is removed and `path` is left as it was.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::data::npy::write_atomic(path, |w| w.write_all(bytes))
}

/// Check that `dir` can serve as an output directory without creating anything: it is an
/// existing directory, or the nearest existing ancestor is a directory.
pub fn check_output_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        if !dir.is_dir() {
            bail!("output directory {}: the path exists and is not a directory", dir.display());
        }
        return Ok(());
    }
    for a in dir.ancestors().skip(1) {
        if a.as_os_str().is_empty() {
            break;
        }
        if a.exists() {
            if !a.is_dir() {
                bail!("cannot create output directory {}: {} is a file, not a directory", dir.display(), a.display());
            }
            break;
        }
    }
    Ok(())
}

/// [`check_output_dir`], then create `dir` (and its parents) and check it is writable.
/// Call it right before the first write, after the inputs have been checked, so a rejected
/// input leaves nothing behind.
pub fn create_output_dir(dir: &Path) -> Result<()> {
    check_output_dir(dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let probe = dir.join(".write-probe");
    std::fs::write(&probe, b"").with_context(|| format!("output directory {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Check that `path` can be written as an output file: it is not a directory and its parent
/// is an existing directory. Nothing is created.
pub fn check_output_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("output file {}: the path is a directory; give a file name such as {}", path.display(), path.join("out.safetensors").display());
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.exists() {
        bail!("cannot write {}: the directory {} does not exist", path.display(), parent.display());
    }
    if !parent.is_dir() {
        bail!("cannot write {}: {} is a file, not a directory", path.display(), parent.display());
    }
    Ok(())
}

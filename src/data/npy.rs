//! `.npy` arrays: headers parsed with `npyz`, data read by position (never the whole file at
//! once), float16 / bfloat16 / float64 converted to f32 per read, and atomic writes.
//!
//! An [`NpyArray`] is an open `.npy` file, or an `.npy` entry stored uncompressed in an `.npz`
//! archive (the same bytes at an offset). Opening checks the header and that the file holds
//! exactly the bytes the shape needs; reads are positional (`pread`), so any number of
//! threads can read one array and nothing is mapped into the process: a 30 GB file costs
//! the memory of the rows read, not of the file.
//!
//! bfloat16: numpy has no bfloat16 of its own; arrays of `ml_dtypes.bfloat16` (what
//! `torch.Tensor.numpy()` users reach for) are written by `np.save` with the descr `<V2`
//! (2-byte void). A 2-byte void array is read as bfloat16; the descr `bfloat16` is accepted too.
//!
//! Every error names the file and the problem: not an `.npy` file, a malformed header, an
//! unsupported dtype, truncated or trailing data, non-finite values (with the index of the
//! first one), labels out of range.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use half::{bf16, f16};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element type of an `.npy` file, as far as slotforge understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    BF16,
    F32,
    F64,
    Bool,
    U8,
    I8,
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
}

impl DType {
    pub fn size(self) -> usize {
        match self {
            DType::Bool | DType::U8 | DType::I8 => 1,
            DType::F16 | DType::BF16 | DType::U16 | DType::I16 => 2,
            DType::F32 | DType::U32 | DType::I32 => 4,
            DType::F64 | DType::U64 | DType::I64 => 8,
        }
    }
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }
    /// numpy's name for the type (`float32`, `uint8`, ...), for messages.
    pub fn numpy_name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::Bool => "bool",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::U16 => "uint16",
            DType::I16 => "int16",
            DType::U32 => "uint32",
            DType::I32 => "int32",
            DType::U64 => "uint64",
            DType::I64 => "int64",
        }
    }
    /// The little-endian descr written in headers (bfloat16 as numpy writes ml_dtypes' type).
    pub fn descr_le(self) -> &'static str {
        match self {
            DType::F16 => "<f2",
            DType::BF16 => "<V2",
            DType::F32 => "<f4",
            DType::F64 => "<f8",
            DType::Bool => "|b1",
            DType::U8 => "|u1",
            DType::I8 => "|i1",
            DType::U16 => "<u2",
            DType::I16 => "<i2",
            DType::U32 => "<u4",
            DType::I32 => "<i4",
            DType::U64 => "<u8",
            DType::I64 => "<i8",
        }
    }
    /// `f32`, `f16` or `bf16` (the `gen-data --dtype` names).
    pub fn parse_float(name: &str) -> Result<DType> {
        match name {
            "f32" | "float32" => Ok(DType::F32),
            "f16" | "float16" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::BF16),
            _ => bail!("unknown float dtype '{name}' (f32, f16 or bf16)"),
        }
    }
}

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub dtype: DType,
    /// true if the data is big-endian (multi-byte types only)
    pub big_endian: bool,
    pub shape: Vec<usize>,
    /// offset of the first data byte in the file (for an `.npz` entry: in the archive)
    pub data_offset: u64,
}

impl Header {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn data_bytes(&self) -> u64 {
        self.len() as u64 * self.dtype.size() as u64
    }
}

/// Multi-dimensional index of flat position `flat` in a C-order array of `shape`.
pub fn unravel(flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; shape.len()];
    let mut rem = flat;
    for (d, &s) in shape.iter().enumerate().rev() {
        if s > 0 {
            idx[d] = rem % s;
            rem /= s;
        }
    }
    idx
}

/// `[i, j, k] (flat index n)`: the position of element `flat` of a C-order array, for messages.
pub fn fmt_index(flat: usize, shape: &[usize]) -> String {
    let idx = unravel(flat, shape);
    let parts: Vec<String> = idx.iter().map(|i| i.to_string()).collect();
    format!("[{}] (flat index {flat})", parts.join(", "))
}

pub fn fmt_shape(shape: &[usize]) -> String {
    let parts: Vec<String> = shape.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

// ---------------------------------------------------------------------------------------
// positional reads

/// Fill `buf` from `file` at byte `offset`.
pub fn read_at(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n = std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

/// A `Read` over `file` from `pos`, counting what it reads (npyz parses headers from a reader).
struct ReadFrom<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for ReadFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.end.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        read_at(self.file, &mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

// ---------------------------------------------------------------------------------------
// header parsing

fn map_dtype(descr: &str, ts: &npyz::TypeStr) -> Result<(DType, bool)> {
    use npyz::TypeChar as C;
    let size = ts.size_field();
    let dtype = match (ts.type_char(), size) {
        (C::Float, 2) => DType::F16,
        (C::Float, 4) => DType::F32,
        (C::Float, 8) => DType::F64,
        (C::RawData, 2) => DType::BF16,
        (C::Bool, 1) => DType::Bool,
        (C::Uint, 1) => DType::U8,
        (C::Int, 1) => DType::I8,
        (C::Uint, 2) => DType::U16,
        (C::Int, 2) => DType::I16,
        (C::Uint, 4) => DType::U32,
        (C::Int, 4) => DType::I32,
        (C::Uint, 8) => DType::U64,
        (C::Int, 8) => DType::I64,
        _ => bail!(
            "unsupported dtype '{descr}' (supported: float32, float16, bfloat16 (written as '<V2'), float64, bool and integer types)"
        ),
    };
    let big = ts.endianness() == npyz::Endianness::Big;
    Ok((dtype, big && dtype.size() > 1))
}

/// Parse the header of the `.npy` bytes at `base..end` of `file`; `what` names them in errors.
pub fn parse_header(file: &File, base: u64, end: u64) -> Result<Header> {
    let avail = end.saturating_sub(base);
    let mut first = [0u8; 12];
    let n = avail.min(12) as usize;
    read_at(file, &mut first[..n], base).context("read failed")?;
    let b = &first[..n];
    if b.is_empty() {
        bail!("empty file (0 bytes): not an .npy file");
    }
    if b.len() >= 6 && &b[..6] == MAGIC && b.len() < 10 {
        bail!("truncated header: the file ends after {} bytes", b.len());
    }
    if b.len() < 10 || &b[..6] != MAGIC {
        bail!("not an .npy file (missing the \\x93NUMPY magic)");
    }
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as u64, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as u64, 12),
        2 | 3 => bail!("truncated header"),
        v => bail!("unsupported .npy format version {v}.{}", b[7]),
    };
    if avail < start + hlen {
        bail!("truncated header: it claims {hlen} bytes but the file has {}", avail.saturating_sub(start));
    }
    // the dict, the one thing numpy's format has that is worth a maintained parser
    let mut reader = ReadFrom { file, pos: base, end: base + start + hlen };
    let header = npyz::NpyHeader::from_reader(&mut reader).map_err(|e| {
        let mut text = vec![0u8; hlen.min(4096) as usize];
        let shown = read_at(file, &mut text, base + start).map(|_| String::from_utf8_lossy(&text).trim().to_string()).unwrap_or_default();
        let why = e.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        anyhow!("malformed .npy header: {why} (header: {shown})")
    })?;
    let descr = header.dtype().descr().trim_matches('\'').to_string();
    let npyz::DType::Plain(ts) = header.dtype() else {
        bail!("dtype {descr} is a structured type: only plain arrays are supported");
    };
    let (dtype, big_endian) = map_dtype(&descr, &ts)?;
    let shape: Vec<usize> = header.shape().iter().map(|&d| d as usize).collect();
    if header.order() == npyz::Order::Fortran && shape.len() > 1 {
        bail!("fortran_order arrays are not supported (save with np.ascontiguousarray)");
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| anyhow!("shape {} is too large", fmt_shape(&shape)))?;
    Ok(Header { dtype, big_endian, shape, data_offset: base + start + hlen })
}

// ---------------------------------------------------------------------------------------
// arrays

/// An open array: a `.npy` file or an uncompressed `.npz` entry, read by position.
#[derive(Clone, Debug)]
pub struct NpyArray {
    /// What errors call it: `dir/features.npy`, or `dir/data.npz:features`.
    pub name: String,
    pub path: PathBuf,
    file: Arc<File>,
    pub header: Header,
}

impl NpyArray {
    /// Open a `.npy` file and check its size against the header.
    pub fn open(path: &Path) -> Result<NpyArray> {
        let name = path.display().to_string();
        let file = File::open(path).with_context(|| format!("{name}: cannot open"))?;
        let len = file.metadata().with_context(|| format!("{name}: cannot stat"))?.len();
        Self::at(path, name, Arc::new(file), 0, len)
    }

    /// The array stored in `file` at bytes `base..end`.
    pub fn at(path: &Path, name: String, file: Arc<File>, base: u64, end: u64) -> Result<NpyArray> {
        let header = parse_header(&file, base, end).with_context(|| name.clone())?;
        let want = header.data_bytes();
        let have = end.saturating_sub(header.data_offset);
        let (shape, ty) = (fmt_shape(&header.shape), header.dtype.numpy_name());
        if have < want {
            bail!("{name}: truncated data: shape {shape} of {ty} needs {want} bytes, the file has {have}");
        }
        if have > want {
            bail!("{name}: {} unexpected trailing bytes after the data of shape {shape} ({ty})", have - want);
        }
        Ok(NpyArray { name, path: path.to_path_buf(), file, header })
    }

    pub fn shape(&self) -> &[usize] {
        &self.header.shape
    }
    pub fn dtype(&self) -> DType {
        self.header.dtype
    }

    /// Raw bytes of elements `start..start + buf.len() / size`.
    fn read_raw(&self, start: usize, buf: &mut [u8]) -> Result<()> {
        let off = self.header.data_offset + (start * self.header.dtype.size()) as u64;
        read_at(&self.file, buf, off).with_context(|| format!("{}: read failed at byte {off}", self.name))
    }

    /// Elements `start..start + out.len()` as f32 (float dtypes only), rejecting NaN / Inf and
    /// values that overflow f32, naming the first.
    pub fn read_f32(&self, start: usize, out: &mut [f32]) -> Result<()> {
        let (h, n) = (&self.header, out.len());
        match h.dtype {
            DType::F32 => {
                self.read_raw(start, bytemuck::cast_slice_mut(out))?;
                if h.big_endian {
                    out.iter_mut().for_each(|v| *v = f32::from_bits(v.to_bits().swap_bytes()));
                }
            }
            DType::F16 | DType::BF16 => {
                let mut raw = vec![0u16; n];
                self.read_raw(start, bytemuck::cast_slice_mut(&mut raw))?;
                if h.big_endian {
                    raw.iter_mut().for_each(|v| *v = v.swap_bytes());
                }
                use half::slice::HalfFloatSliceExt;
                if h.dtype == DType::F16 {
                    bytemuck::cast_slice::<u16, f16>(&raw).convert_to_f32_slice(out);
                } else {
                    bytemuck::cast_slice::<u16, bf16>(&raw).convert_to_f32_slice(out);
                }
            }
            DType::F64 => {
                let mut raw = vec![0u64; n];
                self.read_raw(start, bytemuck::cast_slice_mut(&mut raw))?;
                for (o, r) in out.iter_mut().zip(&raw) {
                    // beyond f32's range becomes inf, refused below as non-finite
                    *o = f64::from_bits(if h.big_endian { r.swap_bytes() } else { *r }) as f32;
                }
            }
            other => bail!("{}: wrong dtype {}: expected float32, float16, bfloat16 or float64", self.name, other.numpy_name()),
        }
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            bail!("{}: non-finite value {} at index {}", self.name, out[i], fmt_index(start + i, &h.shape));
        }
        Ok(())
    }

    /// Elements `start..start + out.len()` of an integer (or bool) array as i64.
    pub fn read_i64(&self, start: usize, out: &mut [i64]) -> Result<()> {
        let h = &self.header;
        let size = h.dtype.size();
        let mut raw = vec![0u8; out.len() * size];
        if h.dtype.is_float() {
            bail!("{}: wrong dtype {}: a label map must have an integer dtype", self.name, h.dtype.numpy_name());
        }
        self.read_raw(start, &mut raw)?;
        for (i, (o, c)) in out.iter_mut().zip(raw.chunks_exact(size)).enumerate() {
            let mut b = [0u8; 8];
            b[..size].copy_from_slice(c);
            if h.big_endian {
                b[..size].reverse();
            }
            let u = u64::from_le_bytes(b);
            *o = match h.dtype {
                DType::Bool | DType::U8 | DType::U16 | DType::U32 => u as i64,
                DType::I8 => u as u8 as i8 as i64,
                DType::I16 => u as u16 as i16 as i64,
                DType::I32 => u as u32 as i32 as i64,
                DType::I64 => u as i64,
                DType::U64 if u > i64::MAX as u64 => {
                    bail!("{}: label {u} at index {} does not fit in int64", self.name, fmt_index(start + i, &h.shape))
                }
                _ => u as i64,
            };
        }
        Ok(())
    }

    /// Elements `start..start + out.len()` of an integer label array as u8: labels must lie in 0..=255.
    pub fn read_labels_u8(&self, start: usize, out: &mut [u8]) -> Result<()> {
        if self.header.dtype == DType::U8 {
            return self.read_raw(start, out);
        }
        let mut wide = vec![0i64; out.len()];
        self.read_i64(start, &mut wide)?;
        for (i, (o, &v)) in out.iter_mut().zip(&wide).enumerate() {
            if !(0..=255).contains(&v) {
                bail!("{}: label {v} at index {} is out of range for uint8 (0..=255)", self.name, fmt_index(start + i, &self.header.shape));
            }
            *o = v as u8;
        }
        Ok(())
    }

    /// Elements of a uint8 array (any other dtype is an error).
    pub fn read_u8(&self, start: usize, out: &mut [u8]) -> Result<()> {
        if self.header.dtype != DType::U8 {
            bail!("{}: wrong dtype {}: expected uint8", self.name, self.header.dtype.numpy_name());
        }
        self.read_raw(start, out)
    }

    /// Check that every label of the array lies in 0..=255, reading it in blocks.
    pub fn check_labels_u8(&self) -> Result<()> {
        if self.header.dtype == DType::U8 {
            return Ok(());
        }
        let mut buf = vec![0u8; 1 << 20];
        let len = self.header.len();
        for start in (0..len).step_by(buf.len()) {
            let n = (len - start).min(buf.len());
            self.read_labels_u8(start, &mut buf[..n])?;
        }
        Ok(())
    }
}

/// Read a whole float array as f32 (float16, bfloat16, float32, float64).
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let a = NpyArray::open(path)?;
    if !a.dtype().is_float() {
        bail!("{}: wrong dtype {}: expected float32 (or float16, bfloat16, float64)", a.name, a.dtype().numpy_name());
    }
    let mut data = vec![0f32; a.header.len()];
    a.read_f32(0, &mut data)?;
    Ok((data, a.header.shape))
}

/// The header of a `.npy` file (after checking its size against it).
pub fn read_header(path: &Path) -> Result<Header> {
    Ok(NpyArray::open(path)?.header)
}

/// Read a whole uint8 array.
pub fn read_u8(path: &Path) -> Result<(Vec<u8>, Vec<usize>)> {
    let a = NpyArray::open(path)?;
    let mut data = vec![0u8; a.header.len()];
    a.read_u8(0, &mut data)?;
    Ok((data, a.header.shape))
}

/// Read an integer label map of any integer dtype (or bool) as i64.
pub fn read_labels_i64(path: &Path) -> Result<(Vec<i64>, Vec<usize>)> {
    let a = NpyArray::open(path)?;
    let mut data = vec![0i64; a.header.len()];
    a.read_i64(0, &mut data)?;
    Ok((data, a.header.shape))
}

/// Read an integer label map (any integer dtype) as u32; negative or too large labels are errors.
pub fn read_labels(path: &Path) -> Result<(Vec<u32>, Vec<usize>)> {
    let (data, shape) = read_labels_i64(path)?;
    if let Some(i) = data.iter().position(|&v| v < 0 || v > u32::MAX as i64) {
        bail!("{}: label {} at index {} is out of range for uint32 (0..={})", path.display(), data[i], fmt_index(i, &shape), u32::MAX);
    }
    Ok((data.into_iter().map(|v| v as u32).collect(), shape))
}

/// [`read_labels`] (the metrics' label type).
pub fn read_labels_u32(path: &Path) -> Result<(Vec<u32>, Vec<usize>)> {
    read_labels(path)
}

/// Read an integer label map (any integer dtype) as u8; labels outside 0..=255 are errors.
pub fn read_labels_u8(path: &Path) -> Result<(Vec<u8>, Vec<usize>)> {
    let a = NpyArray::open(path)?;
    let mut data = vec![0u8; a.header.len()];
    a.read_labels_u8(0, &mut data)?;
    Ok((data, a.header.shape))
}

/// Check the rank of an array read from `name`; `what` describes the expected layout.
pub fn expect_rank(name: impl std::fmt::Display, shape: &[usize], ranks: &[usize], what: &str) -> Result<()> {
    if !ranks.contains(&shape.len()) {
        bail!("{name}: wrong rank {} (shape {}): expected {what}", shape.len(), fmt_shape(shape));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// writing

/// A version 1.0 (or 2.0 if needed) header padded so the data starts at a multiple of 64.
pub fn encode_header(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let shape_txt = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", dtype.descr_le(), shape_txt);
    let (version, prefix) = if dict.len() + 11 <= u16::MAX as usize { (1u8, 10usize) } else { (2u8, 12usize) };
    let total = (prefix + dict.len() + 1).div_ceil(64) * 64;
    let hlen = total - prefix;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        out.extend_from_slice(&(hlen as u16).to_le_bytes());
    } else {
        out.extend_from_slice(&(hlen as u32).to_le_bytes());
    }
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

fn tmp_path(path: &Path) -> Result<PathBuf> {
    let name = path.file_name().ok_or_else(|| anyhow!("{}: not a file path", path.display()))?.to_string_lossy().into_owned();
    Ok(path.with_file_name(format!("{name}.tmp")))
}

/// Sync a directory so that a rename inside it survives a crash (a no-op where directories
/// cannot be opened, i.e. Windows).
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write `write`'s output to `<path>.tmp`, sync, rename over `path` and sync the directory.
/// On any error the temporary file is removed and `path` is left untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    write_atomic_with(path, true, write)
}

/// [`write_atomic`]; `durable` = false skips the syncs (the rename still makes the file appear
/// whole or not at all to any reader, and to a process killed at any moment).
pub fn write_atomic_with(path: &Path, durable: bool, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let tmp = tmp_path(path)?;
    let result = (|| -> Result<()> {
        let f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        write(&mut w).with_context(|| format!("{}: write failed", tmp.display()))?;
        let f = w.into_inner().map_err(|e| anyhow!("{}: write failed: {}", tmp.display(), e.error()))?;
        if durable {
            f.sync_all().with_context(|| format!("{}: sync failed", tmp.display()))?;
        }
        drop(f);
        std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot rename to {}", tmp.display(), path.display()))?;
        if durable {
            sync_dir(path.parent().unwrap_or(Path::new(".")));
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn check_len(path: &Path, shape: &[usize], len: usize) -> Result<()> {
    let n: usize = shape.iter().product();
    if n != len {
        bail!("{}: cannot write: shape {} has {n} elements but the data has {len}", path.display(), fmt_shape(shape));
    }
    Ok(())
}

/// Little-endian bytes of `data` converted to `dtype`.
fn encode<T: Copy + Into<f64>>(dtype: DType, data: &[T], out: &mut Vec<u8>) {
    for &v in data {
        let x: f64 = v.into();
        match dtype {
            DType::F16 => out.extend_from_slice(&f16::from_f64(x).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&bf16::from_f64(x).to_le_bytes()),
            DType::F32 => out.extend_from_slice(&(x as f32).to_le_bytes()),
            DType::F64 => out.extend_from_slice(&x.to_le_bytes()),
            DType::Bool | DType::U8 => out.push(x as u8),
            DType::I8 => out.push(x as i8 as u8),
            DType::U16 => out.extend_from_slice(&(x as u16).to_le_bytes()),
            DType::I16 => out.extend_from_slice(&(x as i16).to_le_bytes()),
            DType::U32 => out.extend_from_slice(&(x as u32).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(x as i32).to_le_bytes()),
            DType::U64 => out.extend_from_slice(&(x as u64).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&(x as i64).to_le_bytes()),
        }
    }
}

/// Write an array atomically, converting the values to `dtype`.
pub fn write<T: Copy + Into<f64>>(path: &Path, dtype: DType, data: &[T], shape: &[usize]) -> Result<()> {
    check_len(path, shape, data.len())?;
    let header = encode_header(dtype, shape);
    write_atomic(path, |w| {
        w.write_all(&header)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in data.chunks(8192) {
            buf.clear();
            encode(dtype, chunk, &mut buf);
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Write a float32 array atomically. Non-finite values are refused (they would make the
/// file unreadable).
pub fn write_f32(path: &Path, data: &[f32], shape: &[usize]) -> Result<()> {
    check_len(path, shape, data.len())?;
    if let Some(i) = data.iter().position(|v| !v.is_finite()) {
        bail!("{}: cannot write non-finite value {} at index {}", path.display(), data[i], fmt_index(i, shape));
    }
    if cfg!(target_endian = "little") {
        let header = encode_header(DType::F32, shape);
        return write_atomic(path, |w| {
            w.write_all(&header)?;
            w.write_all(bytemuck::cast_slice(data))
        });
    }
    write(path, DType::F32, data, shape)
}

/// Write a uint8 array atomically.
pub fn write_u8(path: &Path, data: &[u8], shape: &[usize]) -> Result<()> {
    check_len(path, shape, data.len())?;
    let header = encode_header(DType::U8, shape);
    write_atomic(path, |w| {
        w.write_all(&header)?;
        w.write_all(data)
    })
}

/// Write a uint32 label map atomically.
pub fn write_u32(path: &Path, data: &[u32], shape: &[usize]) -> Result<()> {
    write(path, DType::U32, data, shape)
}

/// Write an int64 label map atomically (values must fit in f64's 53 bits, true of labels).
pub fn write_i64(path: &Path, data: &[i64], shape: &[usize]) -> Result<()> {
    let wide: Vec<f64> = data.iter().map(|&v| v as f64).collect();
    write(path, DType::I64, &wide, shape)
}

/// Write float32 arrays as an uncompressed `.npz` (what `np.savez` writes; `np.load` reads it),
/// atomically.
pub fn write_npz(path: &Path, arrays: &[(&str, &[usize], &[f32])]) -> Result<()> {
    use zip::write::SimpleFileOptions;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    for (name, shape, data) in arrays {
        check_len(path, shape, data.len())?;
        zip.start_file(format!("{name}.npy"), opts).with_context(|| format!("{}: {name}", path.display()))?;
        zip.write_all(&encode_header(DType::F32, shape))?;
        let mut buf = Vec::with_capacity(data.len() * 4);
        encode(DType::F32, data, &mut buf);
        zip.write_all(&buf)?;
    }
    let bytes = zip.finish().with_context(|| format!("{}: cannot finish the archive", path.display()))?.into_inner();
    write_atomic(path, |w| w.write_all(&bytes))
}

/// Read a float32 label map or array from an `.npz` written by [`write_npz`] (tests, tools).
pub fn read_npz_f32(path: &Path, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut zip = zip::ZipArchive::new(&file).with_context(|| format!("{}: not an .npz archive", path.display()))?;
    let entry = zip.by_name(&format!("{name}.npy")).with_context(|| format!("{}: no array '{name}'", path.display()))?;
    let start = entry.data_start().context("no data offset")?;
    let a = NpyArray::at(path, format!("{}:{name}", path.display()), Arc::new(file.try_clone()?), start, start + entry.size())?;
    let mut data = vec![0f32; a.header.len()];
    a.read_f32(0, &mut data)?;
    Ok((data, a.header.shape))
}

/// An array written in pieces, for files larger than memory: the header is written first for
/// the final shape, then [`append`](Self::append) adds rows; [`finish`](Self::finish) checks
/// the count, syncs and renames. Dropped unfinished, it removes its temporary file.
pub struct NpyWriter {
    path: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    dtype: DType,
    want: usize,
    written: usize,
    buf: Vec<u8>,
}

impl NpyWriter {
    pub fn create(path: &Path, dtype: DType, shape: &[usize]) -> Result<NpyWriter> {
        let tmp = tmp_path(path)?;
        let f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut out = BufWriter::with_capacity(1 << 20, f);
        out.write_all(&encode_header(dtype, shape)).with_context(|| format!("{}: write failed", tmp.display()))?;
        let want = shape.iter().product();
        Ok(NpyWriter { path: path.to_path_buf(), tmp, out: Some(out), dtype, want, written: 0, buf: Vec::new() })
    }

    pub fn append<T: Copy + Into<f64>>(&mut self, data: &[T]) -> Result<()> {
        if self.written + data.len() > self.want {
            bail!("{}: more values than the shape holds", self.path.display());
        }
        self.buf.clear();
        encode(self.dtype, data, &mut self.buf);
        let out = self.out.as_mut().expect("writer open");
        out.write_all(&self.buf).with_context(|| format!("{}: write failed", self.tmp.display()))?;
        self.written += data.len();
        Ok(())
    }

    /// [`append`](Self::append) for bytes into a uint8 array.
    pub fn append_u8(&mut self, data: &[u8]) -> Result<()> {
        if self.dtype != DType::U8 || self.written + data.len() > self.want {
            return self.append(data);
        }
        let out = self.out.as_mut().expect("writer open");
        out.write_all(data).with_context(|| format!("{}: write failed", self.tmp.display()))?;
        self.written += data.len();
        Ok(())
    }

    /// [`append`](Self::append) for f32 data, converted in bulk (SIMD where half has it).
    pub fn append_f32(&mut self, data: &[f32]) -> Result<()> {
        use half::slice::HalfFloatSliceExt;
        let bytes: Vec<u8> = match self.dtype {
            DType::F32 => bytemuck::cast_slice(data).to_vec(),
            DType::F16 => {
                let mut h = vec![f16::ZERO; data.len()];
                h.convert_from_f32_slice(data);
                bytemuck::cast_slice(&h).to_vec()
            }
            DType::BF16 => {
                let mut h = vec![bf16::ZERO; data.len()];
                h.convert_from_f32_slice(data);
                bytemuck::cast_slice(&h).to_vec()
            }
            _ => return self.append(data),
        };
        if self.written + data.len() > self.want || cfg!(target_endian = "big") {
            return self.append(data);
        }
        let out = self.out.as_mut().expect("writer open");
        out.write_all(&bytes).with_context(|| format!("{}: write failed", self.tmp.display()))?;
        self.written += data.len();
        Ok(())
    }

    pub fn finish(mut self) -> Result<()> {
        if self.written != self.want {
            bail!("{}: {} of {} values written", self.path.display(), self.written, self.want);
        }
        let out = self.out.take().expect("writer open");
        let f = out.into_inner().map_err(|e| anyhow!("{}: write failed: {}", self.tmp.display(), e.error()))?;
        f.sync_all().with_context(|| format!("{}: sync failed", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.path).with_context(|| format!("{}: cannot rename", self.tmp.display()))?;
        Ok(())
    }
}

impl Drop for NpyWriter {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_alignment() {
        let dir = tempfile::tempdir().unwrap();
        for (dtype, shape) in [(DType::F32, vec![3usize]), (DType::F16, vec![2, 3, 4]), (DType::BF16, vec![]), (DType::U8, vec![1000, 256, 768])] {
            let h = encode_header(dtype, &shape);
            assert_eq!(h.len() % 64, 0);
            let p = dir.path().join("h.npy");
            std::fs::write(&p, &h).unwrap();
            let f = File::open(&p).unwrap();
            let parsed = parse_header(&f, 0, h.len() as u64).unwrap();
            assert_eq!((parsed.shape, parsed.dtype, parsed.data_offset), (shape, dtype, h.len() as u64));
        }
    }

    #[test]
    fn unravel_c_order() {
        assert_eq!(unravel(0, &[2, 3, 4]), vec![0, 0, 0]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(unravel(13, &[2, 3, 4]), vec![1, 0, 1]);
    }
}

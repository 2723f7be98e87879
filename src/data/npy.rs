//! Strict `.npy` reading and atomic `.npy` writing.
//!
//! Only what slotforge needs: C-order arrays of `f32` (and `f64`, converted on read),
//! `u8`, and integer label maps (any integer dtype or bool, read to `i64` / `u32` / `u8`).
//! Reads return `(data, shape)` (C order); writes take `(path, data, shape)`.
//! Every error names the file and the problem: not an `.npy` file, a malformed header,
//! an unsupported dtype, truncated or trailing data, non-finite float values (with the
//! index of the first one), values out of range for the requested label type.
//!
//! Writes go to `<name>.tmp` in the target's directory, are flushed and synced, then
//! renamed over the target; on any error the temporary file is removed, so a reader
//! never sees a half-written array.

use anyhow::{anyhow, bail, Context, Result};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Element type of an `.npy` file, as far as slotforge understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
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
            DType::U16 | DType::I16 => 2,
            DType::F32 | DType::U32 | DType::I32 => 4,
            DType::F64 | DType::U64 | DType::I64 => 8,
        }
    }
    pub fn is_integer(self) -> bool {
        !matches!(self, DType::F32 | DType::F64)
    }
    /// numpy's name for the type (`float32`, `uint8`, ...), for error messages.
    pub fn numpy_name(self) -> &'static str {
        match self {
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
    fn descr_le(self) -> &'static str {
        match self {
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
}

/// A parsed `.npy` header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub dtype: DType,
    /// true if the data is big-endian (multi-byte types only)
    pub big_endian: bool,
    pub shape: Vec<usize>,
    /// offset of the first data byte in the file
    pub data_offset: usize,
}

impl Header {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
// header parsing

fn parse_descr(descr: &str) -> Result<(DType, bool)> {
    let (order, code) = match descr.chars().next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, &descr[1..]),
        _ => ('=', descr),
    };
    let dtype = match code {
        "f4" => DType::F32,
        "f8" => DType::F64,
        "b1" => DType::Bool,
        "u1" => DType::U8,
        "i1" => DType::I8,
        "u2" => DType::U16,
        "i2" => DType::I16,
        "u4" => DType::U32,
        "i4" => DType::I32,
        "u8" => DType::U64,
        "i8" => DType::I64,
        _ => bail!("unsupported dtype '{descr}' (supported: float32, float64, bool and integer types)"),
    };
    let big = match order {
        '>' => true,
        '<' | '|' => false,
        _ => cfg!(target_endian = "big"),
    };
    Ok((dtype, big && dtype.size() > 1))
}

/// Minimal parser for the Python dict literal of an `.npy` header.
struct DictParser<'a> {
    s: &'a [u8],
    pos: usize,
}

enum Value {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
}

impl<'a> DictParser<'a> {
    fn ws(&mut self) {
        while self.pos < self.s.len() && (self.s[self.pos] as char).is_ascii_whitespace() {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }
    fn expect(&mut self, c: u8) -> Result<()> {
        match self.peek() {
            Some(x) if x == c => {
                self.pos += 1;
                Ok(())
            }
            Some(x) => bail!("expected '{}' at header byte {}, found '{}'", c as char, self.pos, x as char),
            None => bail!("expected '{}' but the header ended", c as char),
        }
    }
    fn string(&mut self) -> Result<String> {
        let q = self.peek().ok_or_else(|| anyhow!("header ended where a string was expected"))?;
        if q != b'\'' && q != b'"' {
            bail!("expected a quoted string at header byte {}", self.pos);
        }
        self.pos += 1;
        let start = self.pos;
        while self.pos < self.s.len() && self.s[self.pos] != q {
            self.pos += 1;
        }
        if self.pos >= self.s.len() {
            bail!("unterminated string in header");
        }
        let out = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
        self.pos += 1;
        Ok(out)
    }
    fn value(&mut self) -> Result<Value> {
        match self.peek() {
            Some(b'\'') | Some(b'"') => Ok(Value::Str(self.string()?)),
            Some(b'T') if self.s[self.pos..].starts_with(b"True") => {
                self.pos += 4;
                Ok(Value::Bool(true))
            }
            Some(b'F') if self.s[self.pos..].starts_with(b"False") => {
                self.pos += 5;
                Ok(Value::Bool(false))
            }
            Some(b'(') => {
                self.pos += 1;
                let mut dims = Vec::new();
                loop {
                    match self.peek() {
                        Some(b')') => {
                            self.pos += 1;
                            break;
                        }
                        Some(c) if c.is_ascii_digit() => {
                            let start = self.pos;
                            while self.pos < self.s.len() && self.s[self.pos].is_ascii_digit() {
                                self.pos += 1;
                            }
                            let txt = std::str::from_utf8(&self.s[start..self.pos]).unwrap();
                            // numpy may write e.g. "3L" on Python 2
                            if self.s.get(self.pos) == Some(&b'L') {
                                self.pos += 1;
                            }
                            dims.push(
                                txt.parse::<usize>().map_err(|_| anyhow!("shape dimension '{txt}' is too large"))?,
                            );
                            match self.peek() {
                                Some(b',') => self.pos += 1,
                                Some(b')') => {}
                                _ => bail!("malformed shape tuple in header"),
                            }
                        }
                        Some(c) => bail!("unexpected '{}' in shape tuple", c as char),
                        None => bail!("header ended inside the shape tuple"),
                    }
                }
                Ok(Value::Tuple(dims))
            }
            Some(c) => bail!("unexpected '{}' at header byte {}", c as char, self.pos),
            None => bail!("header ended where a value was expected"),
        }
    }
}

fn parse_dict(text: &[u8]) -> Result<(String, bool, Vec<usize>)> {
    let mut p = DictParser { s: text, pos: 0 };
    p.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        match p.peek() {
            Some(b'}') => {
                p.pos += 1;
                break;
            }
            Some(_) => {}
            None => bail!("header dict is not closed"),
        }
        let key = p.string()?;
        p.expect(b':')?;
        let val = p.value()?;
        match (key.as_str(), val) {
            ("descr", Value::Str(s)) => descr = Some(s),
            ("fortran_order", Value::Bool(b)) => fortran = Some(b),
            ("shape", Value::Tuple(t)) => shape = Some(t),
            ("descr", _) => bail!("'descr' is not a simple dtype string (structured arrays are not supported)"),
            ("fortran_order", _) => bail!("'fortran_order' is not True/False"),
            ("shape", _) => bail!("'shape' is not a tuple of integers"),
            (k, _) => bail!("unexpected header key '{k}'"),
        }
        match p.peek() {
            Some(b',') => p.pos += 1,
            Some(b'}') => {}
            _ => bail!("expected ',' or '}}' in header dict"),
        }
    }
    if p.s[p.pos..].iter().any(|c| !c.is_ascii_whitespace()) {
        bail!("unexpected bytes after the header dict");
    }
    Ok((
        descr.ok_or_else(|| anyhow!("header has no 'descr'"))?,
        fortran.ok_or_else(|| anyhow!("header has no 'fortran_order'"))?,
        shape.ok_or_else(|| anyhow!("header has no 'shape'"))?,
    ))
}

/// Parse the header from the first bytes of a file (must contain the whole header).
fn parse_header_bytes(b: &[u8]) -> Result<Header> {
    if b.is_empty() {
        bail!("empty file (0 bytes): not an .npy file");
    }
    if b.len() >= 6 && &b[..6] == MAGIC && b.len() < 10 {
        bail!("truncated header: the file ends after {} bytes", b.len());
    }
    if b.len() < 10 || &b[..6] != MAGIC {
        bail!("not an .npy file (missing the \\x93NUMPY magic)");
    }
    let (major, minor) = (b[6], b[7]);
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => {
            if b.len() < 12 {
                bail!("truncated header");
            }
            (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12)
        }
        _ => bail!("unsupported .npy format version {major}.{minor}"),
    };
    if b.len() < start + hlen {
        bail!("truncated header: it claims {hlen} bytes but the file has {}", b.len().saturating_sub(start));
    }
    let text = &b[start..start + hlen];
    let (descr, fortran, shape) = parse_dict(text).context("malformed .npy header")?;
    let (dtype, big_endian) = parse_descr(&descr)?;
    if fortran && shape.len() > 1 {
        bail!("fortran_order arrays are not supported (save with np.ascontiguousarray)");
    }
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_mul(dtype.size()))
        .ok_or_else(|| anyhow!("shape {} is too large", fmt_shape(&shape)))?;
    Ok(Header { dtype, big_endian, shape, data_offset: start + hlen })
}

/// Read and parse the header of an `.npy` file.
pub fn read_header(path: &Path) -> Result<Header> {
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut first = [0u8; 12];
    let n = read_up_to(&mut f, &mut first).with_context(|| format!("{}: read failed", path.display()))?;
    let mut buf = first[..n].to_vec();
    if n >= 10 && &buf[..6] == MAGIC {
        let (hlen, start) = if buf[6] == 1 {
            (u16::from_le_bytes([buf[8], buf[9]]) as usize, 10)
        } else if n >= 12 {
            (u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize, 12)
        } else {
            (0, 10)
        };
        let want = (start + hlen).min(1 << 24);
        if want > buf.len() {
            let mut rest = vec![0u8; want - buf.len()];
            let got = read_up_to(&mut f, &mut rest).with_context(|| format!("{}: read failed", path.display()))?;
            buf.extend_from_slice(&rest[..got]);
        }
    }
    parse_header_bytes(&buf).with_context(|| format!("{}", path.display()))
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Open `path`, parse its header, check the file size exactly against the header, and
/// return the file positioned at the first data byte.
fn open_checked(path: &Path) -> Result<(Header, File)> {
    let header = read_header(path)?;
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let file_len = f.metadata().with_context(|| format!("{}: cannot stat", path.display()))?.len() as usize;
    let want = header.len() * header.dtype.size();
    let have = file_len.saturating_sub(header.data_offset);
    if have < want {
        bail!(
            "{}: truncated data: shape {} of {} needs {want} bytes, the file has {have}",
            path.display(),
            fmt_shape(&header.shape),
            header.dtype.numpy_name()
        );
    }
    if have > want {
        bail!(
            "{}: {} unexpected trailing bytes after the data of shape {} ({})",
            path.display(),
            have - want,
            fmt_shape(&header.shape),
            header.dtype.numpy_name()
        );
    }
    let mut skip = vec![0u8; header.data_offset];
    f.read_exact(&mut skip).with_context(|| format!("{}: read failed", path.display()))?;
    Ok((header, f))
}

fn read_exact_into(path: &Path, f: &mut File, buf: &mut [u8]) -> Result<()> {
    let got = read_up_to(f, buf).with_context(|| format!("{}: read failed", path.display()))?;
    if got < buf.len() {
        bail!("{}: truncated data: expected {} bytes, read {got}", path.display(), buf.len());
    }
    Ok(())
}

/// Read the header and the raw data bytes, checking the file size exactly.
fn read_raw(path: &Path) -> Result<(Header, Vec<u8>)> {
    let (header, mut f) = open_checked(path)?;
    let mut data = vec![0u8; header.len() * header.dtype.size()];
    read_exact_into(path, &mut f, &mut data)?;
    Ok((header, data))
}

macro_rules! decode {
    ($bytes:expr, $big:expr, $t:ty, $n:expr) => {{
        let n = $n;
        $bytes
            .chunks_exact(n)
            .map(|c| {
                let a: [u8; $n] = c.try_into().unwrap();
                if $big {
                    <$t>::from_be_bytes(a)
                } else {
                    <$t>::from_le_bytes(a)
                }
            })
            .collect::<Vec<$t>>()
    }};
}

fn check_finite<T: Copy + Into<f64>>(path: &Path, shape: &[usize], data: &[T]) -> Result<()> {
    if let Some(i) = data.iter().position(|&v| !v.into().is_finite()) {
        let v: f64 = data[i].into();
        bail!("{}: non-finite value {v} at index {}", path.display(), fmt_index(i, shape));
    }
    Ok(())
}

/// Read a float array (float32, or float64 converted to f32). Rejects integer dtypes and
/// any NaN/Inf (also values that overflow f32 on conversion), naming the first bad index.
pub fn read_f32(path: &Path) -> Result<(Vec<f32>, Vec<usize>)> {
    let h = read_header(path)?;
    if h.dtype == DType::F32 && !h.big_endian && cfg!(target_endian = "little") {
        // fast path: read straight into the output buffer (features can be ~1 GB)
        let (h, mut f) = open_checked(path)?;
        let mut data = vec![0f32; h.len()];
        read_exact_into(path, &mut f, bytemuck::cast_slice_mut(&mut data))?;
        check_finite(path, &h.shape, &data)?;
        return Ok((data, h.shape));
    }
    let (h, bytes) = read_raw(path)?;
    let data = match h.dtype {
        DType::F32 => decode!(bytes, h.big_endian, f32, 4),
        DType::F64 => {
            let d = decode!(bytes, h.big_endian, f64, 8);
            check_finite(path, &h.shape, &d)?;
            d.into_iter().map(|v| v as f32).collect()
        }
        other => bail!("{}: wrong dtype {}: expected float32 (or float64)", path.display(), other.numpy_name()),
    };
    check_finite(path, &h.shape, &data)?;
    Ok((data, h.shape))
}

/// Read a uint8 array. Any other dtype is an error.
pub fn read_u8(path: &Path) -> Result<(Vec<u8>, Vec<usize>)> {
    let (h, bytes) = read_raw(path)?;
    if h.dtype != DType::U8 {
        bail!("{}: wrong dtype {}: expected uint8", path.display(), h.dtype.numpy_name());
    }
    Ok((bytes, h.shape))
}

/// Read an integer label map of any integer dtype (or bool) as i64.
/// uint64 values above i64::MAX are an error.
pub fn read_labels_i64(path: &Path) -> Result<(Vec<i64>, Vec<usize>)> {
    let (h, bytes) = read_raw(path)?;
    let be = h.big_endian;
    let data: Vec<i64> = match h.dtype {
        DType::Bool | DType::U8 => bytes.iter().map(|&b| b as i64).collect(),
        DType::I8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
        DType::U16 => decode!(bytes, be, u16, 2).into_iter().map(i64::from).collect(),
        DType::I16 => decode!(bytes, be, i16, 2).into_iter().map(i64::from).collect(),
        DType::U32 => decode!(bytes, be, u32, 4).into_iter().map(i64::from).collect(),
        DType::I32 => decode!(bytes, be, i32, 4).into_iter().map(i64::from).collect(),
        DType::I64 => decode!(bytes, be, i64, 8),
        DType::U64 => {
            let d = decode!(bytes, be, u64, 8);
            if let Some(i) = d.iter().position(|&v| v > i64::MAX as u64) {
                bail!("{}: label {} at index {} does not fit in int64", path.display(), d[i], fmt_index(i, &h.shape));
            }
            d.into_iter().map(|v| v as i64).collect()
        }
        DType::F32 | DType::F64 => {
            bail!("{}: wrong dtype {}: a label map must have an integer dtype", path.display(), h.dtype.numpy_name())
        }
    };
    Ok((data, h.shape))
}

fn labels_in_range(path: &Path, a: (Vec<i64>, Vec<usize>), max: i64, what: &str) -> Result<(Vec<i64>, Vec<usize>)> {
    if let Some(i) = a.0.iter().position(|&v| v < 0 || v > max) {
        bail!(
            "{}: label {} at index {} is out of range for {what} (0..={max})",
            path.display(),
            a.0[i],
            fmt_index(i, &a.1)
        );
    }
    Ok(a)
}

/// Read an integer label map (any integer dtype) as u32; negative or too large labels are errors.
pub fn read_labels_u32(path: &Path) -> Result<(Vec<u32>, Vec<usize>)> {
    let (data, shape) = labels_in_range(path, read_labels_i64(path)?, u32::MAX as i64, "uint32")?;
    Ok((data.into_iter().map(|v| v as u32).collect(), shape))
}

/// Same as [`read_labels_u32`]: the label type the metrics take.
pub fn read_labels(path: &Path) -> Result<(Vec<u32>, Vec<usize>)> {
    read_labels_u32(path)
}

/// Read an integer label map (any integer dtype) as u8; labels outside 0..=255 are errors.
pub fn read_labels_u8(path: &Path) -> Result<(Vec<u8>, Vec<usize>)> {
    let (data, shape) = labels_in_range(path, read_labels_i64(path)?, 255, "uint8")?;
    Ok((data.into_iter().map(|v| v as u8).collect(), shape))
}

/// Check the rank of an array read from `path`; `what` describes the expected layout.
pub fn expect_rank(path: &Path, shape: &[usize], ranks: &[usize], what: &str) -> Result<()> {
    if !ranks.contains(&shape.len()) {
        bail!("{}: wrong rank {} (shape {}): expected {what}", path.display(), shape.len(), fmt_shape(shape));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// writing

/// Build a version 1.0 (or 2.0 if needed) header padded so the data starts at a multiple of 64.
pub fn encode_header(dtype: DType, shape: &[usize]) -> Vec<u8> {
    let shape_txt = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let dict = format!("{{'descr': '{}', 'fortran_order': False, 'shape': {}, }}", dtype.descr_le(), shape_txt);
    for (version, prefix) in [(1u8, 10usize), (2u8, 12usize)] {
        let unpadded = prefix + dict.len() + 1; // + '\n'
        let total = unpadded.div_ceil(64) * 64;
        let hlen = total - prefix;
        if version == 1 && hlen > u16::MAX as usize {
            continue;
        }
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(MAGIC);
        out.push(version);
        out.push(0);
        if version == 1 {
            out.extend_from_slice(&(hlen as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&(hlen as u32).to_le_bytes());
        }
        out.extend_from_slice(dict.as_bytes());
        out.resize(total - 1, b' ');
        out.push(b'\n');
        return out;
    }
    unreachable!()
}

fn tmp_path(path: &Path) -> Result<PathBuf> {
    let name =
        path.file_name().ok_or_else(|| anyhow!("{}: not a file path", path.display()))?.to_string_lossy().into_owned();
    Ok(path.with_file_name(format!("{name}.tmp")))
}

/// Write `bytes_fn`'s output to `<path>.tmp`, sync, and rename over `path`.
/// On any error the temporary file is removed and `path` is left untouched.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let tmp = tmp_path(path)?;
    let result = (|| -> Result<()> {
        let f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        write(&mut w).with_context(|| format!("{}: write failed", tmp.display()))?;
        let f = w.into_inner().map_err(|e| anyhow!("{}: write failed: {}", tmp.display(), e.error()))?;
        f.sync_all().with_context(|| format!("{}: sync failed", tmp.display()))?;
        drop(f);
        std::fs::rename(&tmp, path)
            .with_context(|| format!("{}: cannot rename to {}", tmp.display(), path.display()))?;
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

fn write_le<T: Copy>(
    path: &Path,
    dtype: DType,
    shape: &[usize],
    data: &[T],
    to_le: impl Fn(&T, &mut Vec<u8>),
) -> Result<()> {
    check_len(path, shape, data.len())?;
    let header = encode_header(dtype, shape);
    write_atomic(path, |w| {
        w.write_all(&header)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for chunk in data.chunks(8192) {
            buf.clear();
            for v in chunk {
                to_le(v, &mut buf);
            }
            w.write_all(&buf)?;
        }
        Ok(())
    })
}

/// Write a float32 array atomically. Non-finite values are refused (they would make the
/// file unreadable by [`read_f32`]).
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
    write_le(path, DType::F32, shape, data, |v, b| b.extend_from_slice(&v.to_le_bytes()))
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
    write_le(path, DType::U32, shape, data, |v, b| b.extend_from_slice(&v.to_le_bytes()))
}

/// Write an int64 label map atomically.
pub fn write_i64(path: &Path, data: &[i64], shape: &[usize]) -> Result<()> {
    write_le(path, DType::I64, shape, data, |v, b| b.extend_from_slice(&v.to_le_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_alignment() {
        for shape in [vec![3usize], vec![2, 3, 4], vec![], vec![1000, 256, 768]] {
            let h = encode_header(DType::F32, &shape);
            assert_eq!(h.len() % 64, 0);
            let p = parse_header_bytes(&h).unwrap();
            assert_eq!(p.shape, shape);
            assert_eq!(p.dtype, DType::F32);
            assert_eq!(p.data_offset, h.len());
        }
    }

    #[test]
    fn unravel_c_order() {
        assert_eq!(unravel(0, &[2, 3, 4]), vec![0, 0, 0]);
        assert_eq!(unravel(23, &[2, 3, 4]), vec![1, 2, 3]);
        assert_eq!(unravel(13, &[2, 3, 4]), vec![1, 0, 1]);
    }
}

"""A small .npy reader and writer that also handles bfloat16.

numpy has no bfloat16. `ml_dtypes.bfloat16` arrays saved with `np.save` get the header descr
`'<V2'` (a 2-byte void: numpy 2.4 with ml_dtypes 0.7 writes it silently, and `np.load` gives
back raw `|V2` bytes, the bfloat16 lost). So a 2-byte void array (`'<V2'` or `'|V2'`), or a
descr spelled `'bfloat16'` / `'<bf16'` by hand, is read here as little-endian bfloat16: the
upper 16 bits of a float32.
"""

from __future__ import annotations

import ast
import io
import os
import struct
from typing import BinaryIO, Tuple, Union

import numpy as np

BF16_DESCRS = ("<V2", "|V2", "V2", "bfloat16", "<bfloat16", "bf16", "<bf16")
MAGIC = b"\x93NUMPY"


def _read_header(f: BinaryIO, name: str) -> Tuple[str, bool, Tuple[int, ...]]:
    magic = f.read(6)
    if magic != MAGIC:
        raise ValueError(f"{name}: not a .npy file (bad magic)")
    major, _minor = f.read(2)
    if major == 1:
        (hlen,) = struct.unpack("<H", f.read(2))
        enc = "latin1"
    elif major in (2, 3):
        (hlen,) = struct.unpack("<I", f.read(4))
        enc = "latin1" if major == 2 else "utf8"
    else:
        raise ValueError(f"{name}: unsupported .npy version {major}")
    header = ast.literal_eval(f.read(hlen).decode(enc))
    descr = header["descr"]
    if not isinstance(descr, str):
        raise ValueError(f"{name}: structured arrays are not supported (descr {descr!r})")
    return descr, bool(header.get("fortran_order", False)), tuple(header["shape"])


def bf16_bits_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly."""
    return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)


def f32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounding to nearest even (as ml_dtypes)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    u = x.view(np.uint32)
    with np.errstate(over="ignore"):
        rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((u[nan] >> np.uint32(16)) | np.uint32(0x40)).astype(np.uint16)
    return rounded


def read_npy(path: Union[str, os.PathLike, BinaryIO], name: str = None) -> np.ndarray:
    """An array from a .npy file (path or open binary file). bfloat16 (see the module doc)
    comes back as float32; everything else as numpy reads it."""
    if hasattr(path, "read"):
        f, close = path, False
    else:
        f, close = open(path, "rb"), True
    name = name or str(getattr(path, "name", path))
    try:
        descr, fortran, shape = _read_header(f, name)
        if descr in BF16_DESCRS:
            count = int(np.prod(shape, dtype=np.int64))
            raw = f.read(2 * count)
            if len(raw) != 2 * count:
                raise ValueError(f"{name}: truncated: {len(raw)} data bytes, shape {shape} needs {2 * count}")
            bits = np.frombuffer(raw, dtype="<u2")
            out = bf16_bits_to_f32(bits)
            order = "F" if fortran else "C"
            return out.reshape(shape, order=order)
        f.seek(0)
        return np.load(f, allow_pickle=False)
    finally:
        if close:
            f.close()


def _header(descr: str, shape: Tuple[int, ...]) -> bytes:
    shape_txt = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(str(s) for s in shape) + ")"
    text = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape_txt)
    # pad so that magic + version + length + header + newline is a multiple of 64
    total = len(MAGIC) + 2 + 2 + len(text) + 1
    text += " " * ((64 - total % 64) % 64) + "\n"
    return MAGIC + b"\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def write_npy(path: Union[str, os.PathLike], array: np.ndarray, dtype: str = None) -> None:
    """Write `array` as .npy. `dtype="bfloat16"` writes bfloat16 with the descr `'<V2'` that
    numpy + ml_dtypes write (from float values, rounded to nearest even); otherwise
    `np.save` of the array cast to `dtype` (if given)."""
    if dtype in ("bfloat16", "bf16"):
        bits = f32_to_bf16_bits(np.asarray(array, dtype=np.float32))
        with open(path, "wb") as f:
            f.write(_header("<V2", bits.shape))
            f.write(bits.astype("<u2").tobytes())
        return
    arr = np.asarray(array) if dtype is None else np.asarray(array).astype(dtype)
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(arr), allow_pickle=False)
    with open(path, "wb") as f:
        f.write(buf.getvalue())

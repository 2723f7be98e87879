"""A minimal PNG decoder and encoder (zlib from the standard library, numpy for the pixels), so
image folders read without Pillow. JPEG needs Pillow (`pip install pillow`)."""

from __future__ import annotations

import os
import struct
import zlib
from typing import Union

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(data: bytes, height: int, stride: int, bpp: int, name: str) -> np.ndarray:
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    pos = 0
    for y in range(height):
        ftype = data[pos]
        row = np.frombuffer(data, dtype=np.uint8, count=stride, offset=pos + 1).copy()
        pos += 1 + stride
        if ftype == 0:
            pass
        elif ftype == 1:  # Sub: running sum per byte lane, mod 256
            lanes = np.zeros(((stride + bpp - 1) // bpp) * bpp, dtype=np.uint8)
            lanes[:stride] = row
            row = np.cumsum(lanes.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)[:stride]
        elif ftype == 2:  # Up
            row = row + prev
        elif ftype in (3, 4):  # Average, Paeth: sequential
            r, p = row.tolist(), prev.tolist()
            for i in range(stride):
                a = r[i - bpp] if i >= bpp else 0
                if ftype == 3:
                    r[i] = (r[i] + ((a + p[i]) >> 1)) & 0xFF
                else:
                    c = p[i - bpp] if i >= bpp else 0
                    r[i] = (r[i] + _paeth(a, p[i], c)) & 0xFF
            row = np.array(r, dtype=np.uint8)
        else:
            raise ValueError(f"{name}: bad PNG filter type {ftype}")
        out[y] = row
        prev = row
    return out


def read_png(path: Union[str, os.PathLike], labels: bool = False) -> np.ndarray:
    """A PNG as uint8. `labels=False`: RGB [H, W, 3] (gray replicated, alpha dropped, palette
    looked up, 16-bit scaled to 8 like the Rust `image` crate's `to_rgb8`). `labels=True`: a
    label map [H, W] (the gray value or palette index itself; the first channel of RGB)."""
    name = str(path)
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:8] != SIGNATURE:
        raise ValueError(f"{name}: not a PNG file")
    pos, idat, palette, ihdr = 8, [], None, None
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos:pos + 4])
        ctype = blob[pos + 4:pos + 8]
        body = blob[pos + 8:pos + 8 + length]
        pos += 12 + length
        if ctype == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif ctype == b"PLTE":
            palette = np.frombuffer(body, dtype=np.uint8).reshape(-1, 3)
        elif ctype == b"IDAT":
            idat.append(body)
        elif ctype == b"IEND":
            break
    if ihdr is None:
        raise ValueError(f"{name}: no IHDR chunk")
    width, height, depth, ctype, _comp, _filt, interlace = ihdr
    if interlace:
        return _read_with_pillow(path, labels, "interlaced PNG")
    if ctype not in _CHANNELS or depth not in (1, 2, 4, 8, 16):
        raise ValueError(f"{name}: unsupported PNG color type {ctype} / bit depth {depth}")
    ch = _CHANNELS[ctype]
    bits = ch * depth
    stride = (width * bits + 7) // 8
    bpp = max(1, bits // 8)
    raw = _unfilter(zlib.decompress(b"".join(idat)), height, stride, bpp, name)
    if depth == 16:
        px = raw.reshape(height, width * ch, 2)
        v = (px[..., 0].astype(np.uint32) << 8) | px[..., 1]
        px = ((v + 128) // 257).astype(np.uint8).reshape(height, width, ch)
    elif depth == 8:
        px = raw.reshape(height, width, ch)
    else:  # 1, 2, 4 bits: gray or palette, one channel
        per = 8 // depth
        shifts = np.arange(per - 1, -1, -1, dtype=np.uint8) * depth
        unpacked = (raw[:, :, None] >> shifts) & ((1 << depth) - 1)
        px = unpacked.reshape(height, -1)[:, :width].reshape(height, width, 1).astype(np.uint8)
        if ctype == 0 and not labels:
            px = (px.astype(np.uint32) * 255 // ((1 << depth) - 1)).astype(np.uint8)
    if labels:
        return np.ascontiguousarray(px[..., 0])
    if ctype == 3:
        if palette is None:
            raise ValueError(f"{name}: palette PNG without PLTE")
        return palette[px[..., 0]]
    if ch in (1, 2):
        return np.repeat(px[..., :1], 3, axis=2)
    return np.ascontiguousarray(px[..., :3])


def write_png(path: Union[str, os.PathLike], array: np.ndarray) -> None:
    """Write uint8 [H, W] (gray, e.g. a label map) or [H, W, 3] (RGB) as an 8-bit PNG."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    if a.ndim == 2:
        ctype, rows = 0, a
    elif a.ndim == 3 and a.shape[2] == 3:
        ctype, rows = 2, a.reshape(a.shape[0], -1)
    else:
        raise ValueError(f"write_png: expected [H, W] or [H, W, 3] uint8, got {a.shape}")
    h, w = a.shape[:2]
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(h))

    def chunk(t: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + t + body + struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF)

    png = SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def _read_with_pillow(path, labels: bool, what: str) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as e:
        raise ImportError(f"{path}: reading a {what} needs Pillow (pip install pillow)") from e
    with Image.open(path) as im:
        if labels:
            if im.mode in ("P", "L", "I", "I;16"):
                return np.asarray(im).astype(np.uint8)
            return np.asarray(im.convert("RGB"))[..., 0].copy()
        return np.asarray(im.convert("RGB")).copy()


def read_image(path: Union[str, os.PathLike], labels: bool = False) -> np.ndarray:
    """A PNG (built-in decoder) or JPEG (Pillow) as RGB uint8 [H, W, 3], or a label map [H, W]."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext == ".png":
        return read_png(path, labels)
    return _read_with_pillow(path, labels, "JPEG")

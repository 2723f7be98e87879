"""slotforge's slot noise, bit for bit: `scene_noise(seed, scenes, k, d, scale)` is the noise
`slotforge eval --seed SEED` (and `slotforge infer` without `--noise`, with seed 0) feeds
scene i, so PyTorch can reproduce those commands' outputs without the noise file.

slotforge draws it as (src/train/run.rs `scene_noise`, `step_rng`): a ChaCha8 generator
(rand_chacha 0.9) seeded with `seed_from_u64(seed)` (rand_core: PCG32 fills the 32-byte key),
stream 3, word position `i * 2**24`; then `k * d` standard normals (rand_distr 0.5
`StandardNormal`: the 256-layer ziggurat in f64, cast to f32), each times `scale` in f32.
"""

from __future__ import annotations

import math
import struct
from typing import Iterable, Sequence

import numpy as np

from ._ziggurat_tables import ZIG_NORM_F, ZIG_NORM_R, ZIG_NORM_X

_M64 = (1 << 64) - 1
_CONSTANTS = np.array([0x61707865, 0x3320646E, 0x79622D32, 0x6B206574], dtype=np.uint32)


def _pcg32_seed(state: int) -> np.ndarray:
    """rand_core's `seed_from_u64`: eight PCG32 outputs, little-endian, as the key words."""
    mul, inc = 6364136223846793005, 11634580027462260723
    words = []
    for _ in range(8):
        state = (state * mul + inc) & _M64
        xorshifted = (((state >> 18) ^ state) >> 27) & 0xFFFFFFFF
        rot = state >> 59
        words.append(((xorshifted >> rot) | (xorshifted << ((32 - rot) & 31))) & 0xFFFFFFFF)
    return np.array(words, dtype=np.uint32)


def _rotl(v: np.ndarray, n: int) -> np.ndarray:
    return (v << np.uint32(n)) | (v >> np.uint32(32 - n))


def _chacha8_blocks(key: np.ndarray, stream: int, first_block: int, count: int) -> np.ndarray:
    """`count` consecutive ChaCha8 keystream blocks (16 words each) from block `first_block`:
    words 12-13 hold the 64-bit block counter, 14-15 the 64-bit stream (low word first)."""
    ctr = (np.arange(count, dtype=np.uint64) + np.uint64(first_block)) & np.uint64(_M64)
    init = np.empty((16, count), dtype=np.uint32)
    init[0:4] = _CONSTANTS[:, None]
    init[4:12] = key[:, None]
    init[12] = (ctr & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    init[13] = (ctr >> np.uint64(32)).astype(np.uint32)
    init[14] = stream & 0xFFFFFFFF
    init[15] = (stream >> 32) & 0xFFFFFFFF
    x = [init[i].copy() for i in range(16)]

    def qr(a, b, c, d):
        x[a] += x[b]; x[d] = _rotl(x[d] ^ x[a], 16)
        x[c] += x[d]; x[b] = _rotl(x[b] ^ x[c], 12)
        x[a] += x[b]; x[d] = _rotl(x[d] ^ x[a], 8)
        x[c] += x[d]; x[b] = _rotl(x[b] ^ x[c], 7)

    with np.errstate(over="ignore"):
        for _ in range(4):  # 8 rounds = 4 double rounds
            qr(0, 4, 8, 12); qr(1, 5, 9, 13); qr(2, 6, 10, 14); qr(3, 7, 11, 15)
            qr(0, 5, 10, 15); qr(1, 6, 11, 12); qr(2, 7, 8, 13); qr(3, 4, 9, 14)
        out = np.stack(x) + init
    return out.T.reshape(-1)  # block after block, words in order


class ChaCha8:
    """A ChaCha8Rng of rand_chacha 0.9 with `seed_from_u64`, `set_stream` and `set_word_pos`
    (word positions that are multiples of 16), producing the same u64 sequence."""

    _CHUNK = 64  # blocks generated at a time

    def __init__(self, seed: int, stream: int = 0, word_pos: int = 0):
        if word_pos % 16:
            raise ValueError("word_pos must be a multiple of 16")
        self.key = _pcg32_seed(seed & _M64)
        self.stream = stream
        self.block = word_pos // 16
        self.buf = np.empty(0, dtype=np.uint32)
        self.pos = 0

    def _refill(self) -> None:
        rest = self.buf[self.pos:]
        new = _chacha8_blocks(self.key, self.stream, self.block, self._CHUNK)
        self.block += self._CHUNK
        self.buf = np.concatenate([rest, new])
        self.pos = 0
        self._words = self.buf.tolist()

    def next_u64(self) -> int:
        if self.pos + 2 > len(self.buf):
            self._refill()
        lo, hi = self._words[self.pos], self._words[self.pos + 1]
        self.pos += 2
        return lo | (hi << 32)

    def uniform01(self) -> float:
        """rand's StandardUniform f64: 53 bits, [0, 1)."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def open01(self) -> float:
        """rand's Open01 f64: (0, 1)."""
        bits = (self.next_u64() >> 12) | (1023 << 52)
        return struct.unpack("<d", struct.pack("<Q", bits))[0] - (1.0 - 2.0**-53)

    def standard_normal(self) -> float:
        """rand_distr 0.5 `StandardNormal` as f64 (the ziggurat)."""
        while True:
            bits = self.next_u64()
            i = bits & 0xFF
            u = struct.unpack("<d", struct.pack("<Q", (bits >> 12) | (1024 << 52)))[0] - 3.0
            x = u * ZIG_NORM_X[i]
            if abs(x) < ZIG_NORM_X[i + 1]:
                return x
            if i == 0:
                xt, yt = 1.0, 0.0
                while -2.0 * yt < xt * xt:
                    xt = math.log(self.open01()) / ZIG_NORM_R
                    yt = math.log(self.open01())
                return xt - ZIG_NORM_R if u < 0.0 else ZIG_NORM_R - xt
            if ZIG_NORM_F[i + 1] + (ZIG_NORM_F[i] - ZIG_NORM_F[i + 1]) * self.uniform01() < math.exp(-x * x / 2.0):
                return x


def step_rng(seed: int, stream: int, t: int) -> ChaCha8:
    """slotforge's `step_rng(seed, stream, t)`."""
    return ChaCha8(seed, stream, t * (1 << 24))


def randn(rng: ChaCha8, n: int, scale: float = 1.0) -> np.ndarray:
    """slotforge's `randn`: n f32 standard normals (f64 draws cast to f32), times `scale` in f32."""
    z = np.array([rng.standard_normal() for _ in range(n)], dtype=np.float64).astype(np.float32)
    return (np.float32(scale) * z).astype(np.float32)


def scene_noise(seed: int, scenes: Iterable[int] | int, num_slots: int, slot_dim: int, scale: float = 1.0) -> np.ndarray:
    """The slot noise [len(scenes), K, D] that `slotforge eval --seed SEED` gives each of
    `scenes` (an int n means scenes 0..n-1), float32. `slotforge infer` without `--noise` uses
    seed 0 and scenes 0..B-1. `scale` is 1 for a random-init checkpoint and the
    `slotforge.spectral` metadata's `noise` for a spectral one."""
    if isinstance(scenes, int):
        scenes = range(scenes)
    scenes = list(scenes)
    out = np.empty((len(scenes), num_slots, slot_dim), dtype=np.float32)
    for j, i in enumerate(scenes):
        out[j] = randn(step_rng(seed, 3, i), num_slots * slot_dim, scale).reshape(num_slots, slot_dim)
    return out


__all__: Sequence[str] = ["ChaCha8", "step_rng", "randn", "scene_noise"]

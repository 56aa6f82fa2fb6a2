"""gradc's random number generator: PyTorch's CPU streams (mt19937) after the same seed.

PyTorch's CPU generator is a 32-bit mt19937 seeded with `seed & 0xffffffff` (the reference
initialization, the same as numpy's legacy MT19937 seeding), so numpy's MT19937 bit generator yields
the same raw words. On top of them this module reproduces PyTorch's transformations:

  rand / uniform_   float32: (w & (2^24 - 1)) * 2^-24; float64: 53 bits of a 64-bit draw (two words, high first),
                    scaled as x * (to - from) + from in double (float64: one fused multiply-add, as
                    PyTorch's AVX2/AVX-512 builds compile it)
  random_           w % (to - from) + from; 64-bit draws for int64/float64 full ranges and spans >= 2^28
  randn / normal_   float32 tensors of >= 16 elements: all uniforms first, then Box-Muller in blocks of 16
                    (u1 = 1 - data[j], u2 = data[j + 8]), a last partial block recomputed from 16 fresh draws;
                    float64 tensors of >= 16 elements: the same in double (53-bit uniforms);
                    otherwise the double normal_distribution (two 53-bit uniforms, r = sqrt(-2 log(1 - u2)),
                    theta = 2 pi u1, r cos theta, with r sin theta cached for the next draw)
  randint           w % range + low (64-bit draws when range >= 2^28: PyTorch 2.13's threshold, measured)
  randperm          Fisher-Yates from the front, z = w % (n - i) (n < 2^32 / 20)

Tests compare each against torch (tests/test_pytorch_api.py, random streams). Vectorized PyTorch kernels may round
the float32 Box-Muller differently in the last ulp; values agree to float32 rounding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Generator", "default_generator", "initial_seed", "seed", "get_rng_state", "set_rng_state"]

TWO_PI = 2.0 * np.pi
WIDE_RANGE = 1 << 28  # integer ranges from here on take 64-bit draws


def _shape(size: Any) -> tuple[int, ...]:
    if size is None:
        return ()
    if isinstance(size, (int, np.integer)):
        return (int(size),)
    return tuple(int(d) for d in size)


class Generator:
    """torch.Generator on the CPU; also offers the numpy-style calls gradc's internals make."""

    def __init__(self, device: Any = "cpu") -> None:
        self._seed = 67280421310721  # PyTorch's default seed
        self.manual_seed(self._seed)

    # --- torch.Generator
    def manual_seed(self, seed: int) -> Generator:
        seed = int(seed)
        if seed < 0:
            seed += 1 << 64  # PyTorch reinterprets a negative seed as unsigned
        self._seed = seed
        self._bits = np.random.MT19937()
        self._bits._legacy_seeding(seed & 0xFFFFFFFF)
        self._next_double_normal: float | None = None
        return self

    def seed(self) -> int:
        import secrets
        s = secrets.randbits(63)
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed

    def get_state(self) -> Any:
        return (self._seed, self._bits.state, self._next_double_normal)

    def set_state(self, state: Any) -> Generator:
        self._seed, bits, self._next_double_normal = state
        self._bits = np.random.MT19937()
        self._bits.state = bits
        return self

    # --- raw draws
    def words(self, n: int) -> np.ndarray:
        """n raw 32-bit mt19937 outputs (as uint64)."""
        return self._bits.random_raw(n).astype(np.uint64) if n else np.zeros(0, np.uint64)

    def words64(self, n: int) -> np.ndarray:
        w = self.words(2 * n).reshape(n, 2) if n else np.zeros((0, 2), np.uint64)
        return (w[:, 0] << np.uint64(32)) | w[:, 1]

    def _uniform01(self, n: int, bits: int) -> np.ndarray:
        """n uniforms in [0, 1) from `bits` (24: float32, 53: float64) bits per draw, as float64."""
        raw = self.words(n) if bits <= 32 else self.words64(n)
        return (raw & np.uint64((1 << bits) - 1)).astype(np.float64) * 2.0 ** -bits

    # --- PyTorch's distributions, as float64 arrays holding the values of the target dtype
    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None, dtype: Any = np.float32) -> np.ndarray:
        shape = _shape(size)
        n = int(np.prod(shape, dtype=np.int64))
        if np.dtype(dtype) != np.float64:
            x = self._uniform01(n, 24)
            return (x * (float(high) - float(low)) + float(low)).astype(dtype).reshape(shape)
        # PyTorch's AVX2/AVX-512 builds contract x * (to - from) + from into one fused multiply-add
        return _fused_multiply_add(self._uniform01(n, 53), float(high) - float(low), float(low)).reshape(shape)

    def random(self, size: Any = None, dtype: Any = np.float32) -> np.ndarray:
        return self.uniform(0.0, 1.0, size, dtype)

    def normal(self, loc: float = 0.0, scale: float = 1.0, size: Any = None, dtype: Any = np.float32) -> np.ndarray:
        shape = _shape(size)
        n = int(np.prod(shape, dtype=np.int64))
        if np.dtype(dtype) == np.float32 and n >= 16:
            return self._normal_fill(n, np.float32(loc), np.float32(scale)).reshape(shape)
        if np.dtype(dtype) == np.float64 and n >= 16:
            return self._normal_fill64(n, float(loc), float(scale)).reshape(shape)
        values = np.array([self._normal_double() for _ in range(n)], dtype=np.float64)
        return (values * float(scale) + float(loc)).astype(dtype).reshape(shape)

    def standard_normal(self, size: Any = None, dtype: Any = np.float32) -> np.ndarray:
        return self.normal(0.0, 1.0, size, dtype)

    def _normal_double(self) -> float:
        cached = self._next_double_normal
        if cached is not None:
            self._next_double_normal = None
            return cached
        u1, u2 = self._uniform01(2, 53)
        r = np.sqrt(-2.0 * np.log1p(-u2))
        theta = TWO_PI * u1
        self._next_double_normal = float(r * np.sin(theta))
        return float(r * np.cos(theta))

    def _normal_fill(self, n: int, mean: np.float32, std: np.float32) -> np.ndarray:
        data = self._uniform01(n, 24).astype(np.float32)
        blocks = n // 16
        out = data.copy()
        if blocks:
            out[:blocks * 16] = _box_muller16(data[:blocks * 16].reshape(blocks, 16), mean, std).reshape(-1)
        if n % 16:
            tail = self._uniform01(16, 24).astype(np.float32).reshape(1, 16)
            out[n - 16:] = _box_muller16(tail, mean, std).reshape(-1)
        return out

    def _normal_fill64(self, n: int, mean: float, std: float) -> np.ndarray:
        """PyTorch's scalar normal_fill<double>: the float32 scheme in double arithmetic."""
        data = self._uniform01(n, 53)
        out = data.copy()
        blocks = n // 16
        if blocks:
            out[:blocks * 16] = _box_muller16_f64(data[:blocks * 16].reshape(blocks, 16), mean, std).reshape(-1)
        if n % 16:
            out[n - 16:] = _box_muller16_f64(self._uniform01(16, 53).reshape(1, 16), mean, std).reshape(-1)
        return out

    def integers(self, low: int, high: int | None = None, size: Any = None, dtype: Any = np.int64) -> np.ndarray:
        if high is None:
            low, high = 0, low
        shape = _shape(size)
        n = int(np.prod(shape, dtype=np.int64))
        span = int(high) - int(low)
        if span <= 0:
            raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
        raw = self.words(n) if span < WIDE_RANGE else self.words64(n)
        return ((raw % np.uint64(span)).astype(np.int64) + int(low)).astype(dtype).reshape(shape)

    def permutation(self, n: int) -> np.ndarray:
        n = int(n)
        if n >= (1 << 32) // 20:
            raise RuntimeError("gradc.randperm supports n < 2^32 / 20")
        perm = np.arange(n, dtype=np.int64)
        if n > 1:
            spans = np.arange(n, 1, -1, dtype=np.uint64)  # n - i for i in 0 .. n-2
            z = (self.words(n - 1) % spans).astype(np.int64)
            for i, k in enumerate(z.tolist()):  # the swaps depend on each other: a plain loop
                j = i + k
                perm[i], perm[j] = perm[j], perm[i]
        return perm


def _fused_multiply_add(a: np.ndarray, b: float, c: float) -> np.ndarray:
    """a * b + c rounded once (as fma), from an exact product split (Dekker) and an exact sum (Knuth)."""
    def split(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = 134217729.0 * x  # 2^27 + 1
        hi = t - (t - x)
        return hi, x - hi
    with np.errstate(over="ignore", invalid="ignore"):
        a = np.asarray(a, dtype=np.float64)
        p = a * b
        (ah, al), (bh, bl) = split(a), split(np.float64(b))
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl  # a * b == p + e exactly
        s = p + c
        bb = s - p
        t = (p - (s - bb)) + (c - bb)  # p + c == s + t exactly
        out = s + (t + e)
    return np.where(np.isfinite(out), out, p + c)


def _box_muller16_f64(data: np.ndarray, mean: float, std: float) -> np.ndarray:
    radius = np.sqrt(-2.0 * np.log(1.0 - data[:, :8]))
    theta = TWO_PI * data[:, 8:]
    out = np.empty_like(data)
    out[:, :8] = _fused_multiply_add(radius * np.cos(theta), std, mean)
    out[:, 8:] = _fused_multiply_add(radius * np.sin(theta), std, mean)
    return out


def _box_muller16(data: np.ndarray, mean: np.float32, std: np.float32) -> np.ndarray:
    """PyTorch's normal_fill_16 on rows of 16 float32 uniforms, in float32 arithmetic."""
    u1 = np.float32(1) - data[:, :8]
    u2 = data[:, 8:]
    radius = np.sqrt(np.float32(-2) * np.log(u1))
    theta = (TWO_PI * u2.astype(np.float64)).astype(np.float32)
    out = np.empty_like(data)
    out[:, :8] = radius * np.cos(theta) * std + mean
    out[:, 8:] = radius * np.sin(theta) * std + mean
    return out


default_generator = Generator()


def initial_seed() -> int:
    return default_generator.initial_seed()


def seed() -> int:
    return default_generator.seed()


def get_rng_state() -> Any:
    """The default generator's state (an opaque object here; PyTorch returns a ByteTensor)."""
    return default_generator.get_state()


def set_rng_state(state: Any) -> None:
    default_generator.set_state(state)

"""The shared noise bank: eps ~ N(0, I) with an integer id per noise and a content hash.

Noise `i` of seed `s` is drawn by its own numpy PCG64 stream seeded from SeedSequence([s, i]),
on the CPU, so it is bit-identical on every device and for every batch size, chunking or number
of worker processes: no noise depends on which others are drawn with it. Ids 0-63 are the
paper's 8x8 grid (Appendix B: the same 8x8 initial noise for every grid figure). The kernel
scales eps (VE and EDM start from sigma_max * eps); see `Kernel.initial_state`.
"""
from __future__ import annotations

import hashlib
import json
import operator
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import torch

from models.atomic import atomic_write

GRID_IDS = tuple(range(64))
FORMAT = "samenoise-noise-bank/2"


class NoiseBankError(ValueError):
    """A noise bank that cannot be used: missing ids, wrong shape, or a file that fails its hash."""


WORD = 2**32  # a stream's seed words lie in [0, WORD)


def whole(value, what: str) -> int:
    """`value` as an int when it is a whole number's type (int, numpy or torch integer), else a ValueError naming
    `what` and the value: int() cut a seed of 1.9 to 1 and an id of 2.7 to 2, drawing another noise than asked."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{what} must be a whole number, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be a whole number, got {value!r} ({type(value).__name__})") from None


def pcg64(*words: int) -> np.random.Generator:
    """numpy's PCG64 generator seeded from SeedSequence(words), each word in [0, 2^32). SeedSequence splits a larger
    integer into 32-bit words and reads missing words as 0, so a seed or id of 2^32 or more would draw another's
    stream (noise 0 of seed 2^32 is noise 1 of seed 0): refused, as are negative words and words that are not whole
    numbers."""
    words = tuple(whole(w, "a random stream's seed or id") for w in words)
    if not all(0 <= w < WORD for w in words):
        raise ValueError(f"a random stream's seed and ids must lie in [0, 2**32), got {list(words)}: numpy's "
                         f"SeedSequence splits a larger integer into 32-bit words, so (seed 2**32, id 0) would draw "
                         f"what (seed 0, id 1) draws (reduce a 64-bit seed, e.g. torch.initial_seed() % 2**32)")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(words))))


def draw_noise(seed: int, noise_id: int, shape: Sequence[int]) -> np.ndarray:
    """One noise, float32, from its own stream: independent of every other id."""
    return pcg64(seed, noise_id).standard_normal(tuple(shape), dtype=np.float32)


def noise_labels(seed: int, ids: Iterable[int], num_classes: int) -> torch.Tensor:
    """One class label per noise id, each from its own stream like the noise itself, so a noise keeps its label
    whatever other ids are drawn: the paper pairs each of its ImageNet noises with a random class (Appendix A.1).
    The stream's third word keeps it apart from the noise stream of the same seed and id."""
    if not num_classes or num_classes < 1:
        raise ValueError(f"random labels need a conditional model (num_classes >= 1), got num_classes={num_classes}")
    return torch.tensor([int(pcg64(seed, i, 1).integers(num_classes)) for i in ids], dtype=torch.int64)


def positions(have: Iterable[int], want: Iterable[int]) -> tuple[list[int], list[int]]:
    """Where each wanted noise id sits among `have`, and the wanted ids that are not there."""
    where = {int(i): k for k, i in enumerate(have)}
    want = [int(i) for i in want]
    return [where[i] for i in want if i in where], [i for i in want if i not in where]


@lru_cache(maxsize=None)
def _drawn_hash(seed: int, shape: tuple[int, ...], n: int) -> str:
    return NoiseBank.draw(seed, shape, n=n).hash


@dataclass(frozen=True, eq=False)
class NoiseBank:
    """eps (n, *shape) float32 on the CPU, its int64 ids, and the seed it was drawn from (None when loaded
    from a foreign file)."""

    eps: torch.Tensor
    ids: torch.Tensor
    seed: Optional[int] = None

    def __post_init__(self):
        if self.eps.dtype != torch.float32 or self.eps.ndim < 2 or len(self.eps) != len(self.ids):
            raise NoiseBankError(f"a noise bank needs float32 eps (n, ...) with n ids, got eps "
                                 f"{tuple(self.eps.shape)} {self.eps.dtype} and {len(self.ids)} ids")
        if len(torch.unique(self.ids)) != len(self.ids):
            raise NoiseBankError("noise ids must be unique")

    @classmethod
    def draw(cls, seed: int, shape: Sequence[int], n: Optional[int] = None, ids: Optional[Iterable[int]] = None
             ) -> "NoiseBank":
        """Noises `ids` (default 0..n-1) of `seed`, each of `shape` (e.g. (3, 32, 32))."""
        if (n is None) == (ids is None):
            raise ValueError("give exactly one of n or ids")
        ids = list(range(whole(n, "a noise bank's n"))) if ids is None else [whole(i, "a noise id") for i in ids]
        seed = whole(seed, "a noise bank's seed")
        if not ids or min(ids) < 0 or max(ids) >= WORD:
            raise ValueError(f"a noise bank needs at least one id, each in [0, 2**32), got {ids[:8]}"
                             f"{' ...' if len(ids) > 8 else ''}")
        eps = np.stack([draw_noise(seed, i, shape) for i in ids])
        return cls(torch.from_numpy(eps), torch.tensor(ids, dtype=torch.int64), seed)

    def is_first(self, hash: Optional[str] = None) -> bool:
        """Whether this bank is noises 0, 1, ..., n - 1 of its seed exactly as `draw` makes them (not permuted, not
        a grid or path built from them); `hash`: the bank's `hash`, where the caller has it already."""
        return self.seed is not None and (hash or self.hash) == _drawn_hash(self.seed, self.shape, len(self))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.eps.shape[1:])

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def hash(self) -> str:
        """sha256 of the seed, shape, ids and eps bytes (little-endian): the key every cache uses."""
        h = hashlib.sha256(FORMAT.encode())
        h.update(json.dumps({"seed": self.seed}).encode())
        h.update(np.asarray(self.eps.shape, dtype="<i8").tobytes())
        h.update(self.ids.numpy().astype("<i8").tobytes())
        h.update(self.eps.numpy().astype("<f4").tobytes())
        return h.hexdigest()

    def take(self, ids: Iterable[int]) -> torch.Tensor:
        """The noises with these ids, in this order."""
        rows, missing = positions(self.ids.tolist(), ids)
        if missing:
            raise NoiseBankError(f"noise ids {missing[:10]} are not in this bank (ids {int(self.ids.min())}.."
                                 f"{int(self.ids.max())}, {len(self)} noises)")
        return self.eps[rows]

    def check_shape(self, shape: Sequence[int], who: str = "the model") -> None:
        if tuple(shape) != self.shape:
            raise NoiseBankError(f"noise bank shape {self.shape} does not match {who}'s sample shape {tuple(shape)}")

    def save(self, path: str | os.PathLike) -> Path:
        """Write `path` (.npy, the eps array) and `path` with suffix .json (ids, seed, hash), atomically."""
        path = Path(path)
        if path.suffix != ".npy":
            raise ValueError(f"a noise bank is saved as .npy, got {path}")
        meta = {"format": FORMAT, "seed": self.seed, "shape": list(self.shape), "ids": self.ids.tolist(),
                "sha256": self.hash}
        atomic_write(path, lambda f: np.save(f, self.eps.numpy()))
        atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(meta).encode()))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NoiseBank":
        """Load a saved bank; refuse it when its content does not hash to the recorded sha256."""
        path = Path(path)
        meta_path = path.with_suffix(".json")
        try:
            meta = json.loads(meta_path.read_text())
            eps = torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise NoiseBankError(f"cannot read noise bank {path} (+ {meta_path.name}): {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise NoiseBankError(f"{meta_path}: format {found!r}, expected {FORMAT!r}")
        for name, ok, want in (("ids", lambda v: isinstance(v, list) and all(type(i) is int for i in v),
                                "a list of integers"),
                               ("sha256", lambda v: isinstance(v, str) and len(v) == 64, "a 64-digit hex string"),
                               ("seed", lambda v: v is None or type(v) is int, "an integer or null")):
            if name not in meta or not ok(meta[name]):
                got = f"is {meta[name]!r:.60}" if name in meta else "is missing"
                raise NoiseBankError(f"{meta_path}: '{name}' {got}; expected {want}")
        bank = cls(eps, torch.tensor(meta["ids"], dtype=torch.int64), meta["seed"])
        if bank.hash != meta["sha256"]:
            raise NoiseBankError(f"noise bank {path} fails its hash: content {bank.hash[:12]}, recorded "
                                 f"{meta['sha256'][:12]}; the file was modified or truncated")
        return bank


"""The sample store: each model's samples for one key are made once and reused by every case and run.

A key is a JSON-able dict (model fingerprint, sampler, NFE, grid, label, noise-bank hash, ...); its
sha256 names the entry. An entry is one `.npz` holding uint8 NHWC images, their noise ids, the NFE
used, the key itself and one sha256 over all of them, written atomically. Several processes (pytest-xdist
workers) asking for one key at once serialize on a lock: the first generates, the others wait and then read
what it wrote. A damaged entry is reported once (a StoreWarning naming the file and the problem) and made again.

A prefix entry (`SampleStore.prefix`) holds the first m noises of one bank sequence (ids 0, 1, ..., m - 1) under a
key without the count: a request for n <= m rows takes its first n, and one for more extends it by the missing rows
only. The caller keys such an entry only where the first n rows of a longer run are the rows a run of n makes, bit
for bit (fixtures/samples.py: whole micro-batches).

Nothing in a run removes an entry: a key changes with the code (models/versions.py), so each release leaves its
predecessor's sets behind. A hit sets the entry's modification time, and `python -m models.store prune CACHE_DIR
--unused-days N` removes the sample sets, embeddings and model facts that no run has used for N days.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
from models.atomic import atomic_write, file_lock, touch
from models.noise import positions

FORMAT = "samenoise-sample-store/2"


class StoreError(ValueError):
    """A store entry that is missing or fails its checks; the message names the file and the problem."""


class StoreWarning(UserWarning):
    """A damaged store entry that was removed and made again."""


@dataclass(frozen=True)
class SampleSet:
    images: np.ndarray  # (n, H, W, C) uint8
    ids: np.ndarray  # (n,) int64 noise ids
    nfe: int
    key: dict[str, Any]
    bank: Optional[str] = None  # the hash of the noise bank these rows were asked for (not stored: a prefix entry's
    # key names the seed's first noises without a count)

    def rows(self, ids) -> list[int]:
        """The rows of these noise ids, in this order."""
        rows, missing = positions(self.ids.tolist(), ids)
        if missing:
            k, held = self.key, self.ids.tolist()
            span = f"{min(held)}..{max(held)}" if held else "none"
            raise StoreError(f"noise ids {missing[:10]} are not in this sample set: it holds {len(held)} noise ids "
                             f"({span}; stored under {k.get('sampler')}@{k.get('nfe')}, model fingerprint "
                             f"{str(k.get('fingerprint'))[:12]}, store key {key_hash(k)[:12]})")
        return rows

    def take(self, ids) -> np.ndarray:
        """Images for these noise ids, in this order."""
        return self.images[self.rows(ids)]

    def head(self, n: int) -> "SampleSet":
        """The first n rows, under the same key."""
        return SampleSet(self.images[:n], self.ids[:n], self.nfe, self.key, self.bank)


def _key_value(value: Any) -> str:
    """A key value JSON cannot hold: its printout (a path, a dtype), but never an array's, whose printout elides
    the middle of a long array (two label arrays that differ there would share a key)."""
    if hasattr(value, "__array__") and getattr(value, "ndim", 0) > 0:  # numpy or torch arrays; scalars print whole
        raise StoreError(f"a sample-store key cannot hold an array ({type(value).__name__} of shape "
                         f"{tuple(getattr(value, 'shape', ()))}): give it as a list or as its digest")
    return str(value)


def canonical_key(key: dict[str, Any]) -> str:
    """The key as the store writes and hashes it: JSON with sorted keys."""
    return json.dumps(key, sort_keys=True, default=_key_value)


def key_hash(key: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_key(key).encode()).hexdigest()


def entry_digest(key_json: str, images: np.ndarray, ids: np.ndarray, nfe: int) -> str:
    """sha256 over everything an entry holds: its key, ids, NFE and image bytes."""
    h = hashlib.sha256(key_json.encode())
    h.update(np.asarray(ids, dtype="<i8").tobytes())
    h.update(np.int64(nfe).astype("<i8").tobytes())
    h.update(np.asarray(images.shape, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(images, dtype=np.uint8).tobytes())
    return h.hexdigest()


def _counts_up(ids: np.ndarray) -> bool:
    return bool(np.array_equal(ids, np.arange(len(ids))))


class SampleStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, key: dict[str, Any]) -> Path:
        return self.root / "samples" / f"{key_hash(key)}.npz"

    @contextmanager
    def lock(self, key: dict[str, Any]) -> Iterator[None]:
        """Exclusive between processes for this key (any JSON-able dict, also work that is not a sample set)."""
        with file_lock(self.root / "locks" / f"{key_hash(key)}.lock"):
            yield

    def get(self, key: dict[str, Any]) -> Optional[SampleSet]:
        """The entry, or None when absent; a damaged entry (truncated, edited, another key) raises StoreError."""
        path = self.path(key)
        if not path.is_file():
            return None
        touch(path)  # used from before the read on: `prune` keeps it (a large set takes seconds to read)
        try:
            found = self.read(path)
        except StoreError:
            if not path.exists():  # removed since (python -m models.store prune): absent, not damaged
                return None
            raise
        if json.loads(canonical_key(key)) != found.key:
            raise StoreError(f"sample store entry {path} holds another key; delete it")
        return found

    @staticmethod
    def read(path: Path) -> SampleSet:
        """One entry file, checked for its format, its key's hash (its file name) and its images' sha256."""
        try:
            with np.load(path, allow_pickle=False) as z:
                images, ids, nfe = z["images"], z["ids"], int(z["nfe"])
                key_json, fmt, digest = str(z["key"]), str(z["format"]), str(z["sha256"])
                stored_key = json.loads(key_json)
        except Exception as e:  # truncated zip, missing member, bad JSON
            raise StoreError(f"sample store entry {path} cannot be read ({type(e).__name__}: {e}); delete it") from e
        if fmt != FORMAT:
            raise StoreError(f"sample store entry {path} has format {fmt!r}, expected {FORMAT!r}; delete it")
        if key_hash(stored_key) != path.stem:
            raise StoreError(f"sample store entry {path} holds another key; delete it")
        if entry_digest(key_json, images, ids, nfe) != digest:
            raise StoreError(f"sample store entry {path} fails its sha256 (key, ids, NFE and images): the file was "
                             f"modified; delete it")
        return SampleSet(images, ids, nfe, stored_key)

    def put(self, key: dict[str, Any], images: np.ndarray, ids, nfe: int) -> SampleSet:
        if np.asarray(images).dtype != np.uint8:  # a cast would store floats in [0, 1) as black
            raise StoreError(f"a sample set holds uint8 images, got {np.asarray(images).dtype}")
        images = np.ascontiguousarray(images, dtype=np.uint8)
        ids = np.asarray(ids, dtype=np.int64)
        if images.ndim != 4 or len(images) != len(ids):
            raise StoreError(f"a sample set needs (n, H, W, C) uint8 images and n ids, got {images.shape}, "
                             f"{len(ids)} ids")
        canonical = canonical_key(key)
        buf = io.BytesIO()
        np.savez(buf, images=images, ids=ids, nfe=np.int64(nfe), key=np.array(canonical), format=np.array(FORMAT),
                 sha256=np.array(entry_digest(canonical, images, ids, nfe)))
        atomic_write(self.path(key), lambda f: f.write(buf.getvalue()))
        return SampleSet(images, ids, int(nfe), json.loads(canonical))

    def _get_reporting(self, key: dict[str, Any]) -> Optional[SampleSet]:
        """get() under the key's lock: a damaged entry is reported once (StoreWarning), removed, and None returned."""
        try:
            return self.get(key)
        except StoreError as e:
            warnings.warn(StoreWarning(f"{e.args[0].removesuffix('; delete it')}; removed and made again"),
                          stacklevel=3)
            self.path(key).unlink(missing_ok=True)
            return None

    def prefix(self, key: dict[str, Any], n: int, make: Callable[[int, int], tuple[np.ndarray, Any, int]],
               align: int = 1) -> SampleSet:
        """The first n rows (noise ids 0..n-1) of the prefix entry under `key`. An entry with fewer rows is extended
        by make(start, n) -> (uint8 images, ids, nfe) of ids start..n-1 and stored in its place; it is made whole
        (make(0, n)) when its length is not a multiple of `align` (a micro-batch would straddle the join)."""
        if n < 1 or n % align:
            raise ValueError(f"a prefix entry holds whole micro-batches of {align} rows; {n} rows is not a positive "
                             f"multiple")

        try:
            found = self.get(key)
        except StoreError:
            found = None  # handled under the lock, by one process
        if found is not None and len(found.ids) >= n and _counts_up(found.ids):
            return found.head(n)
        with self.lock(key):
            found = self._get_reporting(key)  # another process may have made or extended it while we waited
            if found is not None and not _counts_up(found.ids):
                warnings.warn(StoreWarning(f"sample store entry {self.path(key)} is a prefix entry whose noise ids "
                                           f"are not 0, 1, 2, ...; removed and made again"), stacklevel=2)
                self.path(key).unlink(missing_ok=True)
                found = None
            if found is not None and len(found.ids) >= n:
                return found.head(n)
            start = len(found.ids) if found is not None and len(found.ids) % align == 0 else 0
            images, ids, nfe = make(start, n)
            ids = np.asarray(ids, dtype=np.int64)
            if start and int(nfe) != found.nfe:  # the stored rows came from another solve: made again, whole
                warnings.warn(StoreWarning(f"sample store entry {self.path(key)} was made at NFE {found.nfe} and "
                                           f"its extension at {nfe}; removed and made again"), stacklevel=2)
                start, (images, ids, nfe) = 0, make(0, n)
                ids = np.asarray(ids, dtype=np.int64)
            if not np.array_equal(ids, np.arange(start, n)):
                raise StoreError(f"a prefix entry's rows {start}..{n - 1} were made with noise ids "
                                 f"{ids[:8].tolist()}...: expected {start}, {start + 1}, ...")
            if start:
                images, ids = np.concatenate([found.images, images]), np.concatenate([found.ids, ids])
            return self.put(key, images, ids, nfe)

    def get_or_make(self, key: dict[str, Any], make: Callable[[], tuple[np.ndarray, Any, int]]) -> SampleSet:
        """The stored entry, or make() -> (uint8 images, ids, nfe) stored under the key. Concurrent callers
        with the same key wait for the one that generates; a damaged entry is reported once and made again."""
        try:
            found = self.get(key)
        except StoreError:
            found = None  # handled under the lock, by one process
        if found is not None:
            return found
        with self.lock(key):
            found = self._get_reporting(key)  # another process may have made it while we waited
            if found is not None:
                return found
            images, ids, nfe = make()
            return self.put(key, images, ids, nfe)


FACTS_FOLDER = "model-facts"  # what a run recorded of a loaded checkpoint (fixtures/zoo.py, LoadedLater)

# The folders of a cache whose entries are kept by key and marked when used, with the names their owners give an
# entry (nothing else in those folders is theirs to remove): the sample sets (SampleStore) and the embeddings
# (models.descriptor.EmbeddingCache), each named by a sha256; the facts of a checkpoint of another format, named by
# its fingerprint, runner and device type (fixtures/zoo.py, `facts_path`). The sweep's trained models, the thumbnail
# sets and the report's figures are not pruned here (the report prunes its own figures).
PRUNED_ENTRIES = {"samples": re.compile(r"[0-9a-f]{64}\.npz"), "embeddings": re.compile(r"[0-9a-f]{64}\.npz"),
                  FACTS_FOLDER: re.compile(r"[0-9a-f]{64}-[a-z]+-[a-z]+\.json")}
PRUNED_FOLDERS = tuple(PRUNED_ENTRIES)


@dataclass
class Pruned:
    folder: str
    removed: int = 0
    removed_bytes: int = 0
    kept: int = 0
    kept_bytes: int = 0
    failed: list[str] = field(default_factory=list)  # "path: why" of the entries that could not be removed


def prune(cache_dir: str | os.PathLike, unused_days: float, dry_run: bool = False) -> list[Pruned]:
    """Remove the entries of PRUNED_FOLDERS under `cache_dir` that no run has read or written for `unused_days`
    days (by modification time, which a run's hit sets); with dry_run, only count them. One entry is one file,
    removed whole: a run that asks for it later makes it again. A run that is using an entry has set its time before
    reading it, so only `unused_days` 0 can remove an entry a running case holds. An entry that cannot be removed
    (another owner's, a read-only folder) is kept and named in `failed`."""
    root = Path(cache_dir)
    if isinstance(unused_days, bool) or not isinstance(unused_days, (int, float)) or not unused_days >= 0:
        raise ValueError(f"unused_days must be a number of days >= 0, got {unused_days!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"no cache folder at {str(root)!r}: give the folder a run's --cache-dir named "
                                f"(default .cache/samenoise in the checkout)")
    if not any((root / name).is_dir() for name in PRUNED_FOLDERS):
        raise FileNotFoundError(f"{str(root)!r} is not a samenoise cache folder: it holds no "
                                f"{' or '.join(PRUNED_FOLDERS)} folder (give the folder a run's --cache-dir named, "
                                f"default .cache/samenoise in the checkout)")
    cutoff = time.time() - unused_days * 86400
    out = []
    for name in PRUNED_FOLDERS:
        got = Pruned(name)
        folder = root / name
        for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
            if not PRUNED_ENTRIES[name].fullmatch(entry.name) or not entry.is_file():
                continue
            try:
                st = entry.stat()
                if st.st_mtime >= cutoff:
                    got.kept, got.kept_bytes = got.kept + 1, got.kept_bytes + st.st_size
                    continue
                if not dry_run:
                    entry.unlink()
            except FileNotFoundError:  # removed meanwhile by another prune
                continue
            except OSError as e:
                got.failed.append(f"{entry}: {e.strerror or e}")
                got.kept, got.kept_bytes = got.kept + 1, got.kept_bytes + st.st_size
                continue
            got.removed, got.removed_bytes = got.removed + 1, got.removed_bytes + st.st_size
        out.append(got)
    return out


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _entries(n: int) -> str:
    return f"{n} {'entry' if n == 1 else 'entries'}"


def _days(text: str) -> float:
    try:
        days = float(text)
    except ValueError:
        days = float("nan")
    if not days >= 0:  # also NaN and text that is no number
        raise argparse.ArgumentTypeError(f"a number of days >= 0, got {text!r}")
    return days


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.store", description=(
        "Prune a samenoise cache folder: remove the sample sets, embeddings and model facts that no run has used for a "
        "number of days. What is removed is made again by the next run that asks for it."))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="remove the sample sets, embeddings and model facts unused for --unused-days days")
    p.add_argument("cache_dir", help="the cache folder (a run's --cache-dir; default .cache/samenoise in the checkout)")
    p.add_argument("--unused-days", type=_days, required=True, metavar="DAYS",
                   help="remove what no run has read or written for this many days (0: everything)")
    p.add_argument("--dry-run", action="store_true", help="count what would be removed; remove nothing")
    args = parser.parse_args(argv)
    try:
        results = prune(args.cache_dir, args.unused_days, args.dry_run)
    except FileNotFoundError as e:
        p.error(str(e))
    verb = "would remove" if args.dry_run else "removed"
    for r in results:
        print(f"{r.folder}: {verb} {_entries(r.removed)} ({_mib(r.removed_bytes)}), kept {_entries(r.kept)} "
              f"({_mib(r.kept_bytes)})")
    failed = [f for r in results for f in r.failed]
    if failed:
        print(f"could not remove {_entries(len(failed))}, kept; the first: {failed[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Golden files for checkpoint regression: what a reference checkpoint made from the shared noise, at the
content level (descriptor embeddings) plus small thumbnails, without the checkpoint itself.

A golden file is one `.npz`: ids, embeddings quantized to int8 with one float16 scale per row (cosine
similarities change by about 1e-3), uint8 thumbnails (at most 16 px by default, --golden-thumbnail) and a JSON header
(noise-bank hash, sampler, NFE, grid, label, descriptor identity, a text model's prompt, model), with a sha256
over all of it. A candidate is compared only under the same noise bank, sampler, NFE, grid, label, descriptor and
prompt.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from models.atomic import atomic_write, file_sha256

FORMAT = "samenoise-golden/1"
THUMBNAIL = 16  # largest thumbnail side kept in a golden file by default (pixels); MAE is measured at the file's size
# the smallest side --golden-thumbnail takes: a 4 x 4 thumbnail is the mean-colour layout the suite's layout cases read
# (their pool 4, Appendix E); below it an MAE check sees colour without layout
MIN_THUMBNAIL = 4
MATCHED = ("bank_hash", "sampler", "nfe", "grid", "label", "descriptor", "conditioning")
_FROM_ENTRY = ("a candidate is sampled with its zoo entry's sampler, NFE and step grid: check it under an entry "
               "(--zoo) that names the file's")
MISMATCH = {  # where each matched setting of a check comes from
    "bank_hash": "the candidate's {n} noises come from another noise bank, drawn for another sample shape (image size "
                 "or channels) than the reference's or by another release of the bank",
    "sampler": _FROM_ENTRY, "nfe": _FROM_ENTRY, "grid": _FROM_ENTRY,
    "label": "the file was recorded from a model of the other kind (a conditional model is sampled under class 0, "
             "an unconditional one with no label)",
    "descriptor": "check with the descriptor the file was recorded with (--descriptor, --descriptor-path and "
                  "--descriptor-size; its identity is name@size:weights hash)",
    "conditioning": "a text-to-image model is compared under the prompt it was recorded with (its zoo entry's "
                    "`prompt`, or the sha256 of its `prompt_embeddings` file): give the candidate's entry that one",
}


class GoldenError(ValueError):
    """A golden file that cannot be used here; the message names the file and the problem."""


def conditioning_of(entry) -> Optional[str]:
    """A zoo entry's text conditioning as a golden file records it: its prompt, or the sha256 of its prompt-embeddings
    file (None for a model without one)."""
    if getattr(entry, "prompt_embeddings", ""):
        return f"prompt_embeddings sha256: {file_sha256(entry.prompt_embeddings)}"
    return f"prompt: {entry.prompt}" if getattr(entry, "prompt", "") else None


def thumbnails(images: np.ndarray, size: int = THUMBNAIL) -> np.ndarray:
    """uint8 NHWC images, downsized (PIL bilinear) when larger than `size`; square images only (a golden file keeps
    (n, h, h, 3)). A grayscale model's images (one channel) are repeated to RGB, as the descriptor reads them."""
    if images.ndim == 4 and images.shape[3] == 1:
        images = np.repeat(images, 3, axis=3)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f"thumbnails are made of square RGB or grayscale images (n, h, h, 3 or 1), got "
                         f"{images.shape}")
    if images.shape[1] <= size:
        return np.ascontiguousarray(images, dtype=np.uint8)
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR)) for im in images])


@dataclass
class Golden:
    model: str
    bank_hash: str
    sampler: str
    nfe: int
    grid: str
    label: Optional[int]
    descriptor: str
    ids: np.ndarray = field(repr=False)
    embeddings: np.ndarray = field(repr=False)  # (n, d) float32 (stored as int8 with a float16 scale per row)
    thumbnails: np.ndarray = field(repr=False)  # (n, h, w, 3) uint8
    # a text-to-image model's prompt ("prompt: ..." or "prompt_embeddings sha256: ..."); None for any other model.
    # Files recorded before it was kept have no such key, and are matched on the other settings only
    conditioning: Optional[str] = None
    recorded: Optional[frozenset] = field(default=None, repr=False)  # the header keys of a loaded file

    def header(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("ids", "embeddings", "thumbnails", "recorded")} | {
            "format": FORMAT, "n": int(len(self.ids))}

    @staticmethod
    def _digest(header: dict, ids, emb, thumbs) -> str:
        h = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
        for a in (ids, emb, thumbs):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def _checked_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids, float32 embeddings and uint8 thumbnails as `load` will accept them, or a ValueError naming what is
        wrong (a file saved from them would otherwise be refused later as "edited or damaged")."""
        ids, emb, thumbs = np.asarray(self.ids), np.asarray(self.embeddings), np.asarray(self.thumbnails)
        n = len(ids) if ids.ndim == 1 else None
        if n is None or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"a golden file's ids are one integer per noise (n,), got {ids.dtype} {ids.shape}")
        if emb.ndim != 2 or emb.shape[0] != n or emb.shape[1] == 0:
            raise ValueError(f"a golden file's embeddings are one row per id, ({n}, d) with d >= 1, got {emb.shape}")
        if not np.isfinite(emb).all():
            row = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
            raise ValueError(f"a golden file's embeddings must be finite; row {row} (id {int(ids[row])}) holds "
                             f"{float(emb[row][~np.isfinite(emb[row])][0])!r}")
        if thumbs.ndim != 4 or thumbs.shape[0] != n or thumbs.shape[1] != thumbs.shape[2] or thumbs.shape[1] == 0 \
                or thumbs.shape[3] != 3:
            raise ValueError(f"a golden file's thumbnails are square RGB images, one per id ({n}, h, h, 3), got "
                             f"{thumbs.shape}")
        if thumbs.dtype != np.uint8:
            raise ValueError(f"a golden file's thumbnails are uint8 (0-255), got {thumbs.dtype}")
        return ids.astype("<i8"), emb.astype(np.float32), thumbs

    def save(self, path: str | os.PathLike) -> Path:
        ids, emb, thumbs = self._checked_arrays()
        # one float16 scale per row, at least float16's smallest normal number: an all-zero row (or one below about
        # 8e-3) then quantizes to zeros instead of dividing by a scale that float16 rounds to 0
        scale = (np.abs(emb).max(axis=1, keepdims=True) / 127).clip(float(np.finfo(np.float16).tiny)).astype("<f2")
        q = np.round(emb / scale.astype(np.float32)).clip(-127, 127).astype(np.int8)
        header = self.header()
        buf = io.BytesIO()
        packed = np.concatenate([q.view(np.uint8), scale.view(np.uint8)], 1)
        np.savez_compressed(buf, ids=ids, embeddings=q, scale=scale, thumbnails=thumbs,
                            header=np.array(json.dumps(header)),
                            sha256=np.array(self._digest(header, ids, packed, thumbs)))
        return atomic_write(path, lambda f: f.write(buf.getvalue()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Golden":
        path = Path(path)
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
        except OSError as e:
            raise GoldenError(f"golden file {path} cannot be read ({type(e).__name__}: {e})") from e
        if magic != b"PK\x03\x04":  # an .npz is a zip archive; np.load would take other bytes for a pickle
            raise GoldenError(f"golden file {path} is not an .npz archive (it starts with {magic!r}, a zip archive "
                              f"with b'PK\\x03\\x04'); record one with --update-golden")
        try:
            with np.load(path, allow_pickle=False) as z:
                ids, q, scale, thumbs = z["ids"], z["embeddings"], z["scale"], z["thumbnails"]
                header, digest = json.loads(str(z["header"])), str(z["sha256"])
        except KeyError as e:  # an .npz of something else, or of the first release's layout
            missing = e.args[0].split()[0]
            if missing.strip("'\"") == "scale" and _first_layout(path):
                raise GoldenError(f"golden file {path} was recorded by an earlier release of the suite (float16 "
                                  f"embeddings, before int8 embeddings with a scale per row) under the same format "
                                  f"name {FORMAT!r}; record it again from the reference checkpoint: remove this file, "
                                  f"then run --update-golden --candidate REFERENCE (--update-golden replaces only a "
                                  f"file it can read)") from e
            raise GoldenError(f"{path} is not a golden file: the archive has no member {missing} "
                              f"(a golden file holds ids, embeddings, scale, thumbnails, header and sha256)") from e
        except Exception as e:  # missing, truncated, not an archive
            raise GoldenError(f"golden file {path} cannot be read ({type(e).__name__}: {e})") from e
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            found = header.get("format") if isinstance(header, dict) else f"a header that is a {type(header).__name__}"
            raise GoldenError(f"golden file {path} has format {found!r}, expected {FORMAT!r}")
        cls._check_arrays(path, header, ids, q, scale, thumbs)
        if cls._digest(header, ids, np.concatenate([q.view(np.uint8), scale.view(np.uint8)], 1), thumbs) != digest:
            raise GoldenError(f"golden file {path} fails its sha256: it was edited or damaged")
        emb = q.astype(np.float32) * scale.astype(np.float32)
        fields = {k: header[k] for k in ("model", "bank_hash", "sampler", "nfe", "grid", "label", "descriptor")}
        return cls(**fields, ids=ids, embeddings=emb, thumbnails=thumbs, conditioning=header.get("conditioning"),
                   recorded=frozenset(header))

    @staticmethod
    def _check_arrays(path, header: dict, ids, q, scale, thumbs) -> None:
        """The arrays' kinds and shapes as `save` writes them: the digest covers their bytes, not their shapes, so
        a reshaped member (e.g. thumbnails (n, 16, 16, 3) stored as (n, 8, 32, 3)) is refused here."""
        n = header.get("n")
        want = {"ids": (ids, "int64", lambda s: s == (n,), f"({n},)"),
                "embeddings": (q, "int8", lambda s: len(s) == 2 and s[0] == n and s[1] > 0, f"({n}, d)"),
                "scale": (scale, "float16", lambda s: s == (n, 1), f"({n}, 1)"),
                "thumbnails": (thumbs, "uint8", lambda s: len(s) == 4 and s[0] == n and s[1] == s[2] > 0 and s[3] == 3,
                               f"({n}, h, h, 3)")}
        for name, (a, dtype, ok, shown) in want.items():
            if a.dtype != np.dtype(dtype) or not ok(a.shape):
                raise GoldenError(f"golden file {path} has {name} of {a.dtype} {tuple(a.shape)}, expected {dtype} "
                                  f"{shown} for its {n} noises: it was edited or damaged")

    def check_compatible(self, path, **run) -> None:
        """Refuse a comparison made under another noise bank, sampler, NFE, grid, label, descriptor or prompt, saying
        where the setting comes from. The descriptor is matched by name, input size and weights, not by device: a file
        recorded on a GPU is checked on a CPU (content, not low bits, is what a golden file keeps)."""
        for key in MATCHED:
            if self.recorded is not None and key not in self.recorded:  # an earlier release's file: no prompt kept
                continue
            if key in run and run[key] != getattr(self, key):
                raise GoldenError(f"golden file {path} was made with {key} {getattr(self, key)!r}, this run uses "
                                  f"{run[key]!r}: {MISMATCH[key].format(n=len(self.ids))}. A new golden file under "
                                  f"this run's settings must be recorded from the reference checkpoint "
                                  f"(--update-golden --candidate REFERENCE), not from the candidate, which would "
                                  f"become its own reference")


def _first_layout(path: Path) -> bool:
    """Whether an archive without a `scale` member is a golden file of the first release (its header of this format,
    its embeddings float16)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            return isinstance(header, dict) and header.get("format") == FORMAT and z["embeddings"].dtype == np.float16
    except Exception:  # noqa: BLE001 - any archive this cannot read is simply not of that layout
        return False

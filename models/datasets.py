"""Training and reference data: the embedded photo thumbnails and real CIFAR-style loaders.

Every loader returns `ImageSet(images, labels)`: images uint8 NHWC RGB, labels int64 or None.
"""
from __future__ import annotations

import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from models.noise import pcg64


@dataclass(frozen=True, eq=False)
class ImageSet:
    images: np.ndarray  # (N, H, W, 3) uint8
    labels: Optional[np.ndarray] = None  # (N,) int64
    classes: Optional[tuple[str, ...]] = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def hash(self) -> str:
        h = hashlib.sha256(np.asarray(self.images.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(self.images).tobytes())
        if self.labels is not None:
            h.update(self.labels.astype("<i8").tobytes())
        return h.hexdigest()

    def subset(self, n: int) -> "ImageSet":
        if not 0 < n <= len(self):
            raise ValueError(f"subset size must be in 1..{len(self)}, got {n}")
        return ImageSet(self.images[:n], None if self.labels is None else self.labels[:n], self.classes)

    def as_tensor(self) -> torch.Tensor:
        """float32 NCHW in [-1, 1], the range the models are trained in."""
        return torch.from_numpy(self.images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


# --- the embedded photo thumbnails ---------------------------------------------------------------

PHOTOS = ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "retina", "rocket",
          "motorcycle", "china", "flower")
# Photos that share nothing with PHOTOS (the grey ones are repeated into RGB): a pretraining set disjoint from every
# training set drawn from PHOTOS, as the paper pretrains on CIFAR-100 and fine-tunes on CIFAR-10 (Appendix G).
OTHER_PHOTOS = ("camera", "brick", "grass", "gravel", "moon", "coins", "clock", "cell", "colorwheel", "page")
PHOTO_SETS = {"color": PHOTOS, "other": OTHER_PHOTOS}


@lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
    """One natural photo shipped inside scikit-image or scikit-learn, uint8 HWC RGB."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(f"{name}.jpg")
    import skimage.data

    if name == "motorcycle":
        return skimage.data.stereo_motorcycle()[0]
    if name not in PHOTOS + OTHER_PHOTOS:
        raise ValueError(f"unknown photo {name!r}; valid photos: {', '.join(PHOTOS + OTHER_PHOTOS)}")
    photo = getattr(skimage.data, name)()
    return np.repeat(photo[..., None], 3, axis=2) if photo.ndim == 2 else photo[..., :3]


def thumbnail(photo: np.ndarray, size: int, rng: np.random.Generator, min_frac: float, max_frac: float) -> np.ndarray:
    """A random square region of `photo`, area-downsampled to size x size."""
    h, w = photo.shape[:2]
    side = int(rng.uniform(min_frac, max_frac) * min(h, w))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = torch.from_numpy(np.ascontiguousarray(photo[top:top + side, left:left + side])).permute(2, 0, 1).float()
    small = F.interpolate(crop[None], size=(size, size), mode="area")[0]
    return small.round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def embedded_photos(n: int, size: int = 32, seed: int = 0, photos: Sequence[str] | str = PHOTOS,
                    min_frac: float = 0.25, max_frac: float = 0.6, per_class: int = 1, first: int = 0) -> ImageSet:
    """n CIFAR-like thumbnails; thumbnail i comes from photo i mod len(photos) with a crop drawn from its
    own stream seeded by [seed, i], so the sets are nested: the first 2^k of any larger set are the set of
    size 2^k. Its label is the photo's group: `per_class` consecutive photos form one class (1: a class per
    photo). `photos` is a sequence of photo names or a key of PHOTO_SETS. With `first`, only thumbnails first to
    n - 1 of that set (e.g. held-out data beside a training set of `first` thumbnails).

    At seed 0 thumbnail i's stream is the noise bank's stream of noise i (both [0, i], models/noise.py): its
    first three draws, which set the crop, are the draws that make noise i's first values. The crop of a
    training image is so tied to a few of the d values of one noise, a dependence no claim reads; the
    embedded zoo was trained on these sets, so they stay as they are."""
    if isinstance(photos, str):
        if photos not in PHOTO_SETS:
            raise ValueError(f"unknown photo set {photos!r}; valid sets: {', '.join(PHOTO_SETS)}")
        photos = PHOTO_SETS[photos]
    if n < 1 or size < 4:
        raise ValueError(f"need n >= 1 and size >= 4, got n={n}, size={size}")
    if not 0 <= first < n:
        raise ValueError(f"first must be in [0, n) = [0, {n}), got {first}")
    if not 0 < min_frac <= max_frac <= 1:
        raise ValueError(f"a crop's side is a fraction of the photo's shorter side: need 0 < min_frac <= max_frac "
                         f"<= 1, got min_frac={min_frac}, max_frac={max_frac}")
    if per_class < 1 or len(photos) % per_class:
        raise ValueError(f"per_class must divide the {len(photos)} photos into equal classes, got {per_class}")
    images, labels, classes = _thumbnails(n, size, int(seed), tuple(photos), float(min_frac), float(max_frac),
                                          per_class, first)
    return ImageSet(images.copy(), labels.copy(), classes)  # copies: a caller may write into its set


# Where the thumbnail sets are kept between runs (<cache-dir>/thumbnails, set by the claim suite's cache_dir fixture in
# fixtures/samples.py); None: made in each process. A warm run of the claim cases asks for 4,688 thumbnails: 1.4 s
# to cut, plus 0.7 s to decode the photos (measured), against milliseconds to read them back.
_KEPT_IN: Optional[Path] = None
# what a thumbnail set is made with besides its arguments: the photos' packages, the crop's arithmetic (torch), and
# this file's code
_THUMBNAIL_PACKAGES = ("numpy", "torch", "scikit-image", "scikit-learn", "pillow")


def keep_thumbnails_in(folder: Optional[str | Path]) -> None:
    """Keep the thumbnail sets made from here on in `folder` and read them back from it (None: stop)."""
    global _KEPT_IN
    _KEPT_IN = Path(folder) if folder is not None else None


@lru_cache(maxsize=1)
def _thumbnail_inputs() -> str:
    from models.versions import package_versions, source_digest

    return json.dumps({"versions": package_versions(_THUMBNAIL_PACKAGES), "code": source_digest([__file__])})


def _digest(images: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> str:
    h = hashlib.sha256(np.asarray(images.shape, dtype="<i8").tobytes() + images.tobytes())
    h.update(labels.astype("<i8").tobytes() + json.dumps(classes).encode())
    return h.hexdigest()


@lru_cache(maxsize=16)
def _thumbnails(n: int, size: int, seed: int, photos: tuple[str, ...], min_frac: float, max_frac: float,
                per_class: int, first: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """embedded_photos' arrays, made once per process: a run asks for the same sets many times (the cases' training
    sets and D*'s data: 45 calls in a warm run of the claim cases; keeping them took that run from 15.7-19.2 s to
    14.5-17.2 s, three runs each, interleaved), and kept between runs where keep_thumbnails_in says."""
    args = [n, size, seed, list(photos), min_frac, max_frac, per_class, first]
    path = None
    if _KEPT_IN is not None:
        key = hashlib.sha256(json.dumps([args, _thumbnail_inputs()]).encode()).hexdigest()[:32]
        path = _KEPT_IN / f"{key}.npz"
        try:
            with np.load(path, allow_pickle=False) as f:
                images, labels, classes = f["images"], f["labels"], tuple(str(c) for c in f["classes"])
                if str(f["digest"]) == _digest(images, labels, classes):
                    return images, labels, classes
        except (OSError, ValueError, KeyError):  # absent or damaged: made again and rewritten
            pass
    images, labels, classes = _make_thumbnails(n, size, seed, photos, min_frac, max_frac, per_class, first)
    if path is not None:
        from models.atomic import atomic_write

        buf = io.BytesIO()
        np.savez(buf, images=images, labels=labels, classes=np.array(classes, dtype=str),
                 digest=np.array(_digest(images, labels, classes)))
        try:
            atomic_write(path, lambda f: f.write(buf.getvalue()))
        except OSError:  # a read-only cache: the set is still made
            pass
    return images, labels, classes


def _make_thumbnails(n: int, size: int, seed: int, photos: tuple[str, ...], min_frac: float, max_frac: float,
                     per_class: int, first: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    images = np.empty((n - first, size, size, 3), dtype=np.uint8)
    photo_of = np.arange(first, n, dtype=np.int64) % len(photos)
    for k, i in enumerate(range(first, n)):
        rng = pcg64(seed, i)
        images[k] = thumbnail(load_photo(photos[photo_of[k]]), size, rng, min_frac, max_frac)
    classes = tuple("+".join(photos[c:c + per_class]) for c in range(0, len(photos), per_class))
    return images, photo_of // per_class, classes


# --- real data ------------------------------------------------------------------------------------

class DatasetFormatError(ValueError):
    """A dataset path that is missing or not in the expected layout; the message names both."""


CIFAR_LAYOUT = ("a folder with CIFAR's python pickle batches: data_batch_1..5 and test_batch (CIFAR-10, "
                "key b'labels') or train and test (CIFAR-100, key b'fine_labels'), each a dict with b'data' "
                "(N, 3072) uint8")


def load_cifar(folder: str | Path, split: str = "train") -> ImageSet:
    """CIFAR-10 or CIFAR-100 from the official python pickle batches (cifar-10-batches-py/ or cifar-100-python/)."""
    folder = Path(folder)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    c10 = [folder / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [folder / "test_batch"]
    c100 = [folder / split]
    files = c10 if all(p.exists() for p in c10) else c100 if c100[0].exists() else None
    if files is None:
        some = [p.name for p in c10 if p.exists()]
        missing = f" (CIFAR-10 batches missing: {', '.join(p.name for p in c10 if not p.exists())})" if some else ""
        raise DatasetFormatError(f"{folder}: no CIFAR {split} batches found{missing}; expected {CIFAR_LAYOUT}")
    images, labels = [], []
    for path in files:
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"])
            lab = batch.get(b"labels", batch.get(b"fine_labels"))
            if lab is None:
                raise KeyError(f"no b'labels' or b'fine_labels' key; keys {sorted(batch)}")
            if data.dtype != np.uint8:  # a cast would wrap values above 255 and make floats in [0, 1] black
                raise ValueError(f"b'data' is {data.dtype}, not uint8")
            if data.ndim != 2 or data.shape[1] != 3072 or len(lab) != len(data):
                raise ValueError(f"b'data' of shape {data.shape} with {len(lab)} labels")
        except (OSError, pickle.UnpicklingError, KeyError, TypeError, AttributeError, EOFError, ValueError) as e:
            raise DatasetFormatError(f"{path}: not a CIFAR pickle batch ({e}); expected {CIFAR_LAYOUT}") from e
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(lab, dtype=np.int64))
    return ImageSet(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))


NPZ_LAYOUT = "an .npz with key 'samples' (N, H, W, 3) uint8 and optionally 'labels' (N,) integers"


def load_npz(path: str | Path) -> ImageSet:
    """EDM's dataset/sample format (`samples`, NHWC uint8), as the paper's code reads it."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            images = z["samples"]
            labels = z["labels"].astype(np.int64) if "labels" in z.files else None
    except (OSError, KeyError, ValueError) as e:
        raise DatasetFormatError(f"{path}: cannot read ({e}); expected {NPZ_LAYOUT}") from e
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DatasetFormatError(f"{path}: 'samples' is {images.dtype} {images.shape}; expected {NPZ_LAYOUT}")
    if labels is not None and labels.shape != (len(images),):
        raise DatasetFormatError(f"{path}: 'labels' has shape {labels.shape} for {len(images)} samples; "
                                 f"expected {NPZ_LAYOUT}")
    return ImageSet(images, labels)


def save_npz(path: str | Path, images: ImageSet) -> Path:
    """Write `images` in the format `load_npz` reads, atomically."""
    from models.atomic import atomic_write

    arrays = {"samples": images.images} | ({} if images.labels is None else {"labels": images.labels})
    return atomic_write(path, lambda f: np.savez(f, **arrays))


FOLDER_LAYOUT = ("a folder of 8-bit .png/.jpg/.bmp images of one size, either directly inside it (no labels) or in "
                 "one sub-folder per class (label = sub-folder, in sorted order; names starting with '.' are "
                 "left out)")
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")  # PIL modes convert("RGB") keeps


def load_folder(folder: str | Path) -> ImageSet:
    """A folder of images; one sub-folder per class gives labels."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetFormatError(f"{folder}: not a folder; expected {FOLDER_LAYOUT}")
    exts = {".png", ".jpg", ".jpeg", ".bmp"}

    def listed(where: Path) -> list[Path]:  # hidden entries (.ipynb_checkpoints, .DS_Store) are no data
        return sorted(p for p in where.iterdir() if not p.name.startswith("."))

    classes = [p.name for p in listed(folder) if p.is_dir()]
    loose = [p.name for p in listed(folder) if p.is_file() and p.suffix.lower() in exts]
    if classes and loose:  # a label per sub-folder leaves the loose images without one
        raise DatasetFormatError(f"{folder}: images beside class sub-folders ({', '.join(loose[:3])} beside "
                                 f"{', '.join(classes[:3])}); expected {FOLDER_LAYOUT}")
    entries = ([(p, k) for k, c in enumerate(classes) for p in listed(folder / c) if p.suffix.lower() in exts]
               if classes else [(folder / p, None) for p in loose])
    empty = [c for k, c in enumerate(classes) if not any(label == k for _, label in entries)]
    if empty:  # an empty class would take a label and shift the labels of the classes after it
        raise DatasetFormatError(f"{folder}: class sub-folders without images: {', '.join(empty)}; expected "
                                 f"{FOLDER_LAYOUT}")
    if not entries:
        raise DatasetFormatError(f"{folder}: no images found; expected {FOLDER_LAYOUT}")
    images = []
    for p, _ in entries:
        try:
            with Image.open(p) as im:
                if im.mode not in EIGHT_BIT_MODES:  # 16-bit or float pixels: convert("RGB") clips them to 255
                    raise DatasetFormatError(f"{p}: PIL mode {im.mode!r} is not 8-bit (modes read: "
                                             f"{', '.join(EIGHT_BIT_MODES)}); convert it to 8-bit first")
                images.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError
            if isinstance(e, DatasetFormatError):
                raise
            raise DatasetFormatError(f"{p}: not a readable image ({type(e).__name__}: {e}); expected "
                                     f"{FOLDER_LAYOUT}") from e
    shapes = {im.shape for im in images}
    if len(shapes) != 1:
        raise DatasetFormatError(f"{folder}: images of several sizes {sorted(shapes)[:4]}; expected {FOLDER_LAYOUT}")
    labels = np.asarray([k for _, k in entries], dtype=np.int64) if classes else None
    return ImageSet(np.stack(images), labels, tuple(classes) if classes else None)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """Model output in [-1, 1], NCHW, to uint8 NHWC: round((x + 1) * 127.5), clipped (inverse of `as_tensor`), in
    float64 (the samplers' precision; rounded in float32, 4 of 614,400 pixels of float64 values fell on the other side
    of a half-step). NaN or infinite values are refused: clipping turned NaN into black and infinity into white
    without a word."""
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{bad} image values are NaN or infinite; a sampler or decoder diverged")
    return ((x.detach().double().cpu() + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()

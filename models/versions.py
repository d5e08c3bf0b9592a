"""Installed package versions and the suite's own code, as a run's metadata and the keys of what is kept between
runs record them."""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata as md
import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional

DIGEST_FILE = "code-digests.json"
KEPT_DIGESTS = 1024  # past this many entries (about 20 edits of every file), a write keeps only this process's
_kept: dict = {"file": None, "digests": {}, "used": set()}  # the folder's digest file, once a run names one


def keep_digests(folder: Optional[str | Path]) -> None:
    """Keep each source text's tree digest in `folder`/code-digests.json across processes: parsing and dumping the
    suite's 52 files takes about 0.3 s (measured), which every warm run would otherwise pay. Entries are keyed by
    the text's sha256 and the Python version (ast's dump differs between versions), so an edited file is simply
    not found. The file is written only into a folder that exists (a run's cache folder is made by its store, not
    here). None stops keeping them."""
    _kept["file"] = None if folder is None else Path(folder) / DIGEST_FILE
    _kept["digests"], _kept["used"] = {}, set()
    if _kept["file"] is not None and _kept["file"].is_file():
        try:
            found = json.loads(_kept["file"].read_text())
        except (OSError, ValueError):  # a damaged file is remade: it only ever saves time
            found = {}
        _kept["digests"] = found if isinstance(found, dict) else {}


@contextmanager
def digests_kept_in(folder: Optional[str | Path]) -> Iterator[None]:
    """keep_digests(folder) for the block, then what was kept before (a run's folder is not left to later calls)."""
    saved = dict(_kept)
    keep_digests(folder)
    try:
        yield
    finally:
        _kept.clear()
        _kept.update(saved)


def source_digest(paths: Iterable[str | Path]) -> str:
    """sha256 over Python files' syntax trees without their docstrings (comments and layout are not in a tree): what
    the code does, which an edit of its documentation leaves as it is. Files are named by folder and file name."""
    h = hashlib.sha256()
    added = False
    for path in sorted(Path(p) for p in paths):
        source = path.read_text()
        key = hashlib.sha256(f"{sys.version_info[0]}.{sys.version_info[1]}\0{source}".encode()).hexdigest()
        digest = _kept["digests"].get(key)
        if not (isinstance(digest, str) and len(digest) == 64):
            digest = hashlib.sha256(_tree(source, str(path))).hexdigest()
            _kept["digests"][key] = digest
            added = True
        _kept["used"].add(key)
        h.update(f"{path.parent.name}/{path.name}".encode() + b"\0" + digest.encode() + b"\0")
    if added and _kept["file"] is not None and _kept["file"].parent.is_dir():
        from models.atomic import atomic_write

        if len(_kept["digests"]) > KEPT_DIGESTS:  # the texts of earlier edits: not asked for again
            _kept["digests"] = {k: v for k, v in _kept["digests"].items() if k in _kept["used"]}
        try:  # several processes may write at once: the last one's file stands, the others' entries are remade
            atomic_write(_kept["file"], lambda f: f.write(json.dumps(_kept["digests"], sort_keys=True).encode()))
        except OSError:
            pass
    return h.hexdigest()


def _tree(source: str, filename: str) -> bytes:
    """A file's syntax tree without docstrings, dumped (a syntax error names `filename`). source_digest keeps each
    text's sha256 of it within a process, and across processes once keep_digests names a folder: ast's parse and
    dump take about 6 ms a file (measured)."""
    tree = ast.parse(source, filename=filename)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body and \
                isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and \
                isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


def package_versions(packages: Iterable[str]) -> dict[str, Optional[str]]:
    """Each package's installed version; None for one that is not installed."""
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return versions


def cpu_identity() -> dict:
    """The CPU a computation runs on, as far as its low bits go: its model name and the instruction set torch's
    kernels dispatch to, with the variables that cap it or oneDNN's where they are set (oneDNN's convolutions round
    differently per instruction set: a 64-channel 3 x 3 convolution on one thread gave other bits in 94% of its
    outputs, up to 2.7e-5 on outputs up to 24, under ONEDNN_MAX_CPU_ISA=AVX2 than under the AVX-512 default of an
    AMD EPYC, torch 2.13). Part of a CPU run's store keys and embedding-cache keys, as `gpu_identity` is of a GPU
    run's: a cache carried to another CPU makes its sets again rather than serve the first CPU's."""
    return dict(_cpu_identity())


@functools.lru_cache(maxsize=1)
def _cpu_identity() -> dict:
    import os
    import platform

    import torch

    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA") if k in os.environ}
    return {"name": name, "capability": torch.backends.cpu.get_cpu_capability()} | caps


def tf32_settings() -> dict:
    """torch's TF32 settings of cuDNN convolutions and of matmuls, and NVIDIA's driver-level override when it is set
    (it acts below torch's). Read through torch's `fp32_precision` where it has one: that reflects the legacy
    `allow_tf32` flags too, while reading a legacy flag raises once the new setting was used (torch 2.9 on)."""
    import os

    import torch

    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        flags = {"conv": torch.backends.cudnn.conv.fp32_precision, "matmul": torch.backends.cuda.matmul.fp32_precision}
    else:
        flags = {"cudnn": torch.backends.cudnn.allow_tf32, "matmul": torch.backends.cuda.matmul.allow_tf32}
    override = os.environ.get("NVIDIA_TF32_OVERRIDE")
    return flags | ({"override": override} if override is not None else {})


def gpu_identity(device) -> dict:
    """The GPU a computation runs on, as far as its low bits go: the device's model and compute capability (which
    select other kernels) and the CUDA and cuDNN releases torch runs with (a cuDNN wheel may change under one torch
    version). Part of a GPU run's store keys and metadata, so that a cache shared by runners of two GPU models never
    serves one's samples to the other."""
    import torch

    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return {"name": torch.cuda.get_device_name(index), "capability": list(torch.cuda.get_device_capability(index)),
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}

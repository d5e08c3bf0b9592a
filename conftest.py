"""Options, markers and skip logic for the whole suite, in one place."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Model hubs are never reached from the suite: loaders must fail fast with a clear message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = ["fixtures.devices", "fixtures.descriptor", "fixtures.zoo", "fixtures.samples", "fixtures.results",
                  "fixtures.measure"]

DEFAULT_NOISES = 128  # a CPU run; the paper uses 10,000 (Sec. 2.1), pass --noises 10000 on a GPU
DEFAULT_CACHE = ".cache/samenoise"
DEFAULT_RESULTS = "reports/out/results.json"

MARKERS = {
    "gpu": "needs a CUDA device (skipped without one)",
    "weights": "needs real published checkpoints from a local path (skipped when absent)",
    "slow": "long sweeps or training; deselect with -m 'not slow'",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    _check_options(config)
    if not hasattr(config, "workerinput"):  # the controller (or the only process) writes the results file
        from fixtures.results import ResultsWriter

        config.pluginmanager.register(ResultsWriter(config), "samenoise-results")


def _check_options(config: pytest.Config) -> None:
    """Bad options stop the run before collection, with what is wrong and what is valid."""
    if config.getoption("--noises") < 1:
        raise pytest.UsageError(f"--noises must be at least 1, got {config.getoption('--noises')}")
    for name in ("--golden-rp", "--golden-mae"):
        if not 0 <= config.getoption(name) <= 1:
            raise pytest.UsageError(f"{name} is a score bar between 0 and 1, got {config.getoption(name)}")
    cache = Path(config.getoption("--cache-dir"))
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, prefix=".write-test-"):
            pass
    except OSError as e:
        raise pytest.UsageError(f"--cache-dir {cache} cannot be written: {e.strerror or e}") from e
    from fixtures.zoo import pseudo_models, read_run_zoo
    from models.zoo import ZooError

    try:
        zoo = read_run_zoo(config)
    except ZooError as e:
        raise pytest.UsageError(str(e)) from e
    wanted = [m for m in (config.getoption("--models") or "").split(",") if m]
    valid = sorted(zoo) + list(pseudo_models())
    unknown = [m for m in wanted if m not in valid]
    if unknown:
        raise pytest.UsageError(f"--models: unknown model names {unknown}; valid names: {', '.join(valid)}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("samenoise")
    group.addoption("--device", default="cpu", help="torch device for sampling (cpu, cuda, cuda:1, ...)")
    group.addoption("--descriptor", default="sscd-int8",
                    help="similarity descriptor: sscd-int8 (offline default), sscd-mixup, sscd-large")
    group.addoption("--descriptor-path", default=None, help="weights file of the descriptor (TorchScript SSCD)")
    group.addoption("--descriptor-size", type=int, default=None,
                    help="descriptor input size in pixels (default: 224 for sscd-int8, 320 for TorchScript)")
    group.addoption("--noises", type=int, default=DEFAULT_NOISES,
                    help=f"noises per case from the shared bank (default {DEFAULT_NOISES}; the paper uses 10000)")
    group.addoption("--zoo", action="append", default=[], metavar="FILE",
                    help="a TOML zoo file whose [models.<name>] entries are added to the embedded zoo (repeatable)")
    group.addoption("--models", default="", metavar="NAMES",
                    help="comma-separated model names: run only the cases whose models are all among them")
    group.addoption("--cache-dir", default=DEFAULT_CACHE, help="sample store, embeddings and trained sweep models")
    group.addoption("--results", default=DEFAULT_RESULTS, help="the run's results JSON file")
    group.addoption("--golden", action="append", default=[], metavar="FILE",
                    help="golden file(s) to check --candidate against (bench/test_regression.py)")
    group.addoption("--candidate", default=None, metavar="MODEL",
                    help="zoo entry name or suite checkpoint folder checked against the golden file(s)")
    group.addoption("--update-golden", action="store_true",
                    help="record the golden file(s) from --candidate instead of comparing")
    group.addoption("--golden-rp", type=float, default=0.6, help="RP score bar of the regression case (default 0.6)")
    group.addoption("--golden-mae", type=float, default=0.6, help="MAE score bar of the regression case (default 0.6)")
    group.addoption("--report-dir", default="reports/out",
                    help="folder for the HTML report built after the run ('' to skip it)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    device = config.getoption("--device")
    has_gpu = torch.cuda.is_available() and device.startswith("cuda")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device: run on a GPU machine with --device cuda")
    wanted = {m for m in (config.getoption("--models") or "").split(",") if m}
    keep, drop = [], []
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
        if wanted and case is not None and not set(case.models) <= wanted:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep

"""Options, markers and skip logic for the whole suite, in one place."""
from __future__ import annotations

import os

import pytest

# Model hubs are never reached from the suite: loaders must fail fast with a clear message.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytest_plugins = ["fixtures.devices", "fixtures.descriptor"]

MARKERS = {
    "gpu": "needs a CUDA device (skipped without one)",
    "weights": "needs real published checkpoints from a local path (skipped when absent)",
    "slow": "long sweeps or training; deselect with -m 'not slow'",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("samenoise")
    group.addoption("--device", default="cpu", help="torch device for sampling (cpu, cuda, cuda:1, ...)")
    group.addoption("--descriptor", default="sscd-int8",
                    help="similarity descriptor: sscd-int8 (offline default), sscd-mixup, sscd-large")
    group.addoption("--descriptor-path", default=None, help="weights file of the descriptor (TorchScript SSCD)")
    group.addoption("--descriptor-size", type=int, default=None,
                    help="descriptor input size in pixels (default: 224 for sscd-int8, 320 for TorchScript)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    device = config.getoption("--device")
    has_gpu = torch.cuda.is_available() and device.startswith("cuda")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device: run on a GPU machine with --device cuda")
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)

"""Reference problems with closed-form answers, and a pytest run in a subprocess, shared by the suite's own tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def pytest_run(*args, cwd=ROOT, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m pytest ARGS` from the checkout's root, offline, without pytest's cache folder."""
    env = dict(os.environ, HF_HUB_OFFLINE="1") | (env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


class GaussianData:
    """Data ~ N(mu, c^2 I). In sigma-space x ~ N(mu, (c^2 + sigma^2) I), so
    D(x; sigma) = mu + c^2 / (c^2 + sigma^2) (x - mu), and the probability-flow ODE has the exact
    solution x(sigma) = mu + sqrt((c^2 + sigma^2) / (c^2 + sigma_0^2)) (x(sigma_0) - mu)."""

    def __init__(self, mu: float = 0.3, c: float = 0.5):
        self.mu, self.c = mu, c

    def __call__(self, x, sigma, label=None):
        sigma = torch.as_tensor(sigma, dtype=x.dtype)
        return self.mu + self.c**2 / (self.c**2 + sigma**2) * (x - self.mu)

    def flow(self, x, sigma_from, sigma_to):
        ratio = (self.c**2 + torch.as_tensor(sigma_to) ** 2) / (self.c**2 + torch.as_tensor(sigma_from) ** 2)
        return self.mu + torch.sqrt(ratio) * (x - self.mu)


class TinyEpsNet(torch.nn.Module):
    """A small deterministic (x, t[, label]) network: enough to exercise every wrapper path."""

    def __init__(self, channels: int = 3, num_classes: int | None = None, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        self.embed = torch.nn.Embedding(num_classes, channels) if num_classes else None

    def forward(self, x, t, label=None):
        h = self.conv(x) + torch.sin(t.float().reshape(-1, 1, 1, 1) / 100)
        if label is not None:
            h = h + self.embed(label)[:, :, None, None]
        return torch.tanh(h)


class Counting:
    """Counts denoiser evaluations per call (for exact-NFE checks)."""

    def __init__(self, D):
        self.D, self.calls = D, 0

    def __call__(self, x, sigma, label=None):
        self.calls += 1
        return self.D(x, sigma, label)


def proportion(value: float, n: int, worst=(), first: int = 0):
    """A measured proportion: round(value * n) of n per-noise 0/1 values (noise ids first..first + n - 1) are 1."""
    from fixtures.results import Measured

    k = round(value * n)
    return Measured(k / n, n, list(worst), keys=list(range(first, first + n)), units=[1.0] * k + [0.0] * (n - k))


def edm_stand_in(folder: Path, nets_py: str) -> None:
    """A stand-in for NVlabs' `dnnlib` and `torch_utils` packages in `folder` (to put on sys.path), with `nets_py` as
    torch_utils/nets.py: what unpickling an EDM pickle imports."""
    for pkg in ("dnnlib", "torch_utils"):
        (folder / pkg).mkdir()
        (folder / pkg / "__init__.py").write_text("")
    (folder / "torch_utils" / "nets.py").write_text(nets_py)


def frozen_copy(cfg):
    """A training config with learning rate 0: the same batches and noise step for step, and no update (the baseline
    a "loss falls" test compares with). A run's own config check refuses lr 0, so it is set after construction."""
    import dataclasses

    out = dataclasses.replace(cfg)
    out.lr = 0.0
    return out

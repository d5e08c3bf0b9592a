"""Throughput of the samplers and of the optimal denoiser (pytest-benchmark; figures, not asserts)."""
from __future__ import annotations

import time

import pytest
import torch

from fixtures.benchmarks import record, seconds
from fixtures.devices import synchronize
from models.denoisers import wrap
from models.kernels import make_kernel
from models.optimal import OptimalDenoiser
from models.samplers import SAMPLERS
from models.generate import solve
from models.unet import build_unet

BATCH = 16
CASES = [pytest.param(name, nfe, id=f"{name}@{nfe}") for name in sorted(SAMPLERS) if name != "consistency"
         for nfe in (10, 35)] + [pytest.param("consistency", 1, id="consistency@1")]  # one-step only


@pytest.fixture(scope="module")
def small_unet(device):
    torch.manual_seed(0)
    net = build_unet(image_size=16, base_channels=32).to(device).eval()
    return wrap(net, "vp", "eps", time_scale=999, sample_shape=(3, 16, 16))


@pytest.mark.parametrize("sampler, nfe", CASES)
def test_sampler_throughput(benchmark, small_unet, device, sampler, nfe):
    kernel = make_kernel("vp")
    x = kernel.initial_state(torch.randn(BATCH, 3, 16, 16, dtype=torch.float64, device=device))

    def run():
        out = solve(small_unet, x, kernel, sampler, nfe)
        synchronize(device)
        return out

    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(nfe=out.nfe, batch=BATCH, threads=torch.get_num_threads(), device=str(device))
    record(benchmark, images_per_s=lambda t: BATCH / t, evaluations_per_s=lambda t: BATCH * out.nfe / t)
    assert torch.isfinite(out.x).all()


N, DIM, QUERY = 50_000, 3 * 32 * 32, 64  # CIFAR-10's size (issue: N = 50,000, d = 3,072, batch 64)


def _best_time(fn, device, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def test_optimal_denoiser_throughput(benchmark, device):
    g = torch.Generator().manual_seed(0)
    data = torch.empty(N, DIM).uniform_(-1, 1, generator=g).to(device)
    x = torch.randn(QUERY, DIM, generator=g).to(device)
    D = OptimalDenoiser(data, batch_size=QUERY, device=device)
    sigma = torch.tensor(1.0, dtype=torch.float64)

    def run():
        out = D(x, sigma)
        synchronize(device)
        return out

    out = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    flops = 4 * QUERY * N * DIM  # two products per dataset row: logits x.y and weights @ y
    benchmark.extra_info.update(n=N, d=DIM, batch=QUERY, dtype="float32", threads=torch.get_num_threads(),
                                device=str(device))
    if seconds(benchmark) is not None:
        matmul_s = _best_time(lambda: x @ data.T, device)
        record(benchmark, "min", gflops=lambda t: flops / t / 1e9,
               matmul_gflops=lambda t: 2 * QUERY * N * DIM / matmul_s / 1e9,
               # Goal (issue): >= 0.6 of a plain float32 matmul's FLOP rate in the same run.
               fraction_of_matmul=lambda t: (flops / t) / (2 * QUERY * N * DIM / matmul_s))
    assert torch.isfinite(out).all()

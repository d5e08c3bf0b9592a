"""Descriptor throughput in images/s (pytest-benchmark; figures, not asserts)."""
from __future__ import annotations

import time

import pytest
import torch

from fixtures.benchmarks import record, seconds
from models.datasets import embedded_photos
from models.descriptor import OnnxSSCD, prepare

BATCH = 64


@pytest.mark.parametrize("size", [None, 224], ids=["native-32px", "224px"])
def test_descriptor_throughput(benchmark, make_run_descriptor, size):
    images = embedded_photos(BATCH, size=32).images
    descriptor = make_run_descriptor(size=size)
    out = benchmark.pedantic(descriptor.embed, args=(images,), rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(batch=BATCH, size=size or 32, threads=torch.get_num_threads(),
                                descriptor=descriptor.identity)
    record(benchmark, images_per_s=lambda t: BATCH / t)
    if isinstance(descriptor, OnnxSSCD) and seconds(benchmark) is not None:
        ready = prepare(images, size)  # the same batch through onnxruntime alone, already resized
        best = min(_timed(lambda: descriptor.session.run(None, {descriptor._input: ready})) for _ in range(5))
        # best-of-5 against best-of-5; > 1 would mean the suite is faster than onnxruntime alone
        record(benchmark, "min", onnxruntime_images_per_s=lambda t: BATCH / best,
               ratio_to_onnxruntime=lambda t: best / t)
    assert out.shape == (BATCH, 512) and torch.allclose(out.norm(dim=1), torch.ones(BATCH))


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0

"""Descriptor throughput in images/s (pytest-benchmark; figures, not asserts)."""
from __future__ import annotations

import pytest
import torch

from fixtures.benchmarks import interleaved, ratio, ratio_interval, record, spread
from models.datasets import embedded_photos
from models.descriptor import OnnxSSCD, prepare

BATCH = 64


@pytest.mark.parametrize("size", [None, 224], ids=["native-32px", "224px"])
def test_descriptor_throughput(benchmark, make_run_descriptor, size):
    images = embedded_photos(BATCH, size=32).images
    descriptor = make_run_descriptor(size=size)
    # two untimed calls: a TorchScript descriptor (the GPU's) profiles its graph on the first call and optimizes it on
    # the second, so one warm-up would time that optimization as a round
    out = benchmark.pedantic(descriptor.embed, args=(images,), rounds=5, iterations=1, warmup_rounds=2)
    benchmark.extra_info.update(batch=BATCH, size=size or 32, threads=torch.get_num_threads(),
                                descriptor=descriptor.identity)
    record(benchmark, images_per_s=lambda t: BATCH / t)
    if isinstance(descriptor, OnnxSSCD):
        ready = prepare(images, size)  # the same batch through onnxruntime alone, already resized
        times = interleaved({"embed": lambda: descriptor.embed(images),
                             "onnxruntime": lambda: descriptor.session.run(None, {descriptor._input: ready})},
                            until=[("onnxruntime", "embed")])  # 7 rounds at least, as every ratio case
        # the median of per-round ratios; > 1 would mean the suite is faster than onnxruntime alone
        benchmark.extra_info.update(onnxruntime_images_per_s=BATCH / min(times["onnxruntime"]),
                                    rounds=len(times["embed"]),
                                    ratio_to_onnxruntime=ratio(times, "onnxruntime", "embed"),
                                    ratio_interval=ratio_interval(times, "onnxruntime", "embed"),
                                    ratio_range=spread(times, "onnxruntime", "embed"))
    # 512 values a row for sscd-int8 and sscd-mixup, 1024 for sscd-large
    assert out.shape[0] == BATCH and out.ndim == 2 and torch.allclose(out.norm(dim=1), torch.ones(BATCH))

"""Training steps/s and sampling images/s per embedded architecture (pytest-benchmark; figures, not asserts)."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import torch

from fixtures.benchmarks import record, timed_rounds
from fixtures.devices import synchronize
from models.noise import NoiseBank
from models.generate import generate
from models.training import TrainConfig, Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "models" / "embedded" / "configs"
ARCHS = ("unet16-edm-m64", "unet32-edm-m64", "uvit-edm-m64")  # the embedded zoo's three architectures
BATCH = 64


def config(name: str) -> TrainConfig:
    return TrainConfig(**tomllib.loads((CONFIGS / f"{name}.toml").read_text()) | {"batch_size": BATCH})


@pytest.mark.parametrize("name", ARCHS)
def test_training_step_throughput(benchmark, tmp_path, device, name):
    trainer = Trainer(config(name), tmp_path, device)

    def step():  # what Trainer.run does each step: the learning rate, the optimizer step and the EMA update
        trainer.train_step()
        synchronize(device)

    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(batch=BATCH, threads=torch.get_num_threads(), device=str(device),
                                parameters=sum(p.numel() for p in trainer.net.parameters()))
    record(benchmark, steps_per_s=lambda t: 1 / t)


@pytest.mark.parametrize("name", ARCHS)
def test_sampling_throughput(benchmark, tmp_path, device, workers, runner, micro_batch, name):
    """The suite's sampling path: the network traced (or compiled), four micro-batches of the run's rows on `workers`
    threads."""
    trainer = Trainer(config(name), tmp_path, device)
    trainer.net.eval()
    D = trainer.D.use(runner)  # the weights no longer change
    noises = 4 * micro_batch
    bank = NoiseBank.draw(0, (3, 16, 16), n=noises)

    def run():
        out = generate(D, D.kernel, bank, sampler="dpm3", nfe=20, device=device, workers=workers,
                       micro_batch=micro_batch)
        synchronize(device)
        return out

    benchmark.pedantic(run, rounds=timed_rounds(device, 2), iterations=1, warmup_rounds=1)  # the warm-up traces
    benchmark.extra_info.update(batch=noises, micro_batch=micro_batch, nfe=20, sampler="dpm3", workers=workers,
                                runner=runner, device=str(device),
                                traces_refused=sorted(set(D.runner.refused.values())))  # eager calls, and why
    record(benchmark, images_per_s=lambda t: noises / t)

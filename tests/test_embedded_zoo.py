"""Every embedded checkpoint loads through its zoo entry and samples finite images of the right shape;
the embedded zoo stays within its size budget and records how each model was made."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models.noise import NoiseBank
from models.training import PACKED_LOSS_LOG, read_losses
from models.generate import generate
from models.zoo import load_denoiser, read_zoo

ROOT = Path(__file__).resolve().parents[1] / "models" / "embedded"
ZOO = read_zoo(ROOT / "zoo.toml")
BUDGET_BYTES = 30 * 2**20  # issue #4: the embedded zoo is at most 30 MB


@pytest.mark.parametrize("name", sorted(ZOO))
def test_embedded_checkpoint_loads_and_samples(name):
    entry = ZOO[name]
    D = load_denoiser(entry)
    bank = NoiseBank.draw(0, entry.sample_shape, n=2)
    label = entry.num_classes - 1 if entry.conditional else None  # the last class
    out = generate(D, D.kernel, bank, sampler=entry.sampler, nfe=entry.nfe, label=label, micro_batch=2)
    assert out.x.shape == (2, *entry.sample_shape) and torch.isfinite(out.x).all()
    meta = json.loads((Path(entry.source) / "samenoise.json").read_text())
    config = (ROOT / "configs" / f"{name}.toml").read_text()
    assert meta["dataset_hash"] and f"dataset_size = {meta['config']['dataset_size']}" in config
    # the zoo ships each loss log xz-packed (models/training.py, PACKED_LOSS_LOG), every step of it
    assert (Path(entry.source) / PACKED_LOSS_LOG).is_file() and (Path(entry.source) / "train_time.json").is_file()
    assert len(read_losses(entry.source)) == meta["steps"]


def test_embedded_zoo_fits_its_budget():
    size = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file())
    assert size <= BUDGET_BYTES, f"embedded zoo is {size / 2**20:.1f} MB, budget {BUDGET_BYTES / 2**20:.0f} MB"


def test_every_config_has_an_entry_and_every_entry_a_config():
    assert {p.stem for p in (ROOT / "configs").glob("*.toml")} == set(ZOO)


def test_every_checkpoint_folder_belongs_to_an_entry():
    """A replaced model's folder left behind would count against the budget and ship unused."""
    folders = {p.resolve() for p in ROOT.iterdir() if p.is_dir() and p.name != "configs"}
    assert folders == {Path(entry.source).resolve() for entry in ZOO.values()}


def test_the_sweep_samples_a_shipped_checkpoint_of_its_own_config(tmp_path):
    """The slow sweep's model at a size whose config the zoo ships trained (the m64 and l2048 entries share the sweep's
    recipe) is that checkpoint, not a second training of the same config; another size has no twin, and neither has
    4 images: the m4 entries add the D* target to the recipe."""
    import tomllib

    from cases.names import sweep
    from fixtures.zoo import SWEEP_RECIPE, ModelLoader, embedded_twin

    loader = ModelLoader(ZOO, torch.device("cpu"), tmp_path, runner="eager")
    for size, shipped in ((64, "unet16-edm-m64"), (2048, "unet16-edm-l2048")):
        assert loader(sweep("unet16-edm", size)).fingerprint == loader(shipped).fingerprint
    assert not any(tmp_path.iterdir())  # nothing was trained into the cache
    recipe = tomllib.loads((ROOT / "configs" / f"unet16-edm-{SWEEP_RECIPE}.toml").read_text())
    for size in (4, 16):
        assert embedded_twin(recipe | {"dataset_size": size}) is None
    assert embedded_twin(recipe | {"dataset_size": 64, "seed": 2}) is None
    for family in ("unet16-edm", "unet32-edm", "uvit-edm"):
        recipe = tomllib.loads((ROOT / "configs" / f"{family}-{SWEEP_RECIPE}.toml").read_text())
        m4 = tomllib.loads((ROOT / "configs" / f"{family}-m4.toml").read_text())
        # the sweep's recipe but for the target and the steps (20,000; 10,000 and 6,000 in the recipe: README,
        # "Embedded zoo")
        assert m4 == recipe | {"dataset_size": 4, "target": "optimal", "steps": 20000}, family


def test_a_sweep_model_whose_shipped_twin_is_missing_is_an_incomplete_checkout_not_a_skip(tmp_path, monkeypatch):
    """The sweep's 64-image model is the shipped unet16-edm-m64: if that checkpoint is missing the case errors (as the
    shipped model's own cases do), it is not skipped as an absent real checkpoint."""
    from cases.names import sweep
    from fixtures import zoo as fixtures_zoo
    from fixtures.zoo import ModelLoader
    from models.zoo import Unavailable, ZooError

    def absent(entry, device="cpu", dtype=None):
        raise Unavailable(f"zoo entry {entry.name!r}: checkpoint folder {entry.source} has no config.json")

    monkeypatch.setattr(fixtures_zoo, "check_available", absent)  # a suite checkpoint's files are looked for first
    monkeypatch.setattr(fixtures_zoo, "load_denoiser", absent)
    loader = ModelLoader(ZOO, torch.device("cpu"), tmp_path, runner="eager")
    with pytest.raises(ZooError, match=r"embedded zoo entry 'unet16-edm-m64'.*the checkout is incomplete") as err:
        loader(sweep("unet16-edm", 64))
    assert not isinstance(err.value, Unavailable)


@pytest.mark.parametrize("name", sorted(ZOO))
def test_each_checkpoint_is_what_its_config_and_description_say(name):
    """A checkpoint retrained without its config file (or the other way round) is caught: the config recorded in
    samenoise.json is the config file's, and the zoo entry's description and dataset name give its step count and
    training-set size."""
    import re
    import tomllib
    from dataclasses import asdict

    from models.training import TrainConfig

    entry = ZOO[name]
    # a field added to TrainConfig after a checkpoint was made is absent from its record and takes the default, which
    # reproduces the earlier behaviour
    recorded = asdict(TrainConfig(**json.loads((Path(entry.source) / "samenoise.json").read_text())["config"]))
    config = asdict(TrainConfig(**tomllib.loads((ROOT / "configs" / f"{name}.toml").read_text())))
    assert recorded == config, {k: (recorded.get(k), v) for k, v in config.items() if recorded.get(k) != v}
    steps = re.search(r"(\d+) steps", entry.description)
    size = re.search(r"(\d+) thumbnails", entry.description)
    assert steps and int(steps.group(1)) == config["steps"], (entry.description, config["steps"])
    assert size and int(size.group(1)) == config["dataset_size"], (entry.description, config["dataset_size"])
    assert entry.dataset.endswith(f"-{config['dataset_size']}"), (entry.dataset, config["dataset_size"])
    assert entry.kernel_options == config["kernel_options"], (entry.kernel_options, config["kernel_options"])


def _readme_convergence_rows() -> dict[str, list[str]]:
    """The README's convergence table (the one headed 'loss, last 10%'): zoo name -> [loss, slope, last doubling]
    cells, a row of two names ("`a` / `b`") split into one row each."""
    lines = (ROOT.parents[1] / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model | steps | loss, last 10% |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("| `"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        names = [n.strip(" `") for n in cells[0].split(" / ")]
        for k, name in enumerate(names):
            rows[name] = [c.split(" / ")[k] if len(names) > 1 else c for c in cells[2:5]]
    return rows


def test_the_readme_convergence_table_matches_the_shipped_loss_logs():
    """Every zoo model has a row in the README's convergence table, and its loss over the last 10%, the slope's
    interval and the change over the last doubling are what models.convergence computes from the shipped log
    (4 decimals, as printed), so that a retrained model cannot leave stale figures behind."""
    from models.convergence import last_doubling, tail_slope

    rows = _readme_convergence_rows()
    assert sorted(rows) == sorted(ZOO)
    for name, (loss, slope, doubling) in rows.items():
        losses = read_losses(ZOO[name].source)
        tail = losses[max(1, int(len(losses) * 0.9)):]
        assert loss.startswith(f"{sum(tail) / len(tail):.4f}"), (name, loss)
        s = tail_slope(losses)
        assert slope == f"{s.value:+.4f} [{s.low:+.4f}, {s.high:+.4f}] {s.verdict}", (name, slope)
        if not doubling.startswith("- "):  # the distilled model's windows lie in different rounds: not given
            d = last_doubling(losses)
            assert doubling == f"{d.value:+.4f} [{d.low:+.4f}, {d.high:+.4f}] {d.verdict}", (name, doubling)


@pytest.mark.parametrize("name", sorted(n for n, e in ZOO.items() if e.format == "samenoise"))
def test_a_shipped_checkpoints_key_facts_read_unbuilt_are_those_of_its_built_denoiser(name):
    """A store key is made before the network is built (fixtures/zoo.py, CheckpointModel): its kernel, class count,
    runner and latent flag, read from the entry and config.json, equal the built denoiser's."""
    from fixtures.zoo import CheckpointModel, ModelLoader, _kernel_facts

    m = ModelLoader(ZOO, torch.device("cpu"), Path("/nonexistent"), runner="traced")(name)
    assert isinstance(m, CheckpointModel) and m._D is None
    facts = (_kernel_facts(m.kernel), m.num_classes, m.compiled, m.decodes)
    D = m.D  # built here, and checked against the facts
    assert facts == (_kernel_facts(D.kernel), D.num_classes, False, False) and D.runner.mode == "traced"
    assert (m.num_classes is not None) == ZOO[name].conditional


def test_a_stored_set_is_read_without_building_the_network(tmp_path):
    from cases import Run
    from fixtures.samples import SampleSource
    from fixtures.zoo import ModelLoader
    from models.store import SampleStore

    bank, run = NoiseBank.draw(0, ZOO["unet16-edm-m4"].sample_shape, n=4), Run("unet16-edm-m4", "dpm3", 4)
    made = SampleSource(ModelLoader(ZOO, torch.device("cpu"), tmp_path), SampleStore(tmp_path), "cpu")(run, bank)
    loader = ModelLoader(ZOO, torch.device("cpu"), tmp_path)
    again = SampleSource(loader, SampleStore(tmp_path), "cpu")(run, bank)
    assert loader("unet16-edm-m4")._D is None and again.key == made.key
    assert np.array_equal(again.images, made.images)


def test_a_checkpoint_that_builds_other_than_its_config_read_says_so(monkeypatch):
    from fixtures import zoo as fixtures_zoo
    from fixtures.zoo import ModelLoader
    from models.zoo import ZooError

    monkeypatch.setattr(fixtures_zoo, "read_config", lambda folder: {"num_class_embeds": 7})
    m = ModelLoader(ZOO, torch.device("cpu"), Path("/nonexistent"))("unet16-edm-m4")
    with pytest.raises(ZooError, match=r"zoo entry 'unet16-edm-m4': its checkpoint builds a denoiser with .*None"):
        m.D


def test_the_first_rows_of_a_longer_set_are_the_set_of_fewer_noises_bit_for_bit(tmp_path):
    """Sets of noises 0..n-1 share one store entry across counts (fixtures/samples.py): 8 rows taken from a stored
    16, and 16 made by extending a stored 8, equal sets made afresh at each count, on both architectures and with
    two workers; a bank that is not the seed's first noises (permuted) or a count off the micro-batch keeps a key of
    its own."""
    from cases import Run
    from fixtures.measure import permuted_bank
    from fixtures.samples import SampleSource
    from fixtures.zoo import ModelLoader
    from models.store import SampleStore, key_hash

    for name in ("unet16-edm-m4", "uvit-edm-m4"):
        shape, run = ZOO[name].sample_shape, Run(name, "dpm3", 4)

        def source(folder, micro_batch=4):
            return SampleSource(ModelLoader(ZOO, torch.device("cpu"), tmp_path), SampleStore(tmp_path / folder),
                                "cpu", workers=2, micro_batch=micro_batch)

        fresh = {n: source(f"{name}-fresh{n}")(run, NoiseBank.draw(0, shape, n=n)) for n in (8, 16)}
        shared = source(f"{name}-shared")
        taken = [shared(run, NoiseBank.draw(0, shape, n=n)) for n in (16, 8)]  # 8 from the stored 16
        extended, made = source(f"{name}-extended"), []
        make = extended._make
        extended._make = lambda run, m, bank, *rest: made.append((int(bank.ids[0]), len(bank))) or make(run, m, bank,
                                                                                                      *rest)
        grown = [extended(run, NoiseBank.draw(0, shape, n=n)) for n in (8, 16)]  # 16 from the stored 8 and 8 more
        assert made == [(0, 8), (8, 8)]  # the second set sampled only the noises the first lacked
        for got in taken + grown:
            assert np.array_equal(got.images, fresh[len(got.ids)].images), (name, len(got.ids))
            assert got.bank == NoiseBank.draw(0, shape, n=len(got.ids)).hash  # the bank asked for (results "banks")
        assert len({key_hash(s.key) for s in taken + grown}) == 1
        assert len(list((tmp_path / f"{name}-shared" / "samples").glob("*.npz"))) == 1
        bank = NoiseBank.draw(0, shape, n=8)
        assert not permuted_bank(bank).is_first() and bank.is_first()
        odd = source(f"{name}-odd", micro_batch=3)(run, bank)  # 8 rows in micro-batches of 3: keyed by its count
        assert odd.key["n"] == 8 and odd.key["bank"] == bank.hash


def test_train_all_runs_the_models_named_in_dependency_order_and_times_resumed_runs_whole(tmp_path):
    """Named models ran in the order named (a student before its teacher distilled from the old teacher), and a run
    cut short and resumed recorded only its last part. Run with a stand-in for python that logs what it is asked to
    train, in a scratch folder (the script writes models/embedded/<name> under the folder it runs in)."""
    import subprocess

    script = Path(__file__).resolve().parents[1] / "models" / "embedded" / "train_all.sh"
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    # the stand-in trains for a second; with a file `cut` here it is cut short (exit 130) once, as Ctrl-C would
    (bin_ / "python").write_text('#!/usr/bin/env bash\nif [[ $1 == -m ]]; then sleep 1; '
                                 'if [[ -e cut ]]; then rm cut; exit 130; fi; echo "$4" >> trained.log; '
                                 'mkdir -p "$4/model"; echo w > "$4/model/weights"; fi\n')
    (bin_ / "python").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}")

    def run(*names):
        return subprocess.run(["bash", str(script), "runs", *names], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=60)

    out = run("unet16-edm-distill-l2048", "unet16-edm-l2048")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "trained.log").read_text().split() == ["runs/unet16-edm-l2048", "runs/unet16-edm-distill-l2048"]
    assert (tmp_path / "models" / "embedded" / "unet16-edm-l2048" / "weights").is_file()
    (tmp_path / "cut").touch()
    out = run("unet16-edm-m64")
    assert out.returncode == 130 and "unet16-edm-m64: training stopped (exit 130)" in out.stderr
    assert not (tmp_path / "models" / "embedded" / "unet16-edm-m64").exists()  # nothing shipped from a cut run
    cut = int((tmp_path / "runs" / "unet16-edm-m64" / "wall_seconds").read_text())
    assert cut >= 1  # the cut-short invocation's second is kept
    assert run("unet16-edm-m64").returncode == 0
    timed = json.loads((tmp_path / "models" / "embedded" / "unet16-edm-m64" / "train_time.json").read_text())
    assert timed["wall_seconds"] >= cut + 1
    out = run("unet16-edm-l4096")
    assert out.returncode == 2 and "unknown model unet16-edm-l4096; valid: unet16-edm-m64" in out.stderr


def test_every_shipped_checkpoint_records_its_files_digests_and_a_swapped_file_is_refused(tmp_path):
    """23 of the 24 folders recorded no digests, so the 2,048-image model's weights copied into the 64-image folder
    loaded as the 64-image model; an empty record checked nothing either."""
    import shutil

    from models.checkpoints import WEIGHTS, WRITTEN_WITH, CheckpointError, load_checkpoint

    root = Path(__file__).resolve().parents[1] / "models" / "embedded"
    folders = [p for p in sorted(root.iterdir()) if (p / "samenoise.json").is_file()]
    assert len(folders) == 24
    for folder in folders:
        assert set(json.loads((folder / "samenoise.json").read_text())[WRITTEN_WITH]) == {"config.json", WEIGHTS}, \
            folder.name
    swapped = tmp_path / "m64"
    shutil.copytree(root / "unet16-edm-m64", swapped)
    shutil.copy(root / "unet16-edm-l2048" / WEIGHTS, swapped / WEIGHTS)
    with pytest.raises(CheckpointError, match=rf"{WEIGHTS} is not the file samenoise.json was written with"):
        load_checkpoint(swapped)
    shutil.copy(root / "unet16-edm-m64" / WEIGHTS, swapped / WEIGHTS)
    meta = json.loads((swapped / "samenoise.json").read_text())
    (swapped / "samenoise.json").write_text(json.dumps(meta | {WRITTEN_WITH: {}}))
    with pytest.raises(CheckpointError, match=rf"{WRITTEN_WITH} records \[\], expected the sha256 of config.json"):
        load_checkpoint(swapped)

"""Checkpoint regression against a golden file (no reference checkpoint needed):

    pytest bench/test_regression.py --candidate unet16-edm-m64 --golden ref.npz --update-golden   # record
    pytest bench/test_regression.py --candidate path/to/new-checkpoint --golden ref.npz           # check

The candidate is sampled with its entry's sampler and NFE on the golden file's noises. Two cases per golden
file, `rp` (descriptor embeddings, content) and `mae` (thumbnails, pixels), must reach --golden-rp and
--golden-mae (default 0.6 each, the paper's bars, Sec. 2.1); select one with -k, e.g. `-k "regression and rp"`."""
from pathlib import Path

import torch

from cases import Bar, Case, Run
from fixtures.measure import sample_extra, worst_pairs
from fixtures.results import Measured
from models.golden import Golden, thumbnails
from models.scores import MAEScore, RPScore
from models.atomic import file_sha256

BARS = {"rp": ("--golden-rp", "--golden-rp (default 0.6, the RP bar, Sec. 2.1)"),
        "mae": ("--golden-mae", "--golden-mae (default 0.6, the MAE score bar, Sec. 2.1)")}


def pytest_generate_tests(metafunc):
    files = metafunc.config.getoption("--golden") or [None]
    if "golden_metric" in metafunc.fixturenames:
        metafunc.parametrize("golden_file, golden_metric", [(f, m) for f in files for m in BARS],
                             ids=[f"regression/{f or '-'}/{m}" for f in files for m in BARS])
    elif "golden_file" in metafunc.fixturenames:
        metafunc.parametrize("golden_file", files, ids=[f"record/{f or '-'}" for f in files])


def candidate_run(pytestconfig, measure):
    """The candidate's model and run; conftest.py collects these cases only with --candidate and --golden, and
    either the recording or the comparing ones (--update-golden)."""
    candidate = pytestconfig.getoption("--candidate")
    m = measure.model(candidate)
    return m, Run(candidate, m.entry.sampler, m.entry.nfe)


def test_record_golden(golden_file, pytestconfig, measure, descriptor):
    m, run = candidate_run(pytestconfig, measure)
    bank = measure.bank(m.sample_shape, pytestconfig.getoption("--noises"))
    s = measure.sample(run, len(bank), bank=bank)
    Golden(model=m.entry.name, bank_hash=bank.hash, sampler=run.sampler, nfe=run.nfe, grid=m.grid, label=None,
           descriptor=descriptor.identity, ids=s.ids, embeddings=measure.embed(s.images).numpy(),
           thumbnails=thumbnails(s.images)).save(golden_file)


def test_regression(golden_file, golden_metric, pytestconfig, measure, descriptor, claim):
    m, run = candidate_run(pytestconfig, measure)
    golden = Golden.load(golden_file)
    bank = measure.bank(m.sample_shape, len(golden.ids))
    golden.check_compatible(golden_file, bank_hash=bank.hash, sampler=run.sampler, nfe=run.nfe, grid=m.grid,
                            label=None, descriptor=descriptor.identity)
    s = measure.sample(run, len(bank), bank=bank)
    ids, golden_ids = torch.from_numpy(s.ids), torch.from_numpy(golden.ids)
    if golden_metric == "rp":
        metric = RPScore()
        metric.update(measure.embed(s.images), torch.from_numpy(golden.embeddings).float(), ids, golden_ids)
    else:
        metric = MAEScore()
        metric.update(torch.from_numpy(thumbnails(s.images)), torch.from_numpy(golden.thumbnails), ids, golden_ids)
    option, source = BARS[golden_metric]
    case = Case("regression", f"golden file {golden_file}", golden_metric,
                (run, Run(f"golden:{golden.model}", golden.sampler, golden.nfe)),
                Bar(">=", pytestconfig.getoption(option), source))
    # the report draws a failing case's worst pairs from the candidate's stored samples and the golden thumbnails
    extra = sample_extra(s) | {"golden": {"path": str(Path(golden_file).resolve()), "sha256": file_sha256(golden_file)}}
    claim(case, Measured(float(metric.compute()), len(ids), worst_pairs(metric.pairs()), extra))

"""Checkpoint regression against a golden file (no reference checkpoint needed):

    pytest bench/test_regression.py --candidate unet16-edm-m64 --golden ref.npz --update-golden   # record
    pytest bench/test_regression.py --candidate path/to/new-checkpoint --golden ref.npz           # check

The candidate is sampled with its entry's sampler and NFE on the golden file's noises; RP (descriptor
embeddings) and MAE score (thumbnails) against the golden samples must reach --golden-rp and --golden-mae
(default 0.6 each, the paper's bars, Sec. 2.1)."""
import pytest
import torch

from cases import Bar, Case, Run
from fixtures.measure import worst_pairs
from fixtures.results import Measured
from models.golden import Golden, thumbnails
from models.scores import MAEScore, RPScore


def pytest_generate_tests(metafunc):
    if "golden_file" in metafunc.fixturenames:
        files = metafunc.config.getoption("--golden") or [None]
        metafunc.parametrize("golden_file", files, ids=[f"regression/{f}" if f else "regression" for f in files])



def test_regression(golden_file, pytestconfig, measure, descriptor, claim):
    candidate = pytestconfig.getoption("--candidate")
    if golden_file is None or candidate is None:
        pytest.skip("checkpoint regression: pass --candidate MODEL --golden FILE (add --update-golden to record)")
    m = measure.model(candidate)
    entry = m.entry
    run = Run(candidate, entry.sampler, entry.nfe)
    if pytestconfig.getoption("--update-golden"):
        bank = measure.bank(m.sample_shape, pytestconfig.getoption("--noises"))
        s = measure.sample(run, len(bank), bank=bank)
        Golden(model=entry.name, bank_hash=bank.hash, sampler=run.sampler, nfe=run.nfe, grid="edm", label=None,
               descriptor=descriptor.identity, ids=s.ids, embeddings=measure.embed(s.images).numpy(),
               thumbnails=thumbnails(s.images)).save(golden_file)
        return
    golden = Golden.load(golden_file)
    bank = measure.bank(m.sample_shape, len(golden.ids))
    golden.check_compatible(golden_file, bank_hash=bank.hash, sampler=run.sampler, nfe=run.nfe, grid="edm",
                            label=None, descriptor=descriptor.identity)
    s = measure.sample(run, len(bank), bank=bank)
    ids = torch.from_numpy(s.ids)
    rp = RPScore()
    rp.update(measure.embed(s.images), torch.from_numpy(golden.embeddings).float(), ids, torch.from_numpy(golden.ids))
    mae = MAEScore()
    mae.update(torch.from_numpy(thumbnails(s.images)), torch.from_numpy(golden.thumbnails), ids,
               torch.from_numpy(golden.ids))
    ref = Run(f"golden:{golden.model}", golden.sampler, golden.nfe)
    cases = [Case("regression", f"golden file {golden_file}", "rp", (run, ref),
                  Bar(">=", pytestconfig.getoption("--golden-rp"), "--golden-rp (default 0.6, the RP bar, Sec. 2.1)")),
             Case("regression", f"golden file {golden_file}", "mae", (run, ref),
                  Bar(">=", pytestconfig.getoption("--golden-mae"), "--golden-mae (default 0.6, Sec. 2.1)"))]
    failures = []
    for case, metric in zip(cases, (rp, mae)):
        try:
            claim(case, Measured(float(metric.compute()), len(ids), worst_pairs(metric.pairs())))
        except pytest.fail.Exception as e:
            failures.append(str(e))
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)

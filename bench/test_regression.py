"""Checkpoint regression against a golden file (no reference checkpoint needed):

    pytest bench/test_regression.py --candidate unet16-edm-m64 --golden ref.npz --update-golden   # record
    pytest bench/test_regression.py --candidate path/to/new-checkpoint --golden ref.npz           # check

The candidate is sampled with its entry's sampler and NFE on the golden file's noises (a conditional one under its
first class, label 0, recorded in the file). Two cases per golden
file, `rp` (descriptor embeddings, content) and `mae` (thumbnails, pixels), must reach --golden-rp and
--golden-mae (default 0.6 each, the suite's score bars below Fig. 3's 0.70 / 0.64, Sec. 2.2; the RP case counts
pairs above SSCD 0.6, or 0.4 for images larger than 32 px as App. A.1-A.2 do); select one by its marker, `-m golden_rp` or
`-m golden_mae` (`-k "regression and rp"` also picks `mae` cases whose golden file's path contains "rp")."""
import pytest

from cases.regression import GOLDEN_BARS, candidate_name, item_id, regression_case, regression_threshold
from cases import Run
from models.golden import THUMBNAIL, Golden, conditioning_of, thumbnails


def pytest_generate_tests(metafunc):
    files = metafunc.config.getoption("--golden") or [None]
    if "golden_metric" in metafunc.fixturenames:
        # each metric is also a marker: -m golden_rp selects by name, where -k would also match a golden file's path
        metafunc.parametrize("golden_file, golden_metric",
                             [pytest.param(f, m, marks=getattr(pytest.mark, m), id=item_id(f, m))
                              for f in files for m in GOLDEN_BARS])
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
    label = 0 if m.num_classes else None  # a conditional candidate is recorded under its first class
    s = measure.sample(run, len(bank), label=label, bank=bank)
    Golden(model=candidate_name(pytestconfig.getoption("--candidate")), bank_hash=bank.hash, sampler=run.sampler,
           nfe=run.nfe, grid=m.grid, label=label, descriptor=descriptor.identity, ids=s.ids,
           embeddings=measure.embed(s.images).numpy(),
           thumbnails=thumbnails(s.images, pytestconfig.getoption("--golden-thumbnail") or THUMBNAIL),
           conditioning=conditioning_of(m.entry)).save(golden_file)
    writer = pytestconfig.pluginmanager.get_plugin("samenoise-results")
    if writer is not None:  # the run's last lines say what it wrote
        writer.written.append(f"golden file ({len(s.ids)} noises, {run.sampler}@{run.nfe}) -> {golden_file}")


def test_regression(golden_file, golden_metric, pytestconfig, measure, claim):
    m, run = candidate_run(pytestconfig, measure)
    golden = Golden.load(golden_file)
    # RP pairs count as the same image above SSCD 0.6, or the paper's 0.4 for images larger than CIFAR's (a latent
    # model's included); the MAE case reads no SSCD threshold
    case = regression_case(golden_file, golden_metric, pytestconfig.getoption(GOLDEN_BARS[golden_metric][0]), run,
                           Run(f"golden:{golden.model}", golden.sampler, golden.nfe),
                           regression_threshold(golden_metric, m))
    claim(case, *measure.case(case))

"""Every claim kind has a deliberately broken input under which its case fails, while the same case holds, with its
control caught, on sound input (tests/mutation_cases.py runs them in a pytest of its own)."""
import pytest

from cases import PARTS
from reports.schema import load_results
from tests.helpers import pytest_run
from tests.mutation_cases import ROWS

# Parts without a mutation row, and why: the real-weight cases need published checkpoints; checkpoint regression is
# mutated in tests/test_golden.py (perturbed weights fail the golden file).
ELSEWHERE = {"real", "regression"}


def test_every_claim_kind_has_a_mutation():
    kinds = {kind for _, kind, *_ in ROWS}
    assert set(PARTS) - ELSEWHERE - {"finetune"} <= kinds, sorted(set(PARTS) - ELSEWHERE - kinds)
    assert "direction" in kinds  # the fine-tune part's cases are direction cases, as C3's are


# (metric, bar) pairs of the catalogue without a row of their own, and why: the direction cases ('<' or '>' against
# another side) share one decision, which the `direction` row breaks, on metrics that the rows of their level bars
# break.
NO_ROW = {("gl", "<"), ("gl", ">"), ("rp", ">"), ("rp_optimal", "<"), ("rp_optimal", ">")}


def test_every_metric_and_bar_of_the_catalogue_has_a_mutation():
    """Part by part is not enough: one part (C4) holds conditional, layout and inverse cases of other metrics."""
    from cases.catalog import ALL

    used = {(c.metric, c.bar.op) for c in ALL if c.part not in ELSEWHERE}
    rows = {(case.metric, case.bar.op) for _, _, case, *_ in ROWS}
    assert used - NO_ROW <= rows, sorted(used - NO_ROW - rows)
    assert NO_ROW <= used, sorted(NO_ROW - used)  # no stale exception


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("mutations")
    out = pytest_run("tests/mutation_cases.py", "--noises", "32", "--cache-dir", str(tmp / "cache"),
                     "--report-dir", str(tmp / "out"), "--results", str(tmp / "results.json"), timeout=900)
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
    records = load_results(tmp / "results.json")["cases"]
    return {r["nodeid"].split("[")[-1].rstrip("]"): r for r in records}, out.stdout, tmp / "cache"


@pytest.mark.parametrize("row", [r[0] for r in ROWS])
def test_the_sound_case_holds_and_the_mutated_one_fails(outcomes, row):
    from fixtures.measure import has_control

    case = next(r[2] for r in ROWS if r[0] == row)  # not a parameter named `case`: the results writer would take
    # this test for a claim case of the suite itself
    records, stdout, _ = outcomes
    sound, mutated = records[f"{row}-sound"], records[f"{row}-mutated"]
    assert sound["outcome"] == "passed", (sound["value"], sound.get("decision"), stdout[-2000:])
    control = sound["decision"].get("control")
    # a case of a metric with a control must have measured it (a record without one passed here), and caught it
    assert (control is not None) == has_control(case), (control, has_control(case))
    assert control is None or control["caught"], control
    assert mutated["outcome"] == "failed", (mutated["value"], mutated.get("decision"))


def test_every_record_names_the_stored_sets_it_read(outcomes):
    """A record finds its samples again: every metric but the loss log's (which reads none) names the store entries
    it read, the rows it took of each and its noise banks (fixtures/measure.py, sample_extra), and the entries are
    there. The hyperplane, slerp, layout, round-trip and Theorem 1 metrics once recorded none."""
    from models.store import SampleStore

    records, _, cache = outcomes
    store = SampleStore(cache)
    for name, r in records.items():
        if r["metric"] == "loss" or r["outcome"] not in ("passed", "failed"):
            continue
        extra = r["extra"]
        assert extra.get("samples") and len(extra["sample_rows"]) == len(extra["samples"]), (name, sorted(extra))
        for h, rows in zip(extra["samples"], extra["sample_rows"]):
            stored = SampleStore.read(store.root / "samples" / f"{h}.npz")
            assert 0 < rows <= len(stored.ids), (name, h, rows)

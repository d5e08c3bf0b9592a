"""The metric registry: every case names a registered metric, lookups name the valid metrics, and a metric added
in a module of its own is measured, checked and recorded like the suite's own."""
import math
import re
from pathlib import Path

import pytest

from cases.catalog import ALL
from cases.regression import GOLDEN_BARS
from fixtures.metrics import METRICS, Metric, Side
from models.registry import UnknownNameError
from reports.schema import load_results
from tests.helpers import pytest_run


def test_every_case_names_a_registered_metric_with_a_label():
    used = {c.metric for c in ALL} | set(GOLDEN_BARS)
    assert used <= set(METRICS), sorted(used - set(METRICS))
    assert all(METRICS[m].label for m in used)


def test_an_unknown_metric_names_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"unknown metric 'rq'; valid metrics: agreement, gl, "):
        METRICS["rq"]


def test_a_metric_name_is_registered_once():
    with pytest.raises(ValueError, match="metric 'rp' is already registered"):
        METRICS.add("rp", Metric("RP again", "", lambda *a: None))


def test_the_versus_side_takes_its_own_params_over_the_case_params():
    from cases import Bar, Case, Run

    case = Case("C3", "s", "gl", (Run("a"),), Bar("<", None, "s"), versus=(Run("b"),),
                params={"size": 64, "dataset": "m64", "versus_dataset": "l2048", "mask": "easy"})
    assert Side.of(case).size == 64 and Side.of(case, versus=True).size == 2048
    assert Side.of(case, versus=True).runs == (Run("b"),) and Side.of(case, versus=True).params["mask"] == "easy"


def test_a_metric_added_in_its_own_module_is_measured_and_recorded(tmp_path):
    out = pytest_run("tests/toy_metric_cases.py", "--noises", "4", "--cache-dir", str(tmp_path / "cache"),
                     "--report-dir", str(tmp_path / "out"), timeout=600)
    assert out.returncode == 1, out.stdout[-3000:]  # its bar cannot be met: the case fails with the metric's label
    assert "toy mean level(" in out.stdout and "worst noise ids (mean pixel value, 0-255)" in out.stdout
    run, = (tmp_path / "out" / "runs").iterdir()
    record, = load_results(run / "results.json")["cases"]
    assert record["metric"] == "toy_mean_level" and record["outcome"] == "failed" and record["n"] == 4
    assert 0 < record["value"] < 255 and len(record["worst"]) == 4


class _HyperplaneStub:
    """Measure's hyperplane interface over fixed images; `embed` is the flattened image, so equal images embed
    alike. The first model's anchors 0 and 1 are one image; the second model's three anchors are distinct."""

    def __init__(self):
        import numpy as np

        from models.store import SampleSet

        eye = np.eye(3, dtype=np.uint8)[:, None, None, :] * 255  # three distinct 1x1 images, (3, 1, 1, 3)
        self.sets = {"a": SampleSet(eye[[0, 0, 2]], np.arange(3), 20, {}), "b": SampleSet(eye, np.arange(3), 20, {})}
        self.grid = SampleSet(eye[[0, 1, 2, 2]], np.arange(4), 20, {})

    def hyperplane_sets(self, run, points, planes=1, permuted=False):
        return self.sets[run.model], self.grid

    def embed(self, images):
        import torch

        return torch.as_tensor(images).reshape(len(images), -1).float()


def test_the_hyperplane_case_refuses_anchors_that_give_one_image():
    """Two copies of one image split their region of the map by chance: the measurement stops, naming the model
    and the noise ids, rather than score that chance as the models' agreement."""
    from cases import Bar, Case, Run
    from fixtures.metrics import agreement
    from models.scores import AnchorError

    stub = _HyperplaneStub()
    case = Case("encoding", "Fig. 4", "agreement", (Run("b"), Run("a")), Bar(">=", 0.6, "s"), params={"points": 2})
    with pytest.raises(AnchorError, match=r"^a under dpm3@20: .*noise ids 0 and 1 \(1\.000\)"):
        agreement(stub, case, Side.of(case))
    sound = Case("encoding", "Fig. 4", "agreement", (Run("b"), Run("b")), Bar(">=", 0.6, "s"), params={"points": 2})
    assert agreement(stub, sound, Side.of(sound)).value == 1.0


class _PlanesStub(_HyperplaneStub):
    """Two planes of 2 x 2 points: model "a"'s second plane has anchors 3 and 4 one image; model "b"'s are distinct.
    Both maps of the first plane agree; on the second, "b"'s and "c"'s disagree at every point."""

    def hyperplane_sets(self, run, points, planes=1, permuted=False):
        import numpy as np

        from models.store import SampleSet

        eye = np.eye(3, dtype=np.uint8)[:, None, None, :] * 255
        anchors = {"a": [0, 1, 2, 0, 0, 2], "b": [0, 1, 2, 0, 1, 2], "c": [0, 1, 2, 0, 1, 2]}[run.model]
        grid = {"c": [0, 1, 2, 2, 1, 2, 0, 0]}.get(run.model, [0, 1, 2, 2, 0, 1, 2, 2])
        return SampleSet(eye[anchors], np.arange(6), 20, {}), SampleSet(eye[grid], np.arange(8), 20, {})


class _PlanesStub3(_HyperplaneStub):
    """Three planes of 2 x 2 points: model "a"'s second plane has anchors 3 and 4 one image; otherwise the anchors
    are distinct and the maps of "a" and "b" agree at every point."""

    def hyperplane_sets(self, run, points, planes=1, permuted=False):
        import numpy as np

        from models.store import SampleSet

        eye = np.eye(3, dtype=np.uint8)[:, None, None, :] * 255
        anchors = {"a": [0, 1, 2, 0, 0, 2, 0, 1, 2], "b": [0, 1, 2] * 3}[run.model]
        return (SampleSet(eye[anchors], np.arange(9), 20, {}),
                SampleSet(eye[[0, 1, 2, 2, 0, 1, 2, 2, 2, 1, 0, 0]], np.arange(12), 20, {}))


def test_the_hyperplane_case_leaves_out_a_plane_whose_anchors_give_one_image_and_resamples_planes():
    """Over several planes, a plane whose anchors give one image in either model is left out on its anchors alone
    (named in the record); the kappa pools the planes kept, and its interval resamples whole planes. One plane left
    of several is an error: a bootstrap over one plane would give its kappa as the whole interval."""
    from cases import Bar, Case, Run
    from fixtures.metrics import agreement
    from models.scores import AnchorError

    stub = _PlanesStub3()
    params = {"points": 2, "planes": 3}
    case = Case("encoding", "Fig. 4", "agreement", (Run("b"), Run("a")), Bar(">=", 0.6, "s"), params=params)
    got = agreement(stub, case, Side.of(case))
    assert got.value == 1.0 and got.extra["plane_kappa"] == [1.0, 1.0] and list(got.extra["planes_left_out"]) == ["1"]
    assert "noise ids 3 and 4" in got.extra["planes_left_out"]["1"] and got.interval[2] == "bootstrap over 2 planes"
    assert got.interval[:2] == (1.0, 1.0)  # both planes kept agree at every point
    stub = _PlanesStub()
    params = {"points": 2, "planes": 2}
    case = Case("encoding", "Fig. 4", "agreement", (Run("b"), Run("a")), Bar(">=", 0.6, "s"), params=params)
    with pytest.raises(AnchorError, match=r"only plane 0 of 2 is usable, and resampling planes needs two or more: .*"
                                          r"noise ids 3 and 4"):
        agreement(stub, case, Side.of(case))
    split = Case("encoding", "Fig. 4", "agreement", (Run("b"), Run("c")), Bar(">=", 0.6, "s"), params=params)
    got = agreement(stub, split, Side.of(split))
    assert got.extra["plane_kappa"][0] == 1.0 and got.extra["plane_kappa"][1] < 0 and got.n == 8
    assert got.interval[0] < 0 and got.interval[1] == 1.0 and got.interval[2] == "bootstrap over 2 planes"
    one = Case("encoding", "Fig. 4", "agreement", (Run("a"), Run("a")), Bar(">=", 0.6, "s"),
               params={"points": 2, "planes": 1})
    with pytest.raises(AnchorError, match="noise ids 0 and 1"):
        agreement(_HyperplaneStub(), one, Side.of(one))


def test_rp_cond_refuses_models_with_different_class_counts():
    """RP_cond pairs class c of one model with class c of the other; a zip over 2 and 3 classes cut one short."""
    from types import SimpleNamespace

    from cases import Bar, Case, Run
    from fixtures.metrics import rp_cond

    counts = {"a": 2, "b": 3}
    stub = SimpleNamespace(class_sets=lambda case, run: [None] * counts[run.model])
    case = Case("C4", "Fig. 6b", "rp_cond", (Run("a"), Run("b")), Bar(">=", 0.6, "s"))
    with pytest.raises(ValueError, match=r"RP_cond compares the same classes: a has 2, b 3"):
        rp_cond(stub, case, Side.of(case))


def test_every_sscd_thresholded_metric_reads_the_cases_threshold():
    """A case's `threshold` param (0.4 for the large images of App. A.2) reaches every metric that compares an SSCD
    similarity with a threshold: in fixtures/metrics.py only `_threshold` names the default, and every score that
    takes a threshold is given one (before, RP_cond, RP_between, GL, the golden file's RP, the neighbour share and
    RP_manifold kept 0.6 whatever the case said)."""
    import ast
    import inspect

    import fixtures.metrics as metrics

    tree = ast.parse(inspect.getsource(metrics))
    position = {"RPScore": 0, "RPBetweenScore": 0, "GLScore": 1, "rp_manifold": 2}  # the threshold's argument
    # Measure's own scores, whose threshold defaults to 0.6: called as measure.<name>(...)
    measure_position = {"rp": 2, "gl": 3, "held_out_gl": 2}

    def reads_threshold(expr, derived) -> bool:  # _threshold(...) itself, or a name assigned from it
        return any((isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "_threshold")
                   or (isinstance(n, ast.Name) and n.id in derived) for n in ast.walk(expr))

    checked = 0
    for fn in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name != "_threshold"):
        names = {n.id for n in ast.walk(fn) if isinstance(n, ast.Name)}
        assert "SSCD_THRESHOLD" not in names, f"{fn.name} uses the default SSCD threshold, not the case's"
        derived = {a.arg for a in fn.args.args if a.arg == "threshold"}  # a helper handed the case's threshold
        for node in (n for n in ast.walk(fn) if isinstance(n, ast.Assign) and reads_threshold(n.value, set())):
            derived |= {t.id for target in node.targets for t in ast.walk(target) if isinstance(t, ast.Name)}
        for node in ast.walk(fn):  # a literal bar compared with a similarity (`> 0.6`) bypasses the case's
            if isinstance(node, ast.Compare):
                assert not any(isinstance(c, ast.Constant) and c.value in (0.6, 0.4) for c in node.comparators), \
                    (fn.name, ast.unparse(node))
        for call in (n for n in ast.walk(fn) if isinstance(n, ast.Call)):
            name = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
            on_measure = (isinstance(call.func, ast.Attribute) and isinstance(call.func.value, ast.Name)
                          and call.func.value.id == "measure")
            if on_measure and name in measure_position:
                at = measure_position[name]
            elif name in position and not on_measure:
                at = position[name]
            else:
                continue
            args = call.args
            if args and isinstance(args[0], ast.Starred):  # rp_manifold(*embs, threshold)
                at -= 1
            given = [k.value for k in call.keywords if k.arg == "threshold"] or args[at:at + 1]
            assert given and reads_threshold(given[0], derived), (fn.name, ast.unparse(call))
            checked += 1
    # RPScore twice, RPBetweenScore, rp_manifold; measure.rp five times, measure.gl three, measure.held_out_gl once
    assert checked >= 13, checked


@pytest.mark.parametrize("metric, params, says", [
    # its control pairs path k with path k + 1 by rolling the paths: with one path it compared the path with itself
    ("rp_manifold", {"paths": 1, "points": 5}, "paths must be a whole number >= 2, got 1"),
    # one point a path is the bank noise at its start: plain RP, labelled RP_manifold
    ("rp_manifold", {"paths": 4, "points": 1}, "points must be a whole number >= 3, got 1"),
    ("rp_manifold", {"paths": 4.0, "points": 5}, "paths must be a whole number >= 2, got 4.0"),
    # one grid point a plane makes every map constant: kappa 1 by convention, with an interval [1, 1]
    ("agreement", {"points": 1, "planes": 4}, "points must be a whole number >= 2, got 1"),
    ("agreement", {"points": 8, "planes": 0}, "planes must be a whole number >= 1, got 0"),
    # at 3 points the neighbour control's "half a grid away" is a neighbour itself
    ("neighbours", {"points": 3, "planes": 2}, "points must be a whole number >= 4, got 3"),
    ("neighbours", {"points": 2.5}, "points must be a whole number >= 4, got 2.5"),
])
def test_a_slerp_or_hyperplane_case_of_too_few_points_paths_or_planes_is_refused_by_name(metric, params, says):
    """Each was measured (or failed inside torch) without naming the parameter."""
    from cases import Bar, Case, Run
    from fixtures.metrics import METRICS

    runs = (Run("a"),) if metric == "neighbours" else (Run("a"), Run("b"))
    case = Case("encoding", "Sec. 2.2", metric, runs, Bar(">=", 0.6, "s"), params=params)
    with pytest.raises(ValueError, match=re.escape(f"{case.id}: {says}")):
        METRICS[metric].measure(object(), case, Side.of(case))


def test_a_pairing_a_threshold_or_values_no_metric_can_read_are_refused_by_name():
    """A pairing typo ('shift') was measured as same-noise pairs, and a case with a `pairing` key gets no control; a
    threshold in percent (60) made every pair "different"; values for fewer noises than the set recorded the set's
    count beside them."""
    import numpy as np
    import torch

    from cases import Bar, Case, Run
    from fixtures.measure import Measure
    from fixtures.metrics import _threshold
    from models.store import SampleSet

    measure = Measure(None, None, None, None, 8)
    for key in ("pairing", "versus_pairing"):
        case = Case("C2", "s", "mae", (Run("a"), Run("a")), Bar(">=", 0.6, "s"), params={key: "shift"})
        with pytest.raises(ValueError, match=rf"{key} 'shift' is not one that metric 'mae' reads; its pairings: "
                                             rf"'shifted', 'permuted'"):
            measure.case(case)
    # a pairing that another metric reads: 'permuted' for a metric that never permutes was measured as same-noise
    # pairs, without a control
    for metric, pairing, valid in (("rp_manifold", "permuted", "'shifted'"), ("agreement", "shifted", "'permuted'"),
                                   ("gl", "permuted", "none"), ("rp", "same noise, other label", "'shifted', "
                                                                                                  "'permuted'")):
        case = Case("C2", "s", metric, (Run("a"), Run("b")), Bar(">=", 0.6, "s"), params={"pairing": pairing})
        with pytest.raises(ValueError, match=rf"pairing '{pairing}' is not one that metric '{metric}' reads; its "
                                             rf"pairings: {valid}"):
            measure.case(case)
    # the key alone took the control away; DPS sets are made before any permutation
    for params, says in (({"pairing": None}, r"pairing None: leave the key out for same-noise pairs"),
                         ({"pairing": "permuted", "mask": "easy"}, r"pairing 'permuted' is not read under a DPS mask"),
                         # noise i + 1 under y_(i + 1): another noise and another observation at once
                         ({"pairing": "shifted", "mask": "easy"}, r"pairing 'shifted' is not read under a DPS mask: "
                                                                  r"it would pair noise i observing y_i with noise "
                                                                  r"i \+ 1 observing y_\(i \+ 1\)"),
                         # the versus side under the case's mask, or under its own
                         ({"versus_pairing": "shifted", "mask": "easy"}, r"versus_pairing 'shifted' is not read "
                                                                         r"under a DPS mask"),
                         ({"pairing": "shifted", "versus_mask": "easy"}, r"versus_pairing 'shifted' is not read "
                                                                         r"under a DPS mask"),
                         ({"versus_pairing": "permuted", "mask": "easy"}, r"versus_pairing 'permuted' is not read "
                                                                          r"under a DPS mask")):
        case = Case("C2", "s", "rp", (Run("a"), Run("b")), Bar(">=", 0.6, "s"), params=params)
        with pytest.raises(ValueError, match=says):
            measure.case(case)
    for bad in (60, 0, 1.0, True, "0.6"):
        case = Case("C2", "s", "rp", (Run("a"), Run("b")), Bar(">=", 0.6, "s"), params={"threshold": bad})
        with pytest.raises(ValueError, match=r"SSCD threshold must be a cosine similarity in \(0, 1\), got"):
            _threshold(Side.of(case))
    s = SampleSet(np.zeros((5, 2, 2, 3), np.uint8), np.arange(5), 1, {"model": "a"})
    with pytest.raises(ValueError, match=r"3 values for a set of 5 noise ids"):
        measure.scored_values(torch.zeros(3), s)


def test_a_score_mask_larger_than_the_hidden_square_is_refused():
    """mask easy with score_mask hard scored the easy mask's observed ring, which both runs share, as inpainting."""
    from cases import Bar, Case, Run
    from fixtures.measure import Measure
    from fixtures.metrics import _hidden

    measure = Measure(None, None, None, None, 8)
    side = Side.of(Case("C4", "s", "rp", (Run("a", "dps", 34), Run("b", "dps", 34)), Bar(">=", 0.6, "s"),
                        params={"mask": "easy", "score_mask": "hard"}))
    with pytest.raises(ValueError, match=r"score_mask 'hard' scores a square larger than the one mask 'easy' hides"):
        _hidden(measure, side)
    inside = Side.of(Case("C4", "s", "rp", (Run("a", "dps", 34), Run("b", "dps", 34)), Bar(">=", 0.6, "s"),
                          params={"mask": "hard", "score_mask": "easy"}))
    assert _hidden(measure, inside) == measure.hidden("easy")


def test_a_controls_sets_must_hold_the_same_noises_before_they_are_moved_on():
    """A control (shift > 0) took b's image of id a[i + 1] without checking that a and b hold the same noises: sets of
    4 and 8 noises were scored as 4 pairs; an empty set divided by zero."""
    import numpy as np

    from fixtures.measure import Measure
    from models.scores import PairingError
    from models.store import SampleSet

    measure = Measure(None, None, None, None, 8)
    a = SampleSet(np.zeros((4, 2, 2, 3), np.uint8), np.arange(4), 1, {"model": "a"})
    b = SampleSet(np.zeros((8, 2, 2, 3), np.uint8), np.arange(8), 1, {"model": "b"})
    with pytest.raises(PairingError, match=r"noise ids differ"):
        measure.mae(a, b, shift=1)
    empty = SampleSet(np.zeros((0, 2, 2, 3), np.uint8), np.arange(0), 1, {"model": "a"})
    with pytest.raises(ValueError, match=r"this set holds no noise"):
        measure.mae(empty, empty, shift=1)
    assert measure.mae(a, a, shift=1).n == 4  # the same noises: scored


def test_a_claim_of_disagreement_lists_its_most_similar_pairs_as_its_worst():
    """A failed '< 0.6' claim named its least similar pairs as its worst noise ids: the pairs that agree with it."""
    import torch

    from fixtures.measure import worst_pairs
    from models.scores import PairValues

    pairs = PairValues(torch.tensor([7, 3, 5]), torch.tensor([0.1, 0.5, 0.9]))  # sorted least similar first
    assert worst_pairs(pairs) == [(7, 0.1), (3, 0.5), (5, 0.9)]
    assert worst_pairs(pairs, k=2, reverse=True) == [(5, 0.9), (3, 0.5)]


@pytest.mark.parametrize("points, units", [(8, 32), (5, 25)])
def test_the_neighbours_control_scores_each_pair_half_a_grid_apart_once(points, units):
    """On an even grid the shift by half a grid, twice, comes back to the start: every pair was scored twice, and on
    one plane (its values independent units) the control's interval was too narrow."""
    import numpy as np
    import torch

    from cases import Bar, Case, Run
    from fixtures.metrics import METRICS
    from models.store import SampleSet

    class Grid:
        def hyperplane_sets(self, run, points, planes=1, permuted=False):
            sets = [SampleSet(np.zeros((k, 2, 2, 3), np.uint8), np.arange(k), 1, {"model": run.model, "part": k})
                     for k in (3 * planes, points * points * planes)]
            return tuple(sets)

        def embed(self, images):  # grid point (r, c) on a torus: the similarity of two points is set by their offset
            k = torch.arange(len(images)) % (points * points)
            angles = 2 * torch.pi * torch.stack([k // points, k % points], 1) / points
            torus = torch.cat([angles.cos(), angles.sin()], 1) * 0.2 ** 0.5  # and a constant part: cosines in
            return torch.cat([torus, torch.full((len(images), 1), 0.6 ** 0.5)], 1)  # [0.2, 1]

    # half a grid apart, (h, h) with h = points // 2, is the torus's farthest offset: cosine 0.6 + 0.4 cos(2 pi h /
    # points), 0.2 at 8 points and 0.276 at 5, where every other offset but its mirror scores 0.4 or more; at a
    # threshold just above it, the control's share above the threshold is 0 only if every pair it scores lies half a
    # grid apart
    far = 0.6 + 0.4 * math.cos(2 * math.pi * (points // 2) / points)
    case = Case("encoding", "Sec. 2.2", "neighbours", (Run("a"),), Bar(">=", 0.6, "s"),
                params={"points": points, "threshold": far + 0.01})
    out = METRICS["neighbours"].control(Grid(), case, Side.of(case))
    assert len(out.units) == units and out.value == 0
    close = Case("encoding", "Sec. 2.2", "neighbours", (Run("a"),), Bar(">=", 0.6, "s"),
                 params={"points": points, "threshold": far - 0.01})
    assert METRICS["neighbours"].control(Grid(), close, Side.of(close)).value == 1  # the pairs are scored at all


def test_metric_params_out_of_range_or_missing_are_refused_by_name():
    """last_steps 0 took every step and -2 all but the first two; an unknown dataset was a bare KeyError; a layout
    case without its pool or pairing a bare KeyError; an MAE score under a DPS mask took the observed pixels too."""
    import torch

    from cases import Bar, Case, Run
    from fixtures.metrics import METRICS
    from models.scores import colour_layout

    case = Case("C3", "Fig. 2", "gl", (Run("a"),), Bar(">=", 0.6, "s"), params={"dataset": "m128"})
    with pytest.raises(ValueError, match=r"unknown dataset 'm128'; valid: m4, m64, l2048"):
        Side.of(case).size
    layout = Case("C4", "App. E", "layout_mae", (Run("a"),), Bar("<", None, "s"), versus=(Run("a"),),
                  params={"pairing": "same noise, other label"})
    with pytest.raises(ValueError, match=r"a layout case needs a `pool` param"):
        METRICS["layout_mae"].measure(object(), layout, Side.of(layout))
    masked = Case("C4", "App. F", "mae", (Run("a"), Run("b")), Bar(">=", 0.6, "s"), params={"mask": "easy"})
    with pytest.raises(ValueError, match=r"the MAE score is not defined under a DPS mask"):
        METRICS["mae"].measure(object(), masked, Side.of(masked))
    with pytest.raises(ValueError, match=r"pool True"):
        colour_layout(torch.zeros(2, 4, 4, 3, dtype=torch.uint8), True)
    from types import SimpleNamespace

    folder = Path(__file__).resolve().parents[1] / "models" / "embedded" / "unet16-edm-m4"  # its loss log: 20,000 steps
    logged = SimpleNamespace(model=lambda name: SimpleNamespace(entry=SimpleNamespace(source=str(folder))))
    for last in (0, -2, 10**6, 2.5, None):
        loss = Case("C3", "Fig. 13", "loss", (Run("unet16-edm-m4"),), Bar("<", None, "s"), versus=(Run("b"),),
                    params={} if last is None else {"last_steps": last})
        with pytest.raises(ValueError, match=rf"last_steps must be a whole number from 1 to the 20000 steps of "
                                             rf"unet16-edm-m4's loss log, got {re.escape(repr(last))}"):
            METRICS["loss"].measure(logged, loss, Side.of(loss))
    loss = Case("C3", "Fig. 13", "loss", (Run("unet16-edm-m4"),), Bar("<", None, "s"), versus=(Run("b"),),
                params={"last_steps": 200})
    assert len(METRICS["loss"].measure(logged, loss, Side.of(loss)).units) == 200

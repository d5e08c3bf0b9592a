"""The statistics of claim decisions (models/stats.py, cases/decision.py) against known values, and the decision
rules: intervals wholly past the bar, controls that must be caught, paired tests, ties that never hold."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from cases import Bar
from cases.decision import Interval, decide_direction, decide_threshold, interval_of
from models import stats

BAR = Bar(">=", 0.6, "a test bar")


def test_wilson_matches_a_reference_implementation():
    # scipy.stats.binomtest(105, 256).proportion_ci(method="wilson") = (0.3516648037328092, 0.47130417046871464)
    lo, hi = stats.wilson(105, 256)
    assert lo == pytest.approx(0.3516648037328092, abs=1e-12) and hi == pytest.approx(0.47130417046871464, abs=1e-12)
    # all successes: the lower bound is n / (n + z^2) (closed form of the Wilson bound at p = 1)
    assert stats.wilson(128, 128)[0] == pytest.approx(128 / (128 + stats.Z ** 2)) and stats.wilson(128, 128)[1] == 1


@given(st.integers(1, 2000), st.data())
@settings(max_examples=200, deadline=None)
def test_wilson_contains_the_point_and_shrinks_with_n(n, data):
    k = data.draw(st.integers(0, n))
    lo, hi = stats.wilson(k, n)
    assert 0 <= lo <= k / n <= hi <= 1
    lo4, hi4 = stats.wilson(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo


def test_mcnemar_exact_matches_the_binomial_test():
    # scipy.stats.binomtest(3, 15).pvalue = 0.03515625 (two-sided, p = 1/2)
    assert stats.mcnemar_exact(3, 12) == pytest.approx(0.03515625) == stats.mcnemar_exact(12, 3)
    assert stats.mcnemar_exact(0, 0) == 1.0 and stats.mcnemar_exact(5, 5) == 1.0


def test_cohen_kappa_of_a_textbook_table():
    # 50 items: yes/yes 20, yes/no 5, no/yes 10, no/no 15: p_o = 0.7, p_e = 0.5, kappa = 0.4 (Cohen 1960's formula)
    a = torch.tensor([1] * 25 + [0] * 25)
    b = torch.tensor([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)
    assert stats.cohen_kappa(a, a) == 1.0
    # a map that agrees only as chance does: independent labels with the same shares give kappa near 0
    g = torch.Generator().manual_seed(0)
    a, b = torch.randint(3, (20000,), generator=g), torch.randint(3, (20000,), generator=g)
    assert abs(stats.cohen_kappa(a, b)) < 0.02


def test_bootstrap_interval_covers_the_mean_and_is_reproducible():
    values = torch.linspace(0, 10, 200).tolist()
    lo, hi = stats.bootstrap_mean(values)
    assert lo < 5 < hi and (lo, hi) == stats.bootstrap_mean(values)
    # the half-width is about 1.96 standard errors (sd 2.9 / sqrt(200) = 0.205)
    assert (hi - lo) / 2 == pytest.approx(1.96 * torch.tensor(values).std().item() / math.sqrt(200), rel=0.15)


def test_noises_to_decide_is_the_first_n_whose_wilson_interval_clears_the_bar():
    n = stats.noises_to_decide(0.65, 0.6)
    assert stats.wilson(0.65 * n, n)[0] > 0.6 >= stats.wilson(0.65 * (n - 1), n - 1)[0]
    assert stats.noises_to_decide(0.6, 0.6) is None
    # below the bar: the first n whose interval lies wholly under it
    n = stats.noises_to_decide(0.55, 0.6)
    assert n is not None and stats.wilson(0.55 * n, n)[1] < 0.6 <= stats.wilson(0.55 * (n - 1), n - 1)[1]
    # a count between the last power of two below the limit and the limit is found, not given up on
    n = stats.noises_to_decide(0.60032, 0.6)
    assert 2 ** 23 < n < 10 ** 7 and stats.wilson(0.60032 * n, n)[0] > 0.6 >= stats.wilson(0.60032 * (n - 1), n - 1)[0]
    assert stats.noises_to_decide(0.60032, 0.6, limit=n - 1) is None and stats.noises_to_decide(0.60032, 0.6, limit=n) == n


@pytest.mark.parametrize("p, bar, pairs", [(0.7, 0.6, 185), (0.95, 0.9, 277), (0.3, 0.6, None)])
def test_chained_noises_to_decide_is_the_first_count_of_pairs_whose_chained_interval_decides(p, bar, pairs):
    """Wilson at half the pairs: an odd count of pairs can decide (185 for 0.7 against 0.6, not twice the 93 that
    independent noises need)."""
    m = stats.chained_noises_to_decide(p, bar)
    decides = lambda k: (lambda lo, hi: lo > bar or hi < bar)(*stats.wilson(p * k / 2, k / 2))
    assert decides(m) and not decides(m - 1)
    if pairs is not None:
        assert m == pairs and m < 2 * stats.noises_to_decide(p, bar)


def ones(k, n):
    return [1.0] * k + [0.0] * (n - k)


def test_a_threshold_case_holds_only_when_the_whole_interval_clears_the_bar():
    n = 128
    clear = decide_threshold(BAR, 0.8, interval_of(ones(102, n)), n)
    straddle = decide_threshold(BAR, 0.65, interval_of(ones(83, n)), n)
    below = decide_threshold(BAR, 0.3, interval_of(ones(38, n)), n)
    assert clear.holds and not straddle.holds and not below.holds
    assert "straddles the bar 0.6" in straddle.reason and straddle.noises_to_decide > n
    assert f"{n} noises cannot decide it; about {straddle.noises_to_decide} noises would" in straddle.reason
    # values clustered in 32 paths: the message counts the paths, and gives no count of noises that would decide it
    paths = decide_threshold(BAR, 0.65, Interval(0.55, 0.74, "Wilson over paths"), 32, unit="paths")
    assert "32 paths cannot decide it" in paths.reason and "would" not in paths.reason
    assert "wholly on the failing side" in below.reason
    # a claim of low values (a '<' bar) the same way round: only an interval wholly under the bar holds
    low = Bar("<", 0.6, "src")
    assert decide_threshold(low, 0.3, interval_of(ones(38, n)), n).holds
    assert not decide_threshold(low, 0.55, interval_of(ones(70, n)), n).holds  # [0.46, 0.63] straddles 0.6
    assert not decide_threshold(low, 0.8, interval_of(ones(102, n)), n).holds


def test_a_control_that_is_not_caught_makes_the_case_fail():
    n = 128
    iv = interval_of(ones(120, n))
    caught = decide_threshold(BAR, 120 / n, iv, n, (0.0, interval_of(ones(0, n))))
    uncaught = decide_threshold(BAR, 120 / n, iv, n, (0.9, interval_of(ones(115, n))))
    straddling = decide_threshold(BAR, 120 / n, iv, n, (0.6, interval_of(ones(77, n))))
    assert caught.holds and caught.control["caught"]
    assert not uncaught.holds and "also clears" in uncaught.reason
    assert not straddling.holds and "straddles" in straddling.reason


def test_an_exact_claim_holds_only_when_every_value_meets_it():
    bar = Bar("==", 1.0, "closed form")
    assert decide_threshold(bar, 1.0, interval_of(ones(64, 64), exact=True), 64).holds
    assert not decide_threshold(bar, 63 / 64, interval_of(ones(63, 64), exact=True), 64).holds


def paired(values):
    return list(range(len(values))), values


def test_direction_cases_use_a_paired_test_and_ties_never_hold():
    n = 128
    better, worse = ones(100, n), ones(60, n)
    greater = Bar(">", None, "src")
    assert decide_direction(greater, paired(better), paired(worse), Interval(0, 1, "x")).holds
    assert not decide_direction(greater, paired(worse), paired(better), Interval(0, 1, "x")).holds
    tie = decide_direction(Bar(">=", None, "src"), paired(better), paired(better), Interval(0, 1, "x"))
    assert not tie.holds and tie.test["discordant"] == [0, 0]
    # a small difference over few discordant pairs is not shown at the 5% level
    close = decide_direction(greater, paired(ones(66, n)), paired(ones(62, n)), Interval(0, 1, "x"))
    assert not close.holds and close.test["p"] > 0.05
    # non-binary values: a paired bootstrap of the difference, and the exact sign test
    a, b = torch.linspace(0, 1, n).tolist(), (torch.linspace(0, 1, n) + 0.1).tolist()
    assert decide_direction(Bar("<", None, "src"), paired(a), paired(b), Interval(0, 1, "x")).test["name"] == \
        "paired bootstrap and sign test"
    assert decide_direction(Bar("<", None, "src"), paired(a), paired(b), Interval(0, 1, "x")).holds
    assert not decide_direction(Bar(">", None, "src"), paired(a), paired(b), Interval(0, 1, "x")).holds
    # a noisy difference whose interval straddles 0 holds neither way
    noise = torch.randn(n, generator=torch.Generator().manual_seed(0)).tolist()
    noisy = [x + e for x, e in zip(a, noise)]
    for op in ("<", ">"):
        assert not decide_direction(Bar(op, None, "src"), paired(a), paired(noisy), Interval(0, 1, "x")).holds
    # sides that share no noise ids: an unpaired bootstrap, the right way round
    other = (list(range(n, 2 * n)), b)
    unpaired = decide_direction(Bar("<", None, "src"), paired(a), other, Interval(0, 1, "x"))
    assert unpaired.test["name"] == "unpaired bootstrap and permutation test"
    shifted = (list(range(n, 2 * n)), (torch.linspace(0, 1, n) + 0.5).tolist())  # clearly above a
    assert decide_direction(Bar("<", None, "src"), paired(a), shifted, Interval(0, 1, "x")).holds
    assert not decide_direction(Bar(">", None, "src"), paired(a), shifted, Interval(0, 1, "x")).holds
    # values that share a noise (keys "noise/label"): resampled by noise, the right way round
    keys = [f"{i}/{c}" for i in range(n // 2) for c in range(2)]
    lo_side, hi_side = (keys, [v * 0.5 for v in a]), (keys, [v * 0.5 + 0.3 for v in a])
    assert decide_direction(Bar("<", None, "src"), lo_side, hi_side, Interval(0, 1, "x")).holds
    assert not decide_direction(Bar(">", None, "src"), lo_side, hi_side, Interval(0, 1, "x")).holds
    noisy_side = (keys, [v * 0.5 + e for v, e in zip(a, noise)])
    for op in ("<", ">"):
        assert not decide_direction(Bar(op, None, "src"), lo_side, noisy_side, Interval(0, 1, "x")).holds


def test_bad_input_is_refused_with_the_valid_range():
    with pytest.raises(ValueError, match="successes must lie in \\[0, n = 4\\], got 5"):
        stats.wilson(5, 4)
    with pytest.raises(ValueError, match="at least one value, got n = 0"):
        stats.wilson(0, 0)
    with pytest.raises(ValueError, match="needs one of >=, >, <=, <"):
        decide_direction(Bar("==", None, "s"), paired([1.0]), paired([0.0]), Interval(0, 1, "x"))


def test_rp_checks_the_ids_of_both_sides_and_a_control_pairs_other_noises():
    import numpy as np

    from fixtures.measure import Measure
    from models.scores import PairingError
    from models.store import SampleSet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    embed = lambda x: torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(len(x), -1) - 127.5)  # centred pixels
    m = Measure(None, None, None, embed, 4)
    a = SampleSet(images, np.arange(4), 20, {"model": "a"})
    same = m.rp(a, SampleSet(images.copy(), np.arange(4), 20, {"model": "b"}))
    assert same.value == 1.0 and same.keys == [0, 1, 2, 3]
    with pytest.raises(PairingError, match="only in the first set \\[3\\], only in the second \\[4\\]"):
        m.rp(a, SampleSet(images, np.array([0, 1, 2, 4]), 20, {"model": "b"}))
    shifted = m.rp(a, SampleSet(images.copy(), np.arange(4), 20, {"model": "b"}), shift=1)
    assert shifted.value < 1.0 and shifted.keys == [0, 1, 2, 3]  # image i against image i + 1, keyed by i

    seen = []  # the control embeds the stored sets as they are (cached once), never a re-ordered copy of one
    m.embed = lambda x: (seen.append(np.asarray(x).copy()), embed(x))[1]
    b = SampleSet(images[::-1].copy(), np.arange(4)[::-1].copy(), 20, {"model": "b"})  # stored in another order
    assert m.rp(a, b, shift=1).value == shifted.value
    assert len(seen) == 2 and all(any(np.array_equal(x, s.images) for s in (a, b)) for x in seen)


def test_units_that_share_a_noise_are_resampled_together():
    # 32 noises x 5 labels: each noise's five values are equal, so the information is that of 32 values, not 160
    values = [float(i % 2) for i in range(32) for _ in range(5)]
    keys = [f"{i}/{c}" for i in range(32) for c in range(5)]
    clustered = interval_of(values, keys=keys)
    flat = interval_of(values)
    assert clustered.method == "Wilson over noises" and flat.method == "Wilson"
    assert clustered.hi - clustered.lo > 1.8 * (flat.hi - flat.lo)  # about sqrt(5) wider
    scores = [0.5 + 0.1 * v + 0.01 * (i % 7) for i, v in enumerate(values[::5]) for _ in range(5)]  # not 0/1
    boot, flat_boot = interval_of(scores, keys=keys), interval_of(scores)
    assert boot.method == "bootstrap over noises" and flat_boot.method == "bootstrap"
    assert boot.hi - boot.lo > 1.8 * (flat_boot.hi - flat_boot.lo)  # the cluster bootstrap too, about sqrt(5)
    assert 0 <= clustered.lo < 0.5 < clustered.hi <= 1  # around the mean, within the values' range


def test_the_cluster_bootstrap_resamples_whole_clusters_with_the_seeded_draw():
    """Against a direct reference: each resample draws clusters with replacement (the seeded generator's draw) and
    takes the mean of all their values; clusters of unequal size weigh by their values."""
    from models.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, cluster_bootstrap_mean

    rng = np.random.default_rng(3)
    sizes = rng.integers(1, 6, 20)
    clusters = [c for c, m in enumerate(sizes) for _ in range(m)]
    values = rng.normal(size=len(clusters)).tolist()
    groups = [[v for v, c in zip(values, clusters) if c == k] for k in range(len(sizes))]
    idx = torch.randint(len(groups), (BOOTSTRAP_RESAMPLES, len(groups)),
                        generator=torch.Generator().manual_seed(BOOTSTRAP_SEED))
    means = torch.tensor([sum(sum(groups[k]) for k in row) / sum(len(groups[k]) for k in row)
                          for row in idx.tolist()], dtype=torch.float64)
    want = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    assert cluster_bootstrap_mean(values, clusters) == pytest.approx(want, abs=1e-12)


def test_the_interval_and_the_paired_test_name_their_clusters():
    """A path's points and a plane's neighbour pairs are clustered by path and by plane, not by noise: the interval
    and the paired direction test say so."""
    values = [float((i + j) % 2) for i in range(6) for j in range(4)]
    for prefix, unit in (("path", "paths"), ("plane", "planes"), ("", "noises")):
        keys = [f"{prefix}{i}/{j}" for i in range(6) for j in range(4)]
        assert interval_of(values, keys=keys).method == f"Wilson over {unit}"
        assert interval_of([0.5 + v for v in values], keys=keys).method == f"bootstrap over {unit}"
        d = decide_direction(Bar(">", None, "src"), (keys, [v + 0.1 for v in values]), (keys, values),
                             interval_of(values, keys=keys))
        assert d.test["name"] == f"paired bootstrap and sign test over {unit}" and d.test[unit] == 6
        assert f"over 6 paired {unit} (24 pairs)" in d.reason


def test_an_exact_claims_control_is_caught_only_when_its_interval_excludes_the_bar():
    bar = Bar("==", 1.0, "closed form")
    assert interval_of(ones(0, 64)).caught(bar) and interval_of(ones(20, 64)).caught(bar)
    assert not interval_of(ones(63, 64)).caught(bar) and not interval_of(ones(38, 64)).caught(bar)


def test_the_schema_recomputes_a_direction_test_from_its_figures():
    from reports.schema import ResultsError, direction_holds

    assert direction_holds({"discordant": [12, 3], "holds": True}, ">", "here")
    assert not direction_holds({"discordant": [9, 3], "holds": False}, ">", "here")  # p = 0.146
    with pytest.raises(ResultsError, match="records holds True, but its figures say False"):
        direction_holds({"discordant": [9, 3], "holds": True}, ">", "here")
    assert direction_holds({"difference": [-0.3, -0.1], "holds": True}, "<", "here")
    # with the sign test's counts: both must show the direction
    assert direction_holds({"difference": [0.5, 0.5], "signs": [6, 0], "holds": True}, ">", "here")
    assert not direction_holds({"difference": [0.5, 0.5], "signs": [3, 0], "holds": False}, ">", "here")
    with pytest.raises(ResultsError, match="records holds True, but its figures say False"):
        direction_holds({"difference": [0.5, 0.5], "signs": [3, 0], "holds": True}, ">", "here")
    with pytest.raises(ResultsError, match="a sign test needs two counts"):
        direction_holds({"difference": [0.5, 0.5], "signs": [3], "holds": True}, ">", "here")
    # an unpaired test: the bootstrap interval and the permutation test's recorded p (the record keeps no values)
    assert direction_holds({"difference": [-0.3, -0.1], "p": 0.0005, "holds": True}, "<", "here")
    assert not direction_holds({"difference": [-0.3, -0.1], "p": 0.09, "holds": False}, "<", "here")
    with pytest.raises(ResultsError, match="records holds True, but its figures say False"):
        direction_holds({"difference": [-0.3, -0.1], "p": 0.09, "holds": True}, "<", "here")
    with pytest.raises(ResultsError, match=r"a permutation test's 'p' must lie in \(0, 1\], got 0"):
        direction_holds({"difference": [-0.3, -0.1], "p": 0, "holds": True}, "<", "here")
    # what the decision records is what the schema recomputes: one value a side (bootstrap [0.4, 0.4], p = 1)
    one = decide_direction(Bar(">", None, "src"), (["a:0"], [0.9]), (["b:0"], [0.5]), Interval(0, 1, "x"))
    assert direction_holds(one.test, ">", "here") is False


def test_held_out_gl_scores_new_crops_of_the_training_photos_against_the_training_set():
    """The GL cases' reference: thumbnails size..size+n of the nested embedded set against the first `size`. With
    an embedding that tells only identical images apart, held-out data scores GL 1 and the training set GL 0."""
    import hashlib

    import numpy as np

    from fixtures.measure import Measure
    from models.store import SampleSet

    def embed(x):  # one random unit vector per distinct image (64 dims: two distinct images are far below 0.6)
        rows = [np.random.default_rng(int(hashlib.sha256(a.tobytes()).hexdigest()[:15], 16)).standard_normal(64)
                for a in np.asarray(x)]
        return torch.nn.functional.normalize(torch.tensor(np.stack(rows), dtype=torch.float32), dim=1)

    m = Measure(None, None, None, embed, 4)
    ref = m.held_out_gl(8, 16)
    assert ref["value"] == 1.0 and ref["n"] == 16 and ref["interval"][2] == "Wilson", ref
    assert "thumbnails 8-23" in ref["source"] and ref["label"] == "held-out thumbnails"
    train = m.training_images(8)
    assert m.gl(SampleSet(train, np.arange(8), 20, {"model": "train"}), 8).value == 0.0  # the training set itself
    assert m.held_out_gl(8, 16) is ref  # made once per size and count


def test_median_interval_matches_the_order_statistic_tables():
    # the distribution-free 95% interval of a median from n values is [x_(j), x_(n+1-j)]; tables (e.g. Conover,
    # Practical Nonparametric Statistics, Table A3) give j = 2 for n = 10 (coverage 0.9785) and j = 6 for n = 20
    # (0.9586); below n = 6 no j reaches 95% and the whole range is returned
    assert stats.median_interval(range(1, 11)) == (2, 9)
    assert stats.median_interval(range(1, 21)) == (6, 15)
    assert stats.median_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert stats.median_interval(reversed(range(1, 21))) == (6, 15)  # order of the values does not matter


@pytest.mark.parametrize("n", [7, 12, 21, 35])
def test_median_interval_covers_the_median_at_least_95_percent_of_the_time(n):
    g = torch.Generator().manual_seed(n)
    draws = torch.empty(4000, n).exponential_(generator=g)  # a skewed distribution, median ln 2
    covered = sum(lo <= math.log(2) <= hi for lo, hi in map(stats.median_interval, draws.tolist()))
    # coverage is 1 - 2 P(Bin(n, 1/2) < j) >= 0.95 exactly; 4,000 trials: sd <= 0.0035, so 0.94 is 3 sd below
    assert covered / 4000 >= 0.94


@pytest.mark.parametrize("values, level, message", [([], 0.95, "at least one value"), ([1.0], 1.0, "level"),
                                                    ([1.0], 0.0, "level")])
def test_median_interval_refuses_bad_input(values, level, message):
    with pytest.raises(ValueError, match=message):
        stats.median_interval(values, level)


def test_mcnemar_above_the_integer_sum_matches_it_in_log_space():
    """Above EXACT_TAIL_MAX discordant pairs (the paper's 10,000 noises reach it) the tail is summed in log space:
    the same p within 1e-9 relative of the integer sum (which took 4 s at 10,000 pairs and did not finish in a
    minute at 39,000)."""
    import math

    from models.stats import EXACT_TAIL_MAX, mcnemar_exact

    for b, c in ((1500, 1600), (700, 900), (5200, 4800)):
        assert b + c > EXACT_TAIL_MAX
        n = b + c
        exact = 2 * sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2 ** n
        assert mcnemar_exact(b, c) == pytest.approx(exact, rel=1e-9)
        assert mcnemar_exact(c, b) == mcnemar_exact(b, c)
    assert mcnemar_exact(20000, 19000) == pytest.approx(4.2168e-7, rel=1e-4)  # scipy.stats.binomtest: 4.21684e-07
    assert mcnemar_exact(600, 601) == 1.0 and mcnemar_exact(2000, 2000) == 1.0


def test_a_paired_direction_of_few_pairs_needs_the_exact_sign_test():
    """Three pairs that each differ by 0.5: the percentile bootstrap gives the one-point interval [0.5, 0.5], the
    exact sign test p = 0.25, so the direction is not shown; six such pairs give p = 0.031 and it is."""
    greater = Bar(">", None, "src")
    few = decide_direction(greater, paired([1.0, 1.0, 1.0]), paired([0.5, 0.5, 0.5]), Interval(0, 1, "x"))
    assert few.test["difference"] == [0.5, 0.5] and few.test["p"] == 0.25 and not few.holds
    assert decide_direction(greater, paired([1.0] * 6), paired([0.5] * 6), Interval(0, 1, "x")).holds
    # most pairs the claimed way but the mean the other way: not shown
    a, b = [1.0] * 20 + [0.0] * 4, [0.9] * 20 + [9.0] * 4
    mixed = decide_direction(greater, paired(a), paired(b), Interval(0, 1, "x"))
    assert mixed.test["signs"] == [20, 4] and mixed.test["p"] < 0.05 and not mixed.holds


def test_an_unpaired_direction_of_few_values_needs_the_permutation_test():
    """Sides that share no keys (the loss case: two runs' steps): the percentile bootstrap of one value a side is a
    point ([0.4, 0.4]) and of three 1s against three 0s [1, 1]; the permutation test gives p = 1 and about 2 / 20,
    so neither direction is shown. Well-separated samples of 200 are (p = 1 / 2001, the least it can give)."""
    greater = Bar(">", None, "src")
    one = decide_direction(greater, (["a:0"], [0.9]), (["b:0"], [0.5]), Interval(0, 1, "x"))
    assert one.test["difference"] == pytest.approx([0.4, 0.4]) and one.test["p"] == 1.0 and not one.holds
    three = decide_direction(greater, (["a:0", "a:1", "a:2"], [1.0] * 3), (["b:0", "b:1", "b:2"], [0.0] * 3),
                             Interval(0, 1, "x"))
    assert three.test["difference"] == [1.0, 1.0] and 0.07 < three.test["p"] < 0.13 and not three.holds
    gen = torch.Generator().manual_seed(1)
    low, high = (torch.rand(200, generator=gen) * 0.1).tolist(), (0.3 + torch.rand(200, generator=gen) * 0.1).tolist()
    keys = lambda side: [f"{side}:{i}" for i in range(200)]  # noqa: E731
    clear = decide_direction(Bar("<", None, "src"), (keys("a"), low), (keys("b"), high), Interval(0, 1, "x"))
    assert clear.holds and clear.test["p"] == 1 / 2001
    assert not decide_direction(greater, (keys("a"), low), (keys("b"), high), Interval(0, 1, "x")).holds


def test_the_permutation_test_is_exact_at_its_level():
    """Under no difference (both sides drawn alike) the test rejects at about its level, not more (Monte Carlo with
    the observed labelling among the draws: P(p <= 0.05) <= 0.05). 200 pairs of samples of 10 a side."""
    gen = torch.Generator().manual_seed(2)
    rejected = sum(stats.permutation_test(torch.randn(10, generator=gen).tolist(),
                                          torch.randn(10, generator=gen).tolist(), resamples=199, seed=k) <= 0.05
                   for k in range(200))
    assert rejected <= 21  # 5% of 200 is 10; 21 is Binomial(200, 0.05)'s 99.9% quantile (exact sum)


def test_sides_that_share_some_noise_ids_but_not_all_are_refused():
    with pytest.raises(ValueError, match=r"the two sides share 2 of their noise ids but not all \(3 and 2 ids\)"):
        decide_direction(Bar(">", None, "src"), ([0, 1, 2], [1.0, 1.0, 0.0]), ([0, 1], [0.0, 0.0]),
                         Interval(0, 1, "x"))


def test_a_bootstrap_over_one_cluster_is_refused():
    """Every resample of one cluster is that cluster: the interval would be a point whatever the values."""
    with pytest.raises(ValueError, match="a bootstrap over clusters needs at least two of them, got 1"):
        stats.cluster_bootstrap_mean([0.2, 0.5, 0.9], [0, 0, 0])
    with pytest.raises(ValueError, match="a bootstrap over clusters needs at least two of them, got 1"):
        stats.bootstrap_kappa(torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 1, 0]), 3, clusters=["p0"] * 4)
    assert stats.cluster_bootstrap_mean([0.2, 0.5, 0.9], [0, 0, 1])[0] < 0.5


def test_clustered_units_are_tested_per_noise():
    """0/1 units several per noise (labels, path points): two noises all the claimed way are not evidence (the
    sign test over noises: p = 0.5), though their four units would pass a bootstrap over noises ([1, 1])."""
    greater = Bar(">", None, "src")
    keys = ["0/0", "0/1", "1/0", "1/1"]
    two = decide_direction(greater, (keys, [1.0] * 4), (keys, [0.0] * 4), Interval(0, 1, "x"))
    assert two.test["signs"] == [2, 0] and two.test["p"] == 0.5 and not two.holds
    keys = [f"{i}/{c}" for i in range(8) for c in range(2)]
    eight = decide_direction(greater, (keys, [1.0] * 16), (keys, [0.0] * 16), Interval(0, 1, "x"))
    assert eight.test["signs"] == [8, 0] and eight.holds


def df_factor(n: int, j: int) -> float:
    """Korn & Graubard's factor on the effective size of n values in j clusters: (t_(n-1) / t_(j-1))^2 at 97.5%."""
    from scipy.stats import t

    return (t.ppf(0.975, n - 1) / t.ppf(0.975, j - 1)) ** 2


def test_a_clustered_proportion_at_0_or_1_keeps_an_interval_over_its_noises():
    """The cluster bootstrap collapses to a point when every unit is 1; the clustered Wilson interval counts the
    noises as the independent units there: Wilson over 2 noises, not 20 units."""
    from models.stats import clustered_wilson, interval, wilson

    clusters = [i // 10 for i in range(20)]
    two = 2 * df_factor(20, 2)  # two clusters: the variance has one degree of freedom
    lo, hi, method = interval([1.0] * 20, clusters)
    assert (lo, hi) == pytest.approx(wilson(two, two), rel=1e-12) and method == "Wilson over noises"
    assert interval([0.0] * 20, clusters)[:2] == pytest.approx(wilson(0, two), rel=1e-12)
    # units independent within their noise: the effective size is near the unit count, as Wilson over units
    rng = torch.Generator().manual_seed(0)
    units = (torch.rand(4000, generator=rng) < 0.7).float().tolist()
    lo, hi = clustered_wilson(units, [i // 4 for i in range(4000)])
    wlo, whi = wilson(sum(units), 4000)
    assert abs((hi - lo) / (whi - wlo) - 1) < 0.1
    # units equal within their noise: the noises are the sample, Wilson over them
    same = [float(i % 3 == 0) for i in range(1000) for _ in range(4)]
    f = df_factor(4000, 1000)
    assert clustered_wilson(same, [i // 4 for i in range(4000)]) == pytest.approx(wilson(334 * f, 1000 * f), rel=1e-9)


def test_a_kappa_interval_over_clusters_resamples_whole_clusters():
    """Grid points of one noise plane share its anchors: resampled plane by plane, eight planes that each agree
    perfectly or not at all give an interval far wider than one over their 800 points, which treats them as
    independent."""
    import torch

    from models.stats import bootstrap_kappa

    a = torch.arange(800) % 3
    b = torch.where((torch.arange(800) // 100) % 2 == 0, a, (a + 1) % 3)  # planes 0, 2, 4, 6 agree, 1, 3, 5, 7 do not
    planes = (torch.arange(800) // 100).tolist()
    items, whole = bootstrap_kappa(a, b, 3), bootstrap_kappa(a, b, 3, clusters=planes)
    assert items[1] - items[0] < 0.15 and whole[1] - whole[0] > 0.5
    with pytest.raises(ValueError, match="3 cluster labels for 800 items"):
        bootstrap_kappa(a, b, 3, clusters=[0, 1, 2])


def test_the_kappa_bootstrap_equals_kappa_on_each_resample():
    """The confusion-table sums give what cohen_kappa gives on the resampled items, for items and for clusters."""
    import torch

    from models.stats import ALPHA, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, bootstrap_kappa, by_cluster, cohen_kappa

    gen = torch.Generator().manual_seed(3)
    a = torch.randint(3, (90,), generator=gen)
    b = torch.where(torch.rand(90, generator=gen) < 0.7, a, torch.randint(3, (90,), generator=gen))
    planes = (torch.arange(90) // 10).tolist()
    for clusters in (None, planes):
        rng = torch.Generator().manual_seed(BOOTSTRAP_SEED)
        groups = [torch.arange(90)[[j]] for j in range(90)] if clusters is None else \
            [torch.tensor(g, dtype=torch.long) for g in by_cluster(range(90), clusters)]
        picks = torch.randint(len(groups), (BOOTSTRAP_RESAMPLES, len(groups)), generator=rng)
        ref = torch.tensor([cohen_kappa(a[i], b[i], 3) for i in
                            (torch.cat([groups[j] for j in pick.tolist()]) for pick in picks)], dtype=torch.float64)
        want = torch.quantile(ref, torch.tensor([ALPHA / 2, 1 - ALPHA / 2], dtype=torch.float64)).tolist()
        assert bootstrap_kappa(a, b, 3, clusters=clusters) == pytest.approx(want, abs=1e-12)


def test_a_clustered_proportion_counts_unequal_clusters_by_their_effective_number():
    """Ten clusters, one of 91 units and nine of one: all 1, the evidence is mostly one cluster, so the interval is
    Wilson over Kish's (sum m)^2 / sum m^2 = 10,000 / 8,290 clusters, not over 10; equal clusters keep their count."""
    from models.stats import clustered_wilson, wilson

    clusters = [0] * 91 + list(range(1, 10))
    kish = 100 ** 2 / (91 ** 2 + 9) * df_factor(100, 10)
    assert clustered_wilson([1.0] * 100, clusters) == pytest.approx(wilson(kish, kish), rel=1e-12)
    assert clustered_wilson([1.0] * 100, clusters)[0] < wilson(10, 10)[0] - 0.4
    ten = 10 * df_factor(40, 10)
    assert clustered_wilson([1.0] * 40, [i // 4 for i in range(40)]) == pytest.approx(wilson(ten, ten), rel=1e-12)


def test_a_chained_proportion_covers_a_1_dependent_chain_as_wilson_over_its_pairs_does_not():
    """Pairs that share a noise with their neighbours (a control's pair i takes noises i and i + 1) give a
    1-dependent chain of 0/1 values: e_i = x_i or x_(i+1) over independent x. Wilson over the pairs, as if they were
    independent, covers the true proportion 81.5% and 86.6% of the time (measured below: 2,000 chains each); the
    chained interval 96.1% and 95.0% (this chain's design effect is about 1.95, near the bound 2)."""
    import numpy as np

    from models.stats import chained_wilson, wilson

    rng = np.random.default_rng(0)
    for q, n in ((0.1, 64), (0.05, 128)):
        truth = 1 - (1 - q) ** 2
        chained = independent = 0
        for _ in range(2000):
            x = rng.random(n) < q
            e = (x | np.roll(x, -1)).astype(float)
            lo, hi = chained_wilson(e.tolist())
            chained += lo <= truth <= hi
            lo, hi = wilson(e.sum(), n)
            independent += lo <= truth <= hi
        assert chained / 2000 > 0.93 and independent / 2000 < 0.9, (q, n, chained, independent)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=2, max_size=80))
def test_a_chained_interval_is_wilson_over_half_its_pairs_and_widens_with_none_of_them(hits):
    """The chain's design effect is bounded by 2 (Hoeffding's decomposition), and the interval uses that bound: Wilson
    over half the pairs, whatever the pattern of matches, so one more match never narrows it below that of fewer (an
    estimated lag-1 covariance, negative after one isolated match, would: 1 of 128 gave [0.001, 0.043] against
    [0, 0.057] for none)."""
    from models.stats import chained_wilson, wilson

    values = [float(h) for h in hits]
    n, k = len(values), sum(values)
    assert chained_wilson(values) == wilson(k / 2, n / 2)
    lo, hi = chained_wilson(values)
    assert lo <= k / n <= hi
    if k < n:  # one more match: the upper bound does not fall
        more = values.copy()
        more[values.index(0.0)] = 1.0
        assert chained_wilson(more)[1] >= hi


def test_a_chained_proportion_at_0_or_1_is_wilson_over_half_its_pairs():
    from models.stats import chained_wilson, wilson

    assert chained_wilson([0.0] * 128) == wilson(0, 64)
    assert chained_wilson([1.0] * 10) == wilson(5, 5)
    assert chained_wilson([0.0, 1.0]) == wilson(0.5, 1)  # two noises: both pairs take both, one unit
    # clusters (a noise's values under several labels) along the chain: half their count
    assert chained_wilson([0.0] * 40, [i // 4 for i in range(40)]) == pytest.approx(wilson(0, 5 * df_factor(40, 10)),
                                                                                    rel=1e-12)
    with pytest.raises(ValueError, match="0/1 values"):
        chained_wilson([0.5, 0.0, 1.0])


def test_a_shifted_controls_interval_is_the_chained_one():
    """A control pairs noise i with noise i + 1: its record's interval is Wilson over half the pairs (chained pairs),
    not over the pairs as if independent; the same-noise measurement keeps Wilson over its pairs."""
    import numpy as np

    from cases import Case, Run
    from fixtures.measure import Measure
    from fixtures.metrics import METRICS, Side
    from models.stats import CHAINED, wilson
    from models.store import SampleSet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    embed = lambda x: torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(len(x), -1) - 127.5)
    m = Measure(None, None, None, embed, 16)
    order = rng.permutation(16)  # stored in another order than the ids': the pairing follows a's stored order
    sets = {"a": SampleSet(images[order], order, 20, {"model": "a"}),
            "b": SampleSet(images[order].copy(), order.copy(), 20, {"model": "b"})}
    m.sets = lambda case, side: tuple(sets[r.model] for r in side.runs)
    case = Case("C2", "src", "rp", (Run("a"), Run("b")), Bar(">=", 0.6, "src"))
    side = Side.of(case)
    assert METRICS["rp"].measure(m, case, side).interval is None  # same noises: independent pairs, plain Wilson
    control = METRICS["rp"].control(m, case, side)
    assert control.value == 0.0 and control.interval == (*wilson(0, 8), CHAINED)
    assert METRICS["mae"].control(m, case, side).interval[2] == CHAINED


def test_the_clustered_interval_covers_with_few_clusters_where_the_normal_quantile_does_not():
    """0/1 values in 4 clusters of 16, each value its cluster's shared draw half the time (true proportion 0.7): the
    degrees-of-freedom factor brings coverage near 95% (measured 0.94 over 1,500 draws; without it 0.79)."""
    from models.stats import Z, _clustered_size, clustered_wilson, wilson

    rng = np.random.default_rng(0)
    clusters = [i // 16 for i in range(64)]
    with_factor = without = 0
    for _ in range(1500):
        shared = np.repeat(rng.random(4) < 0.7, 16)
        values = np.where(rng.random(64) < 0.5, shared, rng.random(64) < 0.7).astype(float).tolist()
        lo, hi = clustered_wilson(values, clusters)
        with_factor += lo <= 0.7 <= hi
        p, size = _clustered_size(values, clusters)
        lo, hi = wilson(p * size / df_factor(64, 4), size / df_factor(64, 4), Z)
        without += lo <= 0.7 <= hi
    assert with_factor / 1500 > 0.92 and without / 1500 < 0.85, (with_factor, without)


def test_a_chained_measurement_with_several_values_per_noise_halves_the_noises_effective_count():
    """RP_cond's control keys its units "<id>/<label>" and a path's points "path<k>/<point>": a noise's (a path's)
    values are one cluster, and the chain halves the clusters' effective count."""
    from fixtures.metrics import chained
    from fixtures.results import Measured
    from models.stats import clustered_wilson, wilson

    same = [float(i % 5 == 0) for i in range(20) for _ in range(2)]  # each noise's two labels agree
    out = chained(Measured(sum(same) / 40, 40, keys=[f"{i}/{c}" for i in range(20) for c in range(2)], units=same))
    f = df_factor(40, 20)
    assert out.interval[:2] == pytest.approx(wilson(4 / 2 * f, 10 * f), rel=1e-12)
    assert out.interval[2] == "Wilson over chained noises"
    assert clustered_wilson(same, [i // 2 for i in range(40)]) == pytest.approx(wilson(4 * f, 20 * f), rel=1e-12)
    paths = chained(Measured(0.0, 12, keys=[f"path{k}/{j}" for k in range(4) for j in range(3)], units=[0.0] * 12))
    f = df_factor(12, 4)
    assert paths.interval[:2] == pytest.approx(wilson(0, 2 * f), rel=1e-12)
    assert paths.interval[2] == "Wilson over chained paths"


def test_the_layout_cases_pair_other_noises_in_couples_that_share_no_noise():
    """The layout cases' other-noise side pairs noises 2k and 2k + 1 each against the other (an odd count's last
    three in a cycle): a couple's values come from its own two (three) noises, and both sides key their values by
    couple, so the paired test counts couples, not the values that share a noise."""
    import numpy as np

    from cases import Case, Run
    from fixtures.measure import Measure
    from fixtures.metrics import METRICS, Side, couples
    from fixtures.results import decide
    from models.store import SampleSet

    assert couples(4) == ([1, 0, 3, 2], [0, 0, 1, 1])
    assert couples(5) == ([1, 0, 3, 4, 2], [0, 0, 1, 1, 1])
    for n in (1, 2, 3):  # one couple: no interval over couples
        with pytest.raises(ValueError, match=f"they need at least 4 noises .*, got {n}$"):
            couples(n)
    for n in range(4, 16):  # every position is paired with another of its own couple
        partner, couple = couples(n)
        assert sorted(partner) == list(range(n)) and all(p != j and couple[p] == couple[j]
                                                          for j, p in enumerate(partner))

    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)  # as stored: by position, ids in another order
    order = rng.permutation(16)
    sets = {"a": SampleSet(stored, order, 20, {"model": "a"}), "b": SampleSet(stored.copy(), order.copy(), 20,
                                                                               {"model": "b"})}
    m = Measure(None, None, None, None, 16)
    m.sets = lambda case, side: tuple(sets[r.model] for r in side.runs)
    case = Case("C4", "App. G", "layout_mae", (Run("a"), Run("b")), Bar("<", None, "src"), versus=(Run("a"), Run("b")),
                params={"pool": 4, "pairing": "same noise, other model", "versus_pairing": "other noise, other model"})
    same = METRICS["layout_mae"].measure(m, case, Side.of(case))
    other = METRICS["layout_mae"].measure(m, case, Side.of(case, versus=True))
    assert same.value == 0 and other.value > 0 and same.keys == other.keys
    ids = [int(k.split("/")[1]) for k in other.keys]
    assert ids == order.tolist() and {k.split("/")[0] for k in other.keys} == {f"couple{k}" for k in range(8)}
    decision = decide(case, same, other)
    assert decision.holds and decision.test["name"] == "paired bootstrap and sign test over noise couples"
    assert decision.test["signs"] == [0, 8]
    # where a couple's two noises give one image, the other-noise side pairs them: 0, whatever their neighbours
    stored[1::2] = stored[0::2]
    sets.update(a=SampleSet(stored, order, 20, {"model": "a"}), b=SampleSet(stored.copy(), order.copy(), 20,
                                                                          {"model": "b"}))
    assert METRICS["layout_mae"].measure(m, case, Side.of(case, versus=True)).value == 0

    # the conditional form, 5 noises: labels c against c + 1 (same noise), or noises in couples (the last three in
    # a cycle) under one label; both sides keyed "couple<k>/<id>:<label>"
    five = [SampleSet(rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8), np.arange(5), 20, {"label": c})
            for c in range(2)]
    m.class_sets = lambda case, run: five
    cond = Case("C4", "App. E", "layout_mae", (Run("a"),), Bar("<", None, "src"), versus=(Run("a"),),
                params={"pool": 4, "pairing": "same noise, other label", "versus_pairing": "other noise, same label"})
    a, b = (METRICS["layout_mae"].measure(m, cond, Side.of(cond, versus=v)) for v in (False, True))
    keys = [f"couple{k}/{i}:{c}" for c in range(2) for i, k in enumerate([0, 0, 1, 1, 1])]
    assert a.keys == b.keys == keys
    from models.scores import colour_layout, mae_255
    lay = [colour_layout(torch.from_numpy(s.images), 4) for s in five]
    assert b.units[4] == pytest.approx(float(mae_255(lay[0][4:5], lay[0][2:3])[0]))  # noise 4 against noise 2


def test_a_straddling_chained_interval_says_how_many_noises_would_decide_it():
    """Over chained pairs the effective size is half the pairs, so the count that would decide at the same proportion
    is about twice the independent one (here one fewer: an odd count of pairs decides)."""
    from models.stats import CHAINED, chained_wilson, noises_to_decide

    values = [1.0] * 40 + [0.0] * 24  # 0.625 over 64 chained pairs: Wilson over 32 straddles 0.6
    lo, hi = chained_wilson(values)
    decision = decide_threshold(Bar(">=", 0.6, "src"), 0.625, Interval(lo, hi, CHAINED), 64)
    assert not decision.holds and decision.noises_to_decide == 2 * noises_to_decide(0.625, 0.6) - 1 == 2951
    assert f"about {decision.noises_to_decide} noises would" in decision.reason


def test_the_noises_for_a_power_are_the_fewest_at_which_the_true_share_is_decided_that_often():
    """noises_to_decide gives the count at which a share of exactly p would just be decided: a pair whose true share
    is p is decided there about half the time. noises_for_power gives the count of the suite's rule, nine times in
    ten (exact binomial), on either side of the bar."""
    from scipy.stats import binom

    from models.stats import noises_for_power, noises_to_decide, wilson

    def chance(n, p, bar):  # of a Wilson interval wholly on p's side of the bar, counted directly
        ks = [k for k in range(n + 1) if (wilson(k, n)[0] > bar if p > bar else wilson(k, n)[1] < bar)]
        return float(sum(binom.pmf(k, n, p) for k in ks))

    n = noises_for_power(0.63, 0.6)
    assert n == 2746 and chance(n, 0.63, 0.6) >= 0.9 > chance(n - 1, 0.63, 0.6)
    assert 0.45 < chance(noises_to_decide(0.63, 0.6), 0.63, 0.6) < 0.55
    low = noises_for_power(0.1, 0.6)
    assert chance(low, 0.1, 0.6) >= 0.9 > chance(low - 1, 0.1, 0.6)
    assert noises_for_power(0.6, 0.6) is None and noises_for_power(0.7, 0.6, power=0.5) <= noises_for_power(0.7, 0.6)


def test_a_direction_whose_sides_repeat_a_key_or_are_keyed_two_ways_or_clustered_unpaired_is_refused():
    """Repeated keys were paired with the last value of each; 0 against "0" made a paired comparison unpaired; an
    unpaired test over clustered values took each value as independent (p 0.0015 from 3 couples a side)."""
    bar, iv = Bar(">", None, "src"), Interval(0, 1, "x")
    with pytest.raises(ValueError, match=r"the measurement's keys repeat \(1\): each value needs a key of its own"):
        decide_direction(bar, ([0, 1, 1, 2], [1, 1, 1, 0]), ([0, 1, 2, 3], [0, 0, 0, 0]), iv)
    with pytest.raises(ValueError, match=r"share no key, and their keys are of other kinds \(int against str\)"):
        decide_direction(bar, ([0, 1, 2], [1, 1, 1]), (["0", "1", "2"], [0, 0, 0]), iv)
    a = [f"couple{k}/{i}" for k in range(3) for i in range(40)]
    b = [f"couple{k}/{i}" for k in range(3, 6) for i in range(40)]
    with pytest.raises(ValueError, match=r"the measurement's values come in noise couples of several .* an unpaired "
                                         r"test would take each value as independent"):
        decide_direction(bar, (a, [1.0] * 120), (b, [0.0] * 120), iv)
    # disjoint sides of one value a key stay the unpaired test (the loss cases)
    unpaired = decide_direction(bar, ([f"a:{i}" for i in range(20)], [1.0 + i / 100 for i in range(20)]),
                                ([f"b:{i}" for i in range(20)], [i / 100 for i in range(20)]), iv)
    assert unpaired.test["name"] == "unpaired bootstrap and permutation test" and unpaired.holds


def test_an_exact_claims_uncaught_control_says_what_it_missed():
    """It read "straddles the bar == 1" for an interval wholly below 1: the rule is the score bar 0.6."""
    d = decide_threshold(Bar("==", 1.0, "src"), 1.0, Interval(1.0, 1.0, "exact"), 8,
                         (0.7, Interval(0.5, 0.85, "Wilson")))
    assert not d.holds and "does not lie wholly below the score bar 0.6 (an exact claim's control)" in d.reason


def test_clustered_helpers_and_kappa_refuse_input_they_would_miscount():
    with pytest.raises(ValueError, match=r"2 cluster labels for 6 values"):
        stats.clustered_wilson([1, 1, 1, 0, 0, 0], [0, 0])
    with pytest.raises(ValueError, match=r"2 cluster labels for 5 values"):
        stats.cluster_bootstrap_mean([1, 2, 3, 4, 5], ["a", "b"])
    with pytest.raises(ValueError, match=r"a clustered Wilson interval is of 0/1 values, got e.g. 0.5"):
        stats.clustered_wilson([0.5, 0.7, 0.2, 0.9], [0, 0, 1, 1])
    a = torch.tensor([0, 1, 2, 0])
    for b, bad in ((torch.tensor([3, 1, 2, 0]), 3), (torch.tensor([-1, 1, 2, 0]), -1)):
        with pytest.raises(ValueError, match=rf"kappa's labels are classes 0..2, got {bad}"):
            stats.bootstrap_kappa(a, b, classes=3)
        with pytest.raises(ValueError, match=rf"kappa's labels are classes 0..2, got {bad}"):
            stats.cohen_kappa(a, b, classes=3)


@pytest.mark.parametrize("value", [float("nan"), math.inf, "0.6", True])
def test_a_bar_of_no_finite_number_is_refused(value):
    """Bar(">=", nan) made every case straddle "the bar nan"; "0.6" compared text."""
    with pytest.raises(ValueError, match=r"a bar's value is a finite number \(or None"):
        Bar(">=", value, "src")


def test_decide_names_a_missing_right_hand_side_mismatched_keys_and_non_finite_values():
    from cases import Case, Run
    from fixtures.results import Measured, decide

    direction = Case("C4", "App. G", "rp", (Run("a"),), Bar(">", None, "src"), versus=(Run("b"),))
    with pytest.raises(ValueError, match=r"is a direction case .* it needs the right-hand side's measurement"):
        decide(direction, Measured(1.0, 2, keys=[0, 1], units=[1.0, 1.0]))
    threshold = Case("C2", "Fig. 3", "rp", (Run("a"), Run("b")), Bar(">=", 0.6, "src"))
    with pytest.raises(ValueError, match=r"has 3 keys for 4 values"):
        decide(threshold, Measured(1.0, 4, keys=[0, 1, 2], units=[1.0] * 4))
    with pytest.raises(ValueError, match=r"holds 1 non-finite values \(e.g. nan\) of 3"):
        decide(threshold, Measured(1.0, 3, keys=[0, 1, 2], units=[1.0, float("nan"), 1.0]))

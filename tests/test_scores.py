"""Scores against a direct numpy implementation of the paper's formulas (Sec. 2.1, 3, 4, App. A.3)."""
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models import scores
from models.scores import (SSCD_THRESHOLD, AnchorError, GLScore, MAEScore, PairingError, RPBetweenScore, RPScore,
                           check_distinct_anchors, check_paired, colour_layout, hyperplane_map, nearest_mae,
                           rp_manifold)


def unit_rows(a):
    a = a.astype(np.float64) + 1e-3
    return a / np.linalg.norm(a, axis=1, keepdims=True)


emb_pairs = st.integers(1, 40).flatmap(lambda n: st.tuples(
    arrays(np.float32, (n, 8), elements=st.floats(-1, 1, width=32)),
    arrays(np.float32, (n, 8), elements=st.floats(-1, 1, width=32))))


@settings(max_examples=60, deadline=None)
@given(emb_pairs, st.sampled_from([0.6, 0.4, 0.0]))
def test_rp_matches_numpy(pair, threshold):
    a, b = unit_rows(pair[0]), unit_rows(pair[1])
    ids = np.arange(len(a))
    m = RPScore(threshold)
    m.update(torch.from_numpy(a), torch.from_numpy(b), ids, ids)
    sims = (a * b).sum(1)
    # float32 and float64 may disagree only on a pair whose similarity is within rounding (1e-5) of the threshold:
    # those pairs are left out of the comparison, every other pair must agree
    clear = np.abs(sims - threshold) >= 1e-5
    got = m.pairs()
    assert torch.equal(got.ids.sort().values, torch.as_tensor(ids))
    above = {int(i): float(v) > threshold for i, v in zip(got.ids, got.values)}
    assert [above[i] for i in ids[clear]] == (sims[clear] > threshold).tolist()
    if clear.all():
        assert float(m.compute()) == pytest.approx(np.mean(sims > threshold), abs=1e-6)  # a float32 mean


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 20).flatmap(lambda n: st.tuples(arrays(np.uint8, (n, 4, 4, 3)), arrays(np.uint8, (n, 4, 4, 3)))))
def test_mae_matches_numpy(pair):
    a, b = pair
    ids = np.arange(len(a))
    m = MAEScore()
    m.update(torch.from_numpy(a), torch.from_numpy(b), ids, ids)
    mae = np.abs(a.astype(np.float64) - b.astype(np.float64)).reshape(len(a), -1).mean(1)
    assert float(m.compute()) == pytest.approx(np.mean(mae < 15.0), abs=1e-6)  # float32 mean


@settings(max_examples=40, deadline=None)
@given(st.tuples(st.integers(1, 12), st.integers(1, 9)).flatmap(
    lambda nm: st.tuples(arrays(np.uint8, (nm[0], 4, 4, 3)), arrays(np.uint8, (nm[1], 4, 4, 3)))))
def test_nearest_mae_matches_numpy(pair):
    images, train = pair
    mae = np.abs(images[:, None].astype(np.float64) - train[None].astype(np.float64)).reshape(
        len(images), len(train), -1).mean(2)
    got = nearest_mae(torch.from_numpy(images), torch.from_numpy(train))
    np.testing.assert_allclose(got.numpy(), mae.min(1), rtol=1e-6)  # float32 of the exact value
    with pytest.MonkeyPatch.context() as m:  # the samples in chunks of one or a few rows: the same values
        m.setattr(scores, "NEAREST_ENTRIES", len(train) + 1)
        assert torch.equal(nearest_mae(torch.from_numpy(images), torch.from_numpy(train)), got)


def test_nearest_mae_refuses_what_it_cannot_compare():
    images = torch.zeros(3, 4, 4, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="uint8"):
        nearest_mae(images.float(), images)
    with pytest.raises(PairingError, match=r"\(4, 4, 3\) and \(8, 8, 3\)"):
        nearest_mae(images, torch.zeros(2, 8, 8, 3, dtype=torch.uint8))
    with pytest.raises(ValueError, match="at least one training image"):
        nearest_mae(images, images[:0])
    assert nearest_mae(images[:0], images).shape == (0,)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float32, (12, 8), elements=st.floats(-1, 1, width=32)),
       arrays(np.float32, (30, 8), elements=st.floats(-1, 1, width=32)))
def test_gl_matches_numpy(gen, train):
    gen, train = unit_rows(gen), unit_rows(train)
    m = GLScore(torch.from_numpy(train).float())
    m.update(torch.from_numpy(gen).float(), np.arange(12))
    best = (gen @ train.T).max(1)
    if not np.any(np.abs(best - 0.6) < 1e-5):
        assert float(m.compute()) == pytest.approx(1 - np.mean(best > 0.6), abs=1e-6)
    top2 = np.sort(gen @ train.T, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5  # rows without a float32 tie for the nearest
    assert np.array_equal(m.nearest().numpy()[clear], (gen @ train.T).argmax(1)[clear])


def test_gl_is_one_minus_the_memorized_fraction():
    """The paper's code returns P(max > 0.6) (memorized); GL is 1 - that (paper Sec. 3)."""
    train = torch.eye(4)
    gen = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [1.0, 1.0, 1.0, 1.0]])  # two copies, one novel (sim 0.5)
    m = GLScore(train)
    m.update(gen, [0, 1, 2])
    assert float(m.compute()) == pytest.approx(1 / 3)


def test_rp_between_takes_the_best_class():
    unc = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # class 1 matches noise 0, class 0 noise 1
    cond = torch.tensor([[[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])
    m = RPBetweenScore()
    m.update(unc, [5, 6], cond, [5, 6])
    assert float(m.compute()) == 1.0
    assert m.pairs().values.tolist() == pytest.approx([1.0, 1.0])


def test_rp_between_with_another_class_takes_the_second_best_class():
    """Three classes: noise 0 matches class 1 (1.0), then class 2 (0.8), class 0 (0); noise 1 matches class 0 and
    no other (0, 0.28): the other-class values are 0.8 and 0.28, one above 0.6."""
    unc = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    tilt = torch.tensor([0.8, 0.6])
    cond = torch.stack([torch.stack([torch.tensor([0.0, 1.0]), torch.tensor([0.0, 1.0])]),
                        torch.stack([torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0])]),
                        torch.stack([tilt, torch.tensor([0.96, 0.28])])])
    best, other = RPBetweenScore(), RPBetweenScore(other_class=True)
    for m in (best, other):
        m.update(unc, [5, 6], cond, [5, 6])
    assert best.pairs().values.tolist() == pytest.approx([1.0, 1.0])
    assert sorted(other.pairs().values.tolist()) == pytest.approx([0.28, 0.8])
    assert float(other.compute()) == 0.5
    with pytest.raises(ValueError, match="needs at least 2 classes, got 1"):
        RPBetweenScore(other_class=True).update(unc, [5, 6], cond[:1], [5, 6])
    # the conditional samples must be of the same noises, as a (classes, n, d) stack
    with pytest.raises(PairingError):
        RPBetweenScore().update(unc, [5, 6], cond, [5, 7])
    with pytest.raises(ValueError, match=r"emb_cond must be \(classes, 2, d\), got \(3, 1, 2\)"):
        RPBetweenScore().update(unc, [5, 6], cond[:, :1], [5, 6])


def test_rp_cond_pairs_same_noise_and_class():
    m = RPScore()
    e = torch.eye(3)
    m.update(e, e, [1, 1, 2], [1, 1, 2], labels1=[0, 1, 0], labels2=[0, 1, 0])
    assert float(m.compute()) == 1.0 and m.pairs().labels.tolist() == [0, 1, 0]
    with pytest.raises(PairingError, match="labels differ"):
        m.update(e, e, [1, 1, 2], [1, 1, 2], labels1=[0, 1, 0], labels2=[0, 2, 0])


def test_single_pair_and_ties_at_the_threshold():
    """The paper's inequalities are strict: a similarity of exactly 0.6 does not count, nor an MAE of exactly 15."""
    a = torch.tensor([[1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8]])  # cosine exactly 0.6 in float32
    m = RPScore()
    m.update(a, b, [0], [0])
    assert float(m.compute()) == 0.0
    x = torch.zeros(1, 2, 2, 3, dtype=torch.uint8)
    mae = MAEScore()
    mae.update(x, x + 15, [0], [0])
    assert float(mae.compute()) == 0.0


def test_empty_set_is_refused():
    with pytest.raises(ValueError, match="no pairs were given"):
        RPScore().compute()


def test_embeddings_that_are_not_finite_are_refused_by_every_similarity_score():
    """A NaN similarity compares False with the threshold: a NaN embedding counted as "not similar" (RP 2/3 and GL
    1/3 on three rows, one of them NaN) and sorted last among the worst pairs, without a word."""
    good = torch.eye(3)
    bad = good.clone()
    bad[1, 0] = float("nan")
    ids = np.arange(3)
    for call in (lambda: RPScore().update(good, bad, ids, ids), lambda: GLScore(good).update(bad, ids),
                 lambda: GLScore(bad), lambda: RPBetweenScore().update(good, ids, bad[None], ids),
                 lambda: rp_manifold(good[None], bad[None]), lambda: hyperplane_map(good, bad)):
        with pytest.raises(ValueError, match=r"1 of the 3 rows of the .*descriptors hold NaN or inf \(rows \[1\]\)"):
            call()
    inf = torch.ones(8, 4)
    inf[2:, 3] = float("inf")
    with pytest.raises(ValueError, match=r"6 of the 8 rows of the descriptors .*\(rows \[2, 3, 4, 5, 6\] \.\.\.\)"):
        RPScore().update(inf, torch.ones(8, 4), np.arange(8), np.arange(8))


def test_pairs_are_matched_by_id_not_position():
    with pytest.raises(PairingError, match=r"only in the first set \[3\], only in the second \[9\]"):
        RPScore().update(torch.eye(3), torch.eye(3), [1, 2, 3], [1, 2, 9])
    with pytest.raises(PairingError, match="different order"):
        RPScore().update(torch.eye(3), torch.eye(3), [1, 2, 3], [3, 2, 1])
    with pytest.raises(PairingError, match="noise ids were given for neither set"):
        check_paired(None, None)
    with pytest.raises(PairingError, match=r"for one set only \(the first\)"):
        check_paired([1], None)


def test_a_colour_layout_refuses_a_pool_that_does_not_divide_the_image():
    """Cells of equal size: 32 px into 7 would give 8 x 8 cells of 4 px, not 7 x 7."""
    images = torch.zeros(1, 32, 32, 3, dtype=torch.uint8)
    assert colour_layout(images, 4).shape == (1, 4, 4, 3)
    for bad, pool in ((images, 7), (images, 0), (images[:, :16], 4)):
        with pytest.raises(ValueError, match=rf"got shape {re.escape(str(tuple(bad.shape)))} and pool {pool}"):
            colour_layout(bad, pool)


def test_per_pair_values_worst_first():
    m = RPScore()
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    m.update(a, b, [10, 11, 12], [10, 11, 12])
    assert m.pairs().ids.tolist() == [11, 12, 10]


@pytest.mark.parametrize("metric", ["rp", "mae", "gl"])
def test_two_processes_reduce_to_the_single_process_value(metric):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, 8, generator=g), torch.randn(50, 8, generator=g)
    a[:20] = b[:20] + 0.1
    x1 = torch.randint(0, 256, (50, 4, 4, 3), generator=g, dtype=torch.uint8)
    x2 = (x1.int() + torch.randint(-30, 30, x1.shape, generator=g)).clamp(0, 255).byte()
    ids = torch.arange(50)
    train = torch.randn(10, 8, generator=g)

    def make():
        return {"rp": RPScore, "mae": MAEScore, "gl": lambda: GLScore(train)}[metric]()

    def feed(m, sl):
        if metric == "rp":
            m.update(a[sl], b[sl], ids[sl], ids[sl])
        elif metric == "mae":
            m.update(x1[sl], x2[sl], ids[sl], ids[sl])
        else:
            m.update(a[sl], ids[sl])

    whole, first, second = make(), make(), make()
    feed(whole, slice(0, 50))
    feed(first, slice(0, 17))
    feed(second, slice(17, 50))
    first.merge_state(second)
    assert float(first.compute()) == float(whole.compute())
    assert sorted(first.pairs().ids.tolist()) == list(range(50))


def test_rp_manifold_per_point():
    e1 = torch.nn.functional.normalize(torch.randn(4, 5, 8), dim=-1)
    e2 = e1.clone()
    e2[:, -1] = -e2[:, -1]  # the paths disagree at their last point only
    rp = rp_manifold(e1, e2)
    assert rp.tolist() == [1.0, 1.0, 1.0, 1.0, 0.0]


def test_hyperplane_map_and_agreement():
    anchors = torch.eye(3)
    grid = torch.tensor([[0.9, 0.1, 0.0], [0.0, 1.0, 0.2], [0.1, 0.0, 0.8], [0.5, 0.4, 0.0]])
    m = hyperplane_map(anchors, grid)
    assert m.nearest.tolist() == [0, 1, 2, 0]
    other = hyperplane_map(anchors, grid[[0, 1, 2, 2]])
    assert m.agreement(other) == 0.75
    assert SSCD_THRESHOLD == 0.6


def test_hyperplane_anchors_must_be_distinct_images():
    distinct = torch.eye(3)
    check_distinct_anchors(distinct, [0, 1, 2])
    near = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.0, 1.0]])  # ids 0 and 1 at cosine 0.8
    with pytest.raises(AnchorError, match=r"unet: .*noise ids 0 and 1 \(0\.800\); .*three distinct anchor images"):
        check_distinct_anchors(near, [0, 1, 2], who="unet")
    check_distinct_anchors(near, [0, 1, 2], threshold=0.85)  # the bar is the case's SSCD threshold
    at_bar = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # cosine 0.6 is not above the bar: distinct (RP counts > 0.6)
    check_distinct_anchors(at_bar, [5, 7])


def test_pair_values_and_their_ids_must_be_as_many():
    """64 images scored against 125 ids (a set shorter than the ids it was given) is refused, not paired by luck."""
    x = torch.zeros(64, 3, 4, 4, dtype=torch.uint8)
    with pytest.raises(PairingError, match=r"64 pair values for 125 noise ids"):
        MAEScore().update(x, x, torch.arange(125), torch.arange(125))


def test_ids_repeated_unevenly_are_not_called_a_reordering():
    with pytest.raises(PairingError, match=r"differ in how often they occur: \[0, 1\] \(first set \[2, 1\] times, "
                                           r"second \[1, 2\] times\)"):
        RPScore().update(torch.eye(3), torch.eye(3), [0, 0, 1], [0, 1, 1])


def test_labels_for_one_side_only_are_refused_by_name():
    e = torch.eye(2)
    with pytest.raises(PairingError, match=r"labels were given for one set only \(the first\)"):
        RPScore().update(e, e, [0, 1], [0, 1], labels1=[0, 1])
    with pytest.raises(PairingError, match=r"labels were given for one set only \(the second\)"):
        RPScore().update(e, e, [0, 1], [0, 1], labels2=[0, 1])


def test_one_row_is_not_broadcast_against_many():
    """A second side of one row would score every pair against the same image or descriptor."""
    x = torch.zeros(4, 2, 2, 3, dtype=torch.uint8)
    with pytest.raises(PairingError, match=r"images differ in shape: \(4, 2, 2, 3\) and \(1, 2, 2, 3\)"):
        MAEScore().update(x, x[:1], range(4), range(4))
    with pytest.raises(PairingError, match=r"descriptors differ in shape: \(3, 3\) and \(1, 3\)"):
        RPScore().update(torch.eye(3), torch.eye(3)[:1], range(3), range(3))


def test_gl_score_is_a_module_that_can_switch_modes():
    """torchmetrics' Metric is an nn.Module: its train() / eval() must still work with a training set held."""
    m = GLScore(torch.eye(3))
    assert m.eval() is m and not m.training and m.train() is m and m.training
    m.update(torch.eye(3), [0, 1, 2])
    assert float(m.compute()) == 0.0


def test_a_noise_scored_twice_under_one_label_is_refused():
    """check_paired compares the two id lists only, so the same id three times on both sides counted as three units
    (an interval three times too sure); one id under several labels (RP_cond) is several pairs."""
    e = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    m = RPScore()
    m.update(e, e, torch.tensor([1, 1, 2]), torch.tensor([1, 1, 2]))
    with pytest.raises(PairingError, match=r"RPScore: noise ids scored more than once: 1; each \(noise id, label\) "
                                           r"is one pair"):
        m.compute()
    ok = RPScore()
    ok.update(e, e, torch.tensor([1, 1, 2]), torch.tensor([1, 1, 2]), torch.tensor([0, 1, 0]), torch.tensor([0, 1, 0]))
    assert float(ok.compute()) == 1.0 and len(ok.units().values) == 3

"""The paper's scores as torchmetrics Metrics, so several processes reduce to the single-process value.

Each metric accumulates one value per pair (or per sample) with its noise id, in "cat" states;
`compute()` returns the score and `pairs()` returns the per-pair values worst first, for reports.
Pairs are matched by noise id, never by position.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Optional

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

# Thresholds, each with its source.
SSCD_THRESHOLD = 0.6  # paper Sec. 2.1 (RP) and Sec. 3 (GL): SSCD similarity > 0.6 "strong visual similarity"
SSCD_THRESHOLD_LARGE = 0.4  # paper Appendix A.1-A.2: ImageNet and Stable Diffusion
MAE_THRESHOLD = 15.0  # paper Sec. 2.1: MAE < 15 on [0, 255]


class PairingError(ValueError):
    """Two sample sets whose noise ids (or labels) differ; the message names the differing ids."""


def check_paired(ids_a: torch.Tensor, ids_b: torch.Tensor, what: str = "noise ids") -> None:
    if ids_a is None and ids_b is None:
        raise PairingError(f"{what} were given for neither set; pairing compares the two sets' {what}")
    if ids_a is None or ids_b is None:
        raise PairingError(f"{what} were given for one set only (the {'second' if ids_a is None else 'first'}); give "
                           f"them for both or for neither")
    ids_a, ids_b = torch.as_tensor(ids_a).reshape(-1), torch.as_tensor(ids_b).reshape(-1)
    if ids_a.shape == ids_b.shape and torch.equal(ids_a, ids_b):
        return
    a, b = sorted(ids_a.tolist()), sorted(ids_b.tolist())
    if a == b:
        raise PairingError(f"the two sets hold the same {what} in a different order; align them by id first")
    only_a, only_b = sorted(set(a) - set(b))[:10], sorted(set(b) - set(a))[:10]
    if not only_a and not only_b:  # the same ids, repeated a different number of times
        counts_a, counts_b = Counter(a), Counter(b)
        uneven = sorted(i for i in counts_a if counts_a[i] != counts_b[i])[:10]
        times_a, times_b = [counts_a[i] for i in uneven], [counts_b[i] for i in uneven]
        raise PairingError(f"{what} differ in how often they occur: {uneven} (first set {times_a} times, second "
                           f"{times_b} times)")
    raise PairingError(f"{what} differ: only in the first set {only_a}, only in the second {only_b}")


def _check_rows(x1: torch.Tensor, x2: torch.Tensor, what: str) -> None:
    """The two sides of a pair score hold one row per pair: no broadcasting of a single row against many."""
    if x1.shape != x2.shape:
        raise PairingError(f"the two sets' {what} differ in shape: {tuple(x1.shape)} and {tuple(x2.shape)}; a pair "
                           f"score needs one row per pair on both sides")


def check_finite(emb: torch.Tensor, what: str = "descriptors") -> None:
    """Refuse embeddings with a NaN or inf: a NaN similarity compares False with the threshold, so it would count as
    "not similar" (RP down, GL up) without a word, and sort last among the worst pairs."""
    finite = torch.isfinite(emb)
    if not bool(finite.all()):
        bad = (~finite).reshape(-1, emb.shape[-1]).any(1)
        rows = bad.nonzero().flatten().tolist()
        raise ValueError(f"{len(rows)} of the {len(bad)} rows of the {what} hold NaN or inf (rows {rows[:5]}"
                         f"{' ...' if len(rows) > 5 else ''}); a similarity needs finite embeddings: check the "
                         f"descriptor's output (e.g. a half-precision overflow) and the images given to it")


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """M_SSCD per row (paper Sec. 2.1): cosine similarity of the two descriptors (finite ones: `check_finite`)."""
    check_finite(a)
    check_finite(b)
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def _check_uint8(*images: torch.Tensor) -> None:
    for x in images:
        if x.dtype != torch.uint8:
            raise ValueError(f"MAE is measured on uint8 images (0-255), got {x.dtype}")


def mae_255(x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference per image pair on the 0-255 scale (uint8 inputs)."""
    _check_uint8(x1, x2)
    _check_rows(x1, x2, "images")
    return (x1.float() - x2.float()).abs().reshape(len(x1), -1).mean(1)


@dataclass(frozen=True)
class PairValues:
    ids: torch.Tensor
    values: torch.Tensor
    labels: Optional[torch.Tensor] = None


class _PerPairScore(Metric):
    """P(value `above`/below threshold) over accumulated per-pair values, ids and optional labels."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, threshold: float, above: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.threshold, self.above = float(threshold), above
        self.add_state("values", default=[], dist_reduce_fx="cat")
        self.add_state("ids", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def _add(self, values: torch.Tensor, ids: torch.Tensor, labels: Optional[torch.Tensor] = None) -> None:
        if values.numel() != torch.as_tensor(ids).numel():
            raise PairingError(f"{values.numel()} pair values for {torch.as_tensor(ids).numel()} noise ids: every pair "
                               f"needs its id")
        self.values.append(values.detach().float().reshape(-1))
        self.ids.append(torch.as_tensor(ids, dtype=torch.int64, device=values.device).reshape(-1))
        self.labels.append(torch.full_like(self.ids[-1], -1) if labels is None
                           else torch.as_tensor(labels, dtype=torch.int64, device=values.device).reshape(-1))

    def _collected(self) -> PairValues:
        if (isinstance(self.values, list) and not self.values) or dim_zero_cat(self.values).numel() == 0:
            raise ValueError(f"{type(self).__name__}: no pairs were given; a score over an empty set is undefined")
        labels, ids = dim_zero_cat(self.labels), dim_zero_cat(self.ids)
        keys, counts = torch.stack([ids, labels], 1).unique(dim=0, return_counts=True)
        if bool((counts > 1).any()):  # one noise counted as several units: an interval over them too narrow
            twice = keys[counts > 1][:5].tolist()
            shown = [f"{i}" if c < 0 else f"{i} (label {c})" for i, c in twice]
            raise PairingError(f"{type(self).__name__}: noise ids scored more than once: {', '.join(shown)}; each "
                               f"(noise id, label) is one pair")
        return PairValues(ids, dim_zero_cat(self.values), None if bool((labels < 0).all()) else labels)

    def compute(self) -> torch.Tensor:
        return self.units().values.mean()

    def units(self) -> PairValues:
        """Per-pair 0/1 values in the order given, whose mean is `compute()`: the unit of a 95% interval and of a
        paired test between two scores over the same noises."""
        got = self._collected()
        hit = got.values > self.threshold if self.above else got.values < self.threshold
        return PairValues(got.ids, hit.float(), got.labels)

    def pairs(self) -> PairValues:
        """Per-pair values, worst first (lowest similarity, or highest MAE)."""
        got = self._collected()
        order = torch.argsort(got.values, descending=not self.above, stable=True)
        return PairValues(got.ids[order], got.values[order], None if got.labels is None else got.labels[order])


class RPScore(_PerPairScore):
    """RP = P(M_SSCD(x1, x2) > 0.6) over pairs from the same noise (paper Sec. 2.1). Given labels, this is
    RP_cond: pairs from the same noise and the same class c (paper Sec. 4)."""

    def __init__(self, threshold: float = SSCD_THRESHOLD, **kwargs):
        super().__init__(threshold, above=True, **kwargs)

    def update(self, emb1: torch.Tensor, emb2: torch.Tensor, ids1, ids2, labels1=None, labels2=None) -> None:
        check_paired(ids1, ids2)
        if labels1 is not None or labels2 is not None:
            check_paired(labels1, labels2, "labels")
        _check_rows(emb1, emb2, "descriptors")
        self._add(cosine(emb1, emb2), ids1, labels1)


class MAEScore(_PerPairScore):
    """MAE score = P(MAE(x1, x2) < 15) on 0-255 over pairs from the same noise (paper Sec. 2.1)."""

    def __init__(self, threshold: float = MAE_THRESHOLD, **kwargs):
        super().__init__(threshold, above=False, **kwargs)

    def update(self, x1: torch.Tensor, x2: torch.Tensor, ids1, ids2) -> None:
        check_paired(ids1, ids2)
        self._add(mae_255(torch.as_tensor(x1), torch.as_tensor(x2)), ids1)


class GLScore(_PerPairScore):
    """GL = 1 - P(max_i M_SSCD(x, y_i) > 0.6) over generated x and the training set {y_i} (paper Sec. 3).
    The paper's released code returns the memorized fraction P(max > 0.6) instead; this is 1 - that.
    Per-sample values are max_i M_SSCD(x, y_i); `nearest()` gives the argmax i."""

    higher_is_better = True

    def __init__(self, train_embeddings: torch.Tensor, threshold: float = SSCD_THRESHOLD, **kwargs):
        super().__init__(threshold, above=True, **kwargs)
        if len(train_embeddings) == 0:
            raise ValueError("GL needs a non-empty training set")
        check_finite(train_embeddings, "training-set descriptors")
        # not `train`: that name is nn.Module's train() (torchmetrics' Metric is a module), which .eval() calls
        self.train_embeddings = torch.nn.functional.normalize(train_embeddings.float(), dim=1)
        self.add_state("nearest_idx", default=[], dist_reduce_fx="cat")

    def update(self, emb: torch.Tensor, ids) -> None:
        check_finite(emb)
        sims = torch.nn.functional.normalize(emb.float(), dim=1) @ self.train_embeddings.to(emb.device).T
        best, idx = sims.max(1)
        self._add(best, ids)
        self.nearest_idx.append(idx)

    def units(self) -> PairValues:
        """1 for a sample with no training image above the threshold, else 0."""
        got = super().units()
        return PairValues(got.ids, 1 - got.values)

    def pairs(self) -> PairValues:
        """Per-sample max similarity to the training set, most memorized first."""
        got = self._collected()
        order = torch.argsort(got.values, descending=True, stable=True)
        return PairValues(got.ids[order], got.values[order])

    def nearest(self) -> torch.Tensor:
        return dim_zero_cat(self.nearest_idx)


class RPBetweenScore(_PerPairScore):
    """RP_between = P(max_c M_SSCD(x1, x2^c) > 0.6): unconditional x1 against the conditional x2^c of every
    class c, from the same noise (paper Sec. 4). Per-pair values are the max over c."""

    def __init__(self, threshold: float = SSCD_THRESHOLD, other_class: bool = False, **kwargs):
        """With `other_class`, the per-pair value is the best similarity over the classes other than the best one
        (the second largest): RP with a class that does not match the unconditional sample, which Sec. 4's claim
        (ii) ("only if the class matches") puts below the bar."""
        super().__init__(threshold, above=True, **kwargs)
        self.other_class = other_class

    def update(self, emb_uncond: torch.Tensor, ids_uncond, emb_cond: torch.Tensor, ids_cond) -> None:
        """emb_cond is (C, n, d): class c's samples of the same n noises."""
        check_paired(ids_uncond, ids_cond)
        if emb_cond.ndim != 3 or emb_cond.shape[1] != len(emb_uncond):
            raise ValueError(f"emb_cond must be (classes, {len(emb_uncond)}, d), got {tuple(emb_cond.shape)}")
        if self.other_class and len(emb_cond) < 2:
            raise ValueError(f"RP with another class needs at least 2 classes, got {len(emb_cond)}")
        sims = cosine(emb_uncond[None], emb_cond)  # (C, n)
        self._add(sims.topk(2, 0).values[1] if self.other_class else sims.amax(0), ids_uncond)


def rp_manifold(emb1: torch.Tensor, emb2: torch.Tensor, threshold: float = SSCD_THRESHOLD) -> torch.Tensor:
    """RP along interpolation paths (paper Appendix A.3): emb1, emb2 are (paths, points, d) for two models
    at the same slerp noises; returns P(M_SSCD > threshold) at each point along the path, (points,)."""
    if emb1.shape != emb2.shape or emb1.ndim != 3:
        raise ValueError(f"need two (paths, points, d) embeddings of one shape, got {tuple(emb1.shape)}, "
                         f"{tuple(emb2.shape)}")
    return (cosine(emb1, emb2) > threshold).float().mean(0)


NEAREST_ENTRIES = 2**24  # nearest_mae's distance matrix, at most (128 MiB of float64; the training set's float64
# copy, N x H x W x C x 8 bytes, comes beside it)


def nearest_mae(images: torch.Tensor, train: torch.Tensor) -> torch.Tensor:
    """Per image, the pixel MAE (0-255) to its nearest training image: (n, H, W, C) uint8 against (N, H, W, C) uint8.
    A sample is a copy of a training image when this is below MAE_THRESHOLD (Sec. 2.1; Theorem 1's D*)."""
    _check_uint8(images, train)
    if images.shape[1:] != train.shape[1:]:
        raise PairingError(f"the samples and the training images differ in shape: {tuple(images.shape[1:])} and "
                           f"{tuple(train.shape[1:])}")
    if len(train) == 0:
        raise ValueError("the nearest training image needs at least one training image, got none")
    # L1 distances of samples to every training image at once: sums of integer differences, exact in float64 at any
    # image size, so this is mae_255 against each training image (one image at a time took 7x longer). Samples go
    # in chunks that keep the distance matrix within NEAREST_ENTRIES, whatever the training set's size.
    d, flat = images.shape[1:].numel(), train.reshape(len(train), -1).double()
    rows = max(1, NEAREST_ENTRIES // len(train))
    nearest = [torch.cdist(chunk.reshape(len(chunk), d).double(), flat, p=1).amin(1) for chunk in images.split(rows)]
    return (torch.cat(nearest) / d).float()


def colour_layout(images: torch.Tensor, pool: int) -> torch.Tensor:
    """The pool x pool mean colours (0-255, rounded) of (n, H, W, C) uint8 images: their low-level layout, which a
    label change keeps (Appendix E, Fig. 20, 21)."""
    if type(pool) is not int or images.ndim != 4 or pool < 1 or images.shape[1] != images.shape[2] \
            or images.shape[1] % pool:
        raise ValueError(f"a colour layout pools square (n, H, H, C) images into pool x pool cells of equal size: "
                         f"got shape {tuple(images.shape)} and pool {pool} (H must be a multiple of pool)")
    side = images.shape[1] // pool
    x = images.permute(0, 3, 1, 2).double()
    return torch.nn.functional.avg_pool2d(x, side).round().to(torch.uint8).permute(0, 2, 3, 1)


def neighbour_similarity(grid_emb: torch.Tensor) -> torch.Tensor:
    """SSCD similarity of every horizontally and vertically adjacent pair of a (points, points, d) embedding grid
    (Sec. 2.2: 'closeby noises create images with very high similarities')."""
    return torch.cat([cosine(grid_emb[:, 1:], grid_emb[:, :-1]).reshape(-1),
                      cosine(grid_emb[1:], grid_emb[:-1]).reshape(-1)])


@dataclass(frozen=True)
class HyperplaneMap:
    """Figure 4: for each grid point, which anchor image (0, 1, 2) it is most similar to, and how similar."""

    nearest: torch.Tensor  # (G,) int64
    similarity: torch.Tensor  # (G,)

    def agreement(self, other: "HyperplaneMap") -> float:
        """Fraction of grid points whose nearest anchor is the same in both maps."""
        return float((self.nearest == other.nearest).float().mean())

    def kappa(self, other: "HyperplaneMap") -> float:
        """Cohen's kappa of the two maps: their agreement beyond what their anchor shares give by chance."""
        from models.stats import cohen_kappa

        return cohen_kappa(self.nearest, other.nearest, classes=3)


class AnchorError(ValueError):
    """Hyperplane anchors whose images are not distinct: the nearest-anchor map cannot tell them apart."""


def check_distinct_anchors(anchor_emb: torch.Tensor, ids, threshold: float = SSCD_THRESHOLD, who: str = "") -> None:
    """Raise AnchorError when two anchor images are SSCD-similar above `threshold` (the RP bar: the same image, by
    the paper's own measure). A map over two copies of one image splits their region by chance, and Cohen's kappa
    between two such maps measures that chance, not the models' encoding (Fig. 4 spans three distinct images)."""
    e = torch.nn.functional.normalize(anchor_emb.float(), dim=1)
    sims = e @ e.T
    same = [(ids[i], ids[j], float(sims[i, j])) for i in range(len(e)) for j in range(i + 1, len(e))
            if sims[i, j] > threshold]
    if same:
        pairs = ", ".join(f"noise ids {a} and {b} ({s:.3f})" for a, b, s in same)
        raise AnchorError(f"{who + ': ' if who else ''}the hyperplane anchors give the same image by SSCD similarity "
                          f"above {threshold}: {pairs}; the nearest-anchor map needs three distinct anchor images")


def hyperplane_map(anchor_emb: torch.Tensor, grid_emb: torch.Tensor) -> HyperplaneMap:
    """i = argmax_k M_SSCD(x_k, x(alpha, beta)) and its value, for anchors x_1..x_3 (paper Sec. 2.2)."""
    check_finite(anchor_emb, "anchor descriptors")
    check_finite(grid_emb, "plane descriptors")
    sims = torch.nn.functional.normalize(grid_emb.float(), dim=1) @ torch.nn.functional.normalize(
        anchor_emb.float(), dim=1).T
    best, idx = sims.max(1)
    return HyperplaneMap(idx, best)

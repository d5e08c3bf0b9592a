"""The statistics of a claim decision: 95% intervals for a measured value and paired tests between two
measurements over the same noise ids.

Sources:
- Wilson score interval for a proportion: E. B. Wilson (1927), "Probable inference, the law of succession, and
  statistical inference", JASA 22; unlike the Wald interval it does not collapse to a point at 0 or n successes,
  where RP and GL often sit, though its coverage dips below 95% for proportions very near 0 or 1 (Brown, Cai &
  DasGupta 2001, Statist. Sci. 16; exact infimum over p 0.835 / 0.837 / 0.838 at n = 10 / 32 / 128, computed
  at the intervals' endpoints).
- Percentile bootstrap over noise ids for a mean of non-binary per-noise values: Efron & Tibshirani (1993),
  "An Introduction to the Bootstrap", ch. 13. It is not exact in small samples (three equal differences give a
  one-point interval), so a paired direction decision also needs the exact sign test (Conover 1999).
- Wilson at an effective sample size (Kish's design effect) for 0/1 values that come several per noise, with the
  degrees-of-freedom factor of Korn & Graubard (1998, Survey Methodology 24) for a variance estimated from few
  clusters.
- Wilson at half the effective sample size for 0/1 values along a chain (a control's pair j takes noises j and
  j + 1): each pair is a function of two independent neighbouring noises, so by the Hoeffding (1948, Ann. Math.
  Statist. 19) / Efron-Stein (1981, Ann. Statist. 9) decomposition the neighbours' covariances add at most the
  pairs' own variance: the design effect of the chain is at most 2.
- Exact McNemar test for paired proportions: the discordant pairs are Binomial(b + c, 1/2) under no difference
  (McNemar 1947, Psychometrika 12; the exact form as in Fagerland, Lydersen & Laake 2013, BMC Med. Res. Meth. 13).
- Cohen's kappa for the agreement of two labellings beyond chance: J. Cohen (1960), Educ. Psychol. Meas. 20.
- Permutation test of a difference in means between two unpaired samples (Fisher 1935, "The Design of
  Experiments", Sec. 21), by Monte Carlo with the observed labelling counted among the draws, which keeps it exact
  at its level (Phipson & Smyth 2010, Stat. Appl. Genet. Mol. Biol. 9): the unpaired counterpart of the sign test,
  since the unpaired percentile bootstrap is not exact either (one value a side gives a one-point interval).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch

LEVEL = 0.95  # the suite's confidence level (two-sided); ALPHA is its test level
ALPHA = 1 - LEVEL
Z = 1.959963984540054  # the standard normal 97.5% quantile: a two-sided 95% interval
BOOTSTRAP_RESAMPLES = 2000  # Efron & Tibshirani (1993, Sec. 19.3): 1,000-2,000 resamples for percentile intervals
BOOTSTRAP_SEED = 0
PERMUTATION_CHUNK = 250  # permutation draws made at once (memory: 250 x the pooled count)


def _check_n(k: float, n: int) -> None:
    if n <= 0:
        raise ValueError(f"an interval needs at least one value, got n = {n}")
    if not 0 <= k <= n:
        raise ValueError(f"successes must lie in [0, n = {n}], got {k}")


def wilson(k: float, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials."""
    _check_n(k, n)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at k = 0 (k = n) the bound is 0 (1) exactly; the float sum leaves a rounding residue there
    return (0.0 if k == 0 else max(0.0, centre - half)), (1.0 if k == n else min(1.0, centre + half))


def _percentiles(replicates: torch.Tensor) -> tuple[float, float]:
    """The percentile bootstrap 95% interval from bootstrap replicates of a statistic."""
    lo, hi = torch.quantile(replicates, torch.tensor([ALPHA / 2, 1 - ALPHA / 2], dtype=torch.float64)).tolist()
    return lo, hi


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0.0, 1.0) for v in values)


def bootstrap_mean(values: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The percentile bootstrap 95% interval of the mean of `values` (resampling the values, i.e. the noise ids)."""
    v = torch.as_tensor(list(values), dtype=torch.float64)
    _check_n(0, len(v))
    idx = torch.randint(len(v), (resamples, len(v)), generator=torch.Generator().manual_seed(seed))
    means = v[idx].mean(1)
    return _percentiles(means)


def _check_clusters(j: int) -> None:
    if j < 2:  # every resample of one cluster is that cluster: the interval would be a point whatever its values
        raise ValueError(f"a bootstrap over clusters needs at least two of them, got {j}")


def by_cluster(values: Sequence[float], clusters: Sequence) -> list[list[float]]:
    """The values of each cluster (a noise's values under several labels, a path's points), clusters in order of
    first appearance."""
    if len(values) != len(clusters):  # zip would drop the values past the shorter one
        raise ValueError(f"{len(clusters)} cluster labels for {len(values)} values")
    groups: dict = {}
    for v, c in zip(values, clusters):
        groups.setdefault(c, []).append(float(v))
    return list(groups.values())


def cluster_bootstrap_mean(values: Sequence[float], clusters: Sequence, resamples: int = BOOTSTRAP_RESAMPLES,
                           seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The percentile bootstrap 95% interval of the mean of `values`, resampling whole clusters (the values of one
    noise under several labels, or the points of one path, are not independent; Davison & Hinkley 1997, Sec. 3.8)."""
    groups = by_cluster(values, clusters)
    _check_clusters(len(groups))
    sums = torch.tensor([sum(g) for g in groups], dtype=torch.float64)
    sizes = torch.tensor([len(g) for g in groups], dtype=torch.float64)
    idx = torch.randint(len(sums), (resamples, len(sums)), generator=torch.Generator().manual_seed(seed))
    means = sums[idx].sum(1) / sizes[idx].sum(1)
    return _percentiles(means)


def _clustered_size(values: Sequence[float], clusters: Sequence, z: float = Z) -> tuple[float, float]:
    """The proportion of 0/1 `values` and its effective sample size over independent `clusters` (see
    `clustered_wilson`)."""
    if not is_binary(values):
        raise ValueError(f"a clustered Wilson interval is of 0/1 values, got e.g. "
                         f"{next(v for v in values if v not in (0, 1))}")
    groups = by_cluster(values, clusters)
    sums = [sum(g) for g in groups]
    sizes = [len(g) for g in groups]
    n, k, j = sum(sizes), sum(sums), len(groups)
    _check_n(k, n)
    p = k / n
    n_eff = n * n / sum(m * m for m in sizes)  # j exactly for equal clusters (integers: n^2 = j^2 m^2)
    if 0 < p < 1 and j > 1:
        var = j / (j - 1) * sum((s - p * m) ** 2 for s, m in zip(sums, sizes)) / n ** 2
        n_eff = min(float(n), max(n_eff, p * (1 - p) / var)) if var > 0 else float(n)
    if 1 < j < n:  # the variance comes from j clusters, not n values: Korn & Graubard's degrees-of-freedom factor
        from scipy.stats import norm, t as student_t

        level = float(norm.cdf(z))
        n_eff *= (float(student_t.ppf(level, n - 1)) / float(student_t.ppf(level, j - 1))) ** 2
    return p, n_eff


def clustered_wilson(values: Sequence[float], clusters: Sequence, z: float = Z) -> tuple[float, float]:
    """The Wilson interval of a proportion of 0/1 values that come in clusters (several per noise), at the
    effective sample size n / deff (Kish 1965, "Survey Sampling", Sec. 8.2; Korn & Graubard 1998, Survey Methodology
    24, put the effective size into an exact binomial interval, here Wilson's): the design effect deff is the ratio
    of the clustered (linearized, ratio-estimator) variance of the proportion to the binomial one. The effective
    size is kept within [the clusters' effective count, values]: with all values 0 or all 1 the variance says
    nothing about deff, and the clusters are the independent units. Their effective count is Kish's (sum m)^2 /
    sum m^2 over the cluster sizes m (Kish's effective size of a mean weighted by m, Kish 1965): the proportion's
    size when every cluster is all 0 or all 1, the number of clusters when they are equal, fewer when one cluster
    holds most values. A cluster bootstrap collapses to a point there (every resample is all 0 or all 1).
    With j clusters of n values (1 < j < n) the size is then multiplied by (t_(n-1) / t_(j-1))^2, the t quantiles at
    the interval's level (Korn & Graubard 1998): the variance is estimated from j clusters, and with few of them the
    normal quantile's interval is too narrow (measured: 0/1 values in 4 clusters of 16 that share their value half
    the time, true proportion 0.7, 1,500 draws: coverage 0.79 without the factor, 0.94 with it; 16 clusters of 64:
    0.92 and 0.94; 128 clusters of 2: 0.96 and 0.95)."""
    p, n_eff = _clustered_size(values, clusters, z)
    return wilson(p * n_eff, n_eff, z)


def chained_wilson(values: Sequence[float], clusters: Optional[Sequence] = None, z: float = Z
                   ) -> tuple[float, float]:
    """The Wilson interval of a proportion of 0/1 values whose clusters (each value its own when `clusters` is None)
    form a chain: cluster j's values share a noise with those of its neighbours. That is a control's pairing of
    noise i with noise i + 1: pair i's second image and pair i + 1's first come from one noise, and two models'
    images of one noise agree, so neighbouring pairs are not independent. Each cluster's total is a function of two
    independent noises (i and i + 1), so its covariance with a neighbour runs through one of them only; splitting
    each total into its parts in noise i, in noise i + 1 and their interaction (Hoeffding's decomposition), the
    neighbours' covariances sum to at most the totals' variances (Cauchy-Schwarz, then 2ab <= a^2 + b^2), and the
    variance of the proportion is at most twice the independent clusters' (two clusters: Var(X + Y) <= 2 Var X +
    2 Var Y). The interval is Wilson at half the effective size `clustered_wilson` gives: that bound, whatever the
    dependence. (An estimated lag-1 covariance would do worse: after a single match it is negative, and one match
    would then narrow the interval below that of none.)"""
    values = [float(v) for v in values]
    if not is_binary(values):
        raise ValueError("a chained Wilson interval is for 0/1 values")
    p, n_eff = _clustered_size(values, range(len(values)) if clusters is None else clusters, z)
    return wilson(p * n_eff / 2, n_eff / 2, z)


CHAINED = "Wilson over chained pairs"  # the interval method of `chained_wilson` over pairs (no clusters)


def chained_noises_to_decide(p: float, bar: float, z: float = Z, limit: int = 10 ** 7) -> Optional[int]:
    """The fewest pairs along a chain (no clusters) at which the chained interval around p would decide `bar`: Wilson
    at half the pairs, so about twice the independent count (an odd count of pairs can decide too)."""
    if p == bar:
        return None
    return _fewest(lambda m: _decides(wilson(p * m / 2, m / 2, z), bar), limit)


def interval(values: Sequence[float], clusters: Optional[Sequence] = None,
             unit: str = "noises") -> tuple[float, float, str]:
    """The 95% interval of the mean of per-noise values: Wilson when they are all 0 or 1, else the bootstrap. When
    `clusters` groups several values per noise (or per `unit`: a path's points, a plane's pairs): Wilson at the
    clusters' effective sample size for 0/1 values, else a cluster bootstrap; the method names the unit."""
    values = list(values)
    if clusters is not None and len(set(clusters)) < len(values):
        if is_binary(values):
            return (*clustered_wilson(values, clusters), f"Wilson over {unit}")
        return (*cluster_bootstrap_mean(values, clusters), f"bootstrap over {unit}")
    if is_binary(values):
        return (*wilson(sum(values), len(values)), "Wilson")
    return (*bootstrap_mean(values), "bootstrap")


def median_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """A distribution-free interval for the median of `values` (i.i.d. draws): the order statistics
    [x_(j), x_(n+1-j)] with the largest j whose coverage 1 - 2 P(Bin(n, 1/2) <= j - 1) is at least `level`. With
    fewer than 6 values no j reaches 95%, and the whole range (coverage 1 - 2^(1-n)) is returned."""
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    x = sorted(float(v) for v in values)
    n = len(x)
    if n == 0:
        raise ValueError("median_interval needs at least one value, got none")
    j, below = 1, 0.0  # after the first line of the loop: below = P(Bin(n, 1/2) <= j - 1)
    while j < (n + 1) // 2:
        below += math.comb(n, j - 1) / 2 ** n
        if 1 - 2 * (below + math.comb(n, j) / 2 ** n) < level:
            break
        j += 1
    return x[j - 1], x[n - j]


EXACT_TAIL_MAX = 1000  # up to this many discordant pairs the tail is summed in integers; above, in log space


def sign_test(differences: Sequence[float]) -> tuple[int, int, float]:
    """The exact two-sided sign test of paired differences (zeros dropped): (positive, negative, p), p being the
    McNemar / Binomial(n, 1/2) p-value of the signs (Conover 1999, "Practical Nonparametric Statistics", Sec. 3.4)."""
    pos = sum(1 for d in differences if d > 0)
    neg = sum(1 for d in differences if d < 0)
    return pos, neg, mcnemar_exact(pos, neg)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for b pairs (1, 0) and c pairs (0, 1): twice the Binomial(b + c, 1/2) tail.
    Above EXACT_TAIL_MAX discordant pairs the tail's terms are summed in log space (log-gamma), within about 1e-10
    relative of the integer sum, whose cost grows with the square of the count (4 s at 10,000 pairs)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    if n <= EXACT_TAIL_MAX:
        tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    else:
        logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
                for i in range(k + 1)]
        top = max(logs)
        tail = math.exp(top) * math.fsum(math.exp(v - top) for v in logs)
    return min(1.0, 2 * tail)


def unpaired_bootstrap(a: Sequence[float], b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of mean(a) - mean(b), each side resampled on its own."""
    va, vb = (torch.as_tensor(list(x), dtype=torch.float64) for x in (a, b))
    _check_n(0, min(len(va), len(vb)))
    g = torch.Generator().manual_seed(seed)
    da = va[torch.randint(len(va), (resamples, len(va)), generator=g)].mean(1)
    db = vb[torch.randint(len(vb), (resamples, len(vb)), generator=g)].mean(1)
    return _percentiles(da - db)


def permutation_test(a: Sequence[float], b: Sequence[float], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = BOOTSTRAP_SEED) -> float:
    """The two-sided p-value of mean(a) - mean(b) under random relabelling of the pooled values: (1 + the draws
    whose |difference| reaches the observed one) / (1 + resamples). One value a side gives p = 1; three against
    three, all apart, about 0.1 (2 of the 20 splits)."""
    va, vb = (torch.as_tensor(list(x), dtype=torch.float64) for x in (a, b))
    _check_n(0, min(len(va), len(vb)))
    pooled, n = torch.cat([va, vb]), len(va)
    observed = float((va.mean() - vb.mean()).abs())
    g = torch.Generator().manual_seed(seed)
    hits = 0
    for start in range(0, resamples, PERMUTATION_CHUNK):  # a chunk of draws at a time: pooled may be long
        draws = pooled[torch.rand(min(PERMUTATION_CHUNK, resamples - start), len(pooled), generator=g).argsort(1)]
        d = (draws[:, :n].mean(1) - draws[:, n:].mean(1)).abs()
        # a relabelling that reproduces the observed split may differ from it by rounding in the last bits
        hits += int((d >= observed * (1 - 1e-9)).sum())
    return (1 + hits) / (1 + resamples)


def noises_to_decide(p: float, bar: float, z: float = Z, limit: int = 10 ** 7) -> Optional[int]:
    """The fewest noises at which a Wilson interval around the same proportion p would lie wholly on one side of
    `bar` (None when p equals the bar, or more than `limit` would be needed)."""
    if p == bar:
        return None
    return _fewest(lambda n: _decides(wilson(p * n, n, z), bar), limit)


def noises_for_power(p: float, bar: float, power: float = 0.9, z: float = Z, limit: int = 10 ** 6
                     ) -> Optional[int]:
    """The fewest noises at which a pair whose true share is p is decided on its side of `bar` with probability
    `power` at least (exact binomial): at n noises the case needs the least count whose Wilson interval lies wholly
    above the bar (or the greatest below it, for p < bar). `noises_to_decide` is the count at which a share of exactly
    p would just be decided, about half the time; this is the count of the suite's rule, nine times in ten (None when
    p equals the bar, or more than `limit` would be needed)."""
    from scipy.stats import binom

    if p == bar:
        return None
    start = noises_to_decide(p, bar, z, limit)
    if start is None:
        return None
    def least(holds: Callable[[int], bool], lo: int, hi: int) -> int:  # the least k in [lo, hi] where holds(k),
        while lo < hi:  # for a `holds` that stays true from some k on (Wilson's bounds rise with the count)
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if holds(mid) else (mid + 1, hi)
        return lo

    for n in range(start, limit + 1):
        if p > bar:  # the least count that clears the bar; the chance of reaching it
            k = least(lambda k: wilson(k, n, z)[0] > bar, 0, n)
            got = float(binom.sf(k - 1, n, p)) if wilson(k, n, z)[0] > bar else 0.0
        else:  # the greatest count that stays below it; the chance of staying at or under it
            k = least(lambda k: wilson(k, n, z)[1] >= bar, 0, n) - 1
            got = float(binom.cdf(k, n, p)) if k >= 0 else 0.0
        if got >= power:
            return n
    return None


def _decides(interval: tuple[float, float], bar: float) -> bool:
    return interval[0] > bar or interval[1] < bar


def _fewest(decided: Callable[[int], bool], limit: int) -> Optional[int]:
    """The least n <= limit with decided(n), for a `decided` that stays true from some n on (a Wilson interval around
    a fixed proportion narrows as n grows); None when not even `limit` decides."""
    lo, hi = 0, 1
    while not decided(hi):
        if hi >= limit:
            return None
        lo, hi = hi, min(2 * hi, limit)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if decided(mid) else (mid, hi)
    return hi


def _labellings(a, b, classes: Optional[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Two labellings as long tensors of the same non-empty items, and the class count; a label outside
    [0, classes) is refused by name (it would land in another cell of the confusion table)."""
    a, b = torch.as_tensor(a).reshape(-1).long(), torch.as_tensor(b).reshape(-1).long()
    if a.shape != b.shape or a.numel() == 0:
        raise ValueError(f"kappa needs two labellings of the same non-empty items, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    k = classes or int(max(a.max(), b.max())) + 1
    for x in (a, b):
        bad = x[(x < 0) | (x >= k)]
        if len(bad):
            raise ValueError(f"kappa's labels are classes 0..{k - 1}, got {int(bad[0])}")
    return a, b, k


def cohen_kappa(a: torch.Tensor, b: torch.Tensor, classes: Optional[int] = None) -> float:
    """Cohen's kappa of two integer labellings of the same items: (p_o - p_e) / (1 - p_e); 1 when both labellings
    are one and the same constant (no disagreement is possible and none is seen)."""
    a, b, k = _labellings(a, b, classes)
    p_o = float((a == b).double().mean())
    p_e = float((torch.bincount(a, minlength=k).double() / len(a) * torch.bincount(b, minlength=k).double()
                 / len(b)).sum())
    return 1.0 if p_e == 1 else (p_o - p_e) / (1 - p_e)


def bootstrap_kappa(a: torch.Tensor, b: torch.Tensor, classes: Optional[int] = None,
                    resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED,
                    clusters: Optional[Sequence] = None) -> tuple[float, float]:
    """The percentile bootstrap 95% interval of Cohen's kappa, resampling the labelled items, or whole `clusters`
    of them (the grid points of one noise hyperplane share its three anchors: they are one unit of evidence).
    A resample's kappa comes from the sum of its units' confusion tables, so no resample is materialized: the same
    values as `cohen_kappa` on the resampled items (tests/test_stats.py)."""
    a, b, k = _labellings(a, b, classes)
    gen = torch.Generator().manual_seed(seed)
    if clusters is None:
        unit = torch.arange(len(a))
    else:
        if len(clusters) != len(a):
            raise ValueError(f"{len(clusters)} cluster labels for {len(a)} items")
        order = {c: j for j, c in enumerate(dict.fromkeys(clusters))}  # clusters in order of first appearance
        _check_clusters(len(order))
        unit = torch.tensor([order[c] for c in clusters], dtype=torch.long)
    units = int(unit.max()) + 1
    tables = torch.zeros(units, k * k, dtype=torch.float64)  # each unit's confusion table, flattened
    tables.index_put_((unit, a * k + b), torch.ones(len(a), dtype=torch.float64), accumulate=True)
    picks = torch.randint(units, (resamples, units), generator=gen)
    times = torch.zeros(resamples, units, dtype=torch.float64)  # how often each resample draws each unit
    times.scatter_add_(1, picks, torch.ones(picks.shape, dtype=torch.float64))
    conf = (times @ tables).reshape(resamples, k, k)
    n = conf.sum((1, 2))
    p_o = conf.diagonal(dim1=1, dim2=2).sum(1) / n
    p_e = (conf.sum(2) / n[:, None] * conf.sum(1) / n[:, None]).sum(1)
    kappas = torch.where(p_e == 1, torch.ones_like(p_e), (p_o - p_e) / (1 - p_e).clamp_min(1e-300))
    return _percentiles(kappas)

"""The statistical decision of a claim case, from the per-noise values of its measurements (models/stats.py has the
intervals and tests, with their sources).

- A threshold case (a bar with a value) holds when the whole 95% interval of its measured value lies strictly on
  the bar's side, and, where the case has a same-run control, the control's interval lies strictly on the other
  side: the measurement clears the bar and the same measurement without a shared noise does not. When the interval
  straddles the bar, the decision says so and how many noises would decide it at the same proportion.
- A direction case (a bar against another measurement) holds when a paired test over the noise ids both sides
  share finds the claimed direction at the 5% level: the exact McNemar test for 0/1 values, else a paired bootstrap
  interval of the mean difference that excludes 0 together with the exact sign test of the differences (per noise
  where several units share one); when the sides share no ids, an unpaired bootstrap interval of the difference of
  the means that excludes 0 together with a permutation test at the 5% level. Sides that share some of their ids but
  not all are an error of the case. Ties never hold.
- An `==` bar is an exact claim of a closed form (Theorem 1): it holds when every value meets it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

from cases import SCORE_BAR, Bar
from models import stats

UPPER = (">=", ">")  # bars the value must clear from above; "<=", "<" from below


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    method: str  # Wilson, bootstrap, exact, or what the metric computed it with

    def caught(self, bar: Bar) -> bool:
        """A control is caught when its interval lies wholly on the failing side of the bar; for an exact `==` bar
        (every value meets it), when its interval lies wholly below the score bar 0.6: a control that misses an exact
        claim by one value is no evidence."""
        if bar.op == "==":
            return self.hi < SCORE_BAR
        return self.side(bar) == "fail"

    def side(self, bar: Bar) -> str:
        """'pass' when wholly on the passing side of a threshold bar, 'fail' when wholly on the failing side, else
        'straddles'."""
        if bar.op == "==":
            return "pass" if self.lo == self.hi == bar.value else "fail"
        above, below = self.lo > bar.value, self.hi < bar.value
        if bar.op in UPPER:
            return "pass" if above else ("fail" if below else "straddles")
        return "pass" if below else ("fail" if above else "straddles")


# key prefixes of clusters that are not noises, and their names: "path<k>/<point>", "plane<p>/<pair>", and
# "couple<k>/<id>" (the layout cases' noises 2k and 2k + 1, each against the other on the versus side)
CLUSTER_UNITS = {"path": "paths", "plane": "planes", "couple": "noise couples"}


def clusters_of(keys: Sequence) -> Optional[list]:
    """The noise (or path, plane or noise couple) each unit belongs to, where keys are "<noise>/<label>",
    "path<k>/<point>", "plane<p>/<pair>" or "couple<k>/<id>"; else None."""
    if not keys or not all(isinstance(k, str) and "/" in k for k in keys):
        return None
    return [k.split("/")[0] for k in keys]


def cluster_unit(clusters: Sequence) -> str:
    """What the clusters are, for the interval's and the test's names: "paths", "planes", "noise couples" or
    "noises"."""
    for prefix, name in CLUSTER_UNITS.items():
        if clusters and all(str(c).startswith(prefix) for c in clusters):
            return name
    return "noises"


def interval_of(units: Sequence[float], given: Optional[Sequence] = None, exact: bool = False,
                keys: Optional[Sequence] = None) -> Interval:
    """The 95% interval of the mean of `units` (or the one a metric `given` as (lo, hi, method)); for an exact claim,
    the range of the values themselves; units that share a noise are resampled together."""
    if given is not None:
        return Interval(float(given[0]), float(given[1]), str(given[2]))
    if exact:
        return Interval(float(min(units)), float(max(units)), "exact")
    clusters = clusters_of(keys or [])
    return Interval(*stats.interval(units, clusters, cluster_unit(clusters or [])))


@dataclass(frozen=True)
class Decision:
    holds: bool
    interval: Interval
    reason: str  # one line: why it holds or not
    control: Optional[dict[str, Any]] = None  # {value, interval, side, caught}
    test: Optional[dict[str, Any]] = None  # direction cases: {name, statistic, p or interval, direction}
    noises_to_decide: Optional[int] = None

    def record(self) -> dict[str, Any]:
        out = asdict(self)
        out["interval"] = [self.interval.lo, self.interval.hi, self.interval.method]
        return out


def _fmt(iv: Interval) -> str:
    return f"[{iv.lo:.3f}, {iv.hi:.3f}] ({iv.method})"


def decide_threshold(bar: Bar, value: float, iv: Interval, n: int, control: Optional[tuple[float, Interval]] = None,
                     unit: str = "noises") -> Decision:
    """`n` counts the interval's independent units, `unit` names them (noises, or the paths or planes that values
    are clustered in)."""
    side = iv.side(bar)
    holds = side == "pass"
    needed = None
    if side == "pass":
        reason = f"the 95% interval {_fmt(iv)} lies wholly {bar.op} {bar.value:g}"
    elif side == "fail":
        reason = f"the 95% interval {_fmt(iv)} lies wholly on the failing side of {bar.op} {bar.value:g}"
    else:
        needed = (stats.noises_to_decide(value, bar.value) if iv.method == "Wilson" else
                  stats.chained_noises_to_decide(value, bar.value) if iv.method == stats.CHAINED else None)
        reason = (f"the 95% interval {_fmt(iv)} straddles the bar {bar.value:g}: {n} {unit} cannot decide it"
                  + (f"; about {needed} noises would at the same proportion" if needed else ""))
    ctrl = None
    if control is not None:
        c_value, c_iv = control
        c_side = c_iv.side(bar)
        caught = c_iv.caught(bar)
        ctrl = {"value": c_value, "interval": [c_iv.lo, c_iv.hi, c_iv.method], "side": c_side, "caught": caught}
        if holds and not caught:
            holds = False
            where = (f"does not lie wholly below the score bar {SCORE_BAR:g} (an exact claim's control)"
                     if bar.op == "==" else
                     f"{'also clears' if c_side == 'pass' else 'straddles'} the bar {bar.op} {bar.value:g}")
            reason = f"the control is not caught: {c_value:.3g}, interval {_fmt(c_iv)} {where}"
        else:
            reason += f"; control {c_value:.3g} {_fmt(c_iv)} {'caught' if caught else 'not caught'}"
    return Decision(holds, iv, reason, ctrl, None, needed)


def _both_show(want_greater: bool, lo: float, hi: float, pos: int, neg: int, p: float) -> bool:
    """A paired direction of non-0/1 (or clustered) values: the bootstrap interval of the mean difference lies on
    the claimed side of 0, and the exact sign test finds the same direction at the 5% level. The percentile
    bootstrap alone is not exact in small samples (three pairs that each differ by 0.5 give the interval
    [0.5, 0.5]); the sign test is, and an intersection of two level-5% tests keeps the level."""
    shown = lo > 0 if want_greater else hi < 0
    right_way = pos > neg if want_greater else neg > pos
    return shown and right_way and p < stats.ALPHA


def _paired(keys_a: Sequence, keys_b: Sequence) -> bool:
    return len(keys_a) == len(keys_b) and set(keys_a) == set(keys_b)


def decide_direction(bar: Bar, a: tuple[Sequence, Sequence[float]], b: tuple[Sequence, Sequence[float]],
                     iv: Interval) -> Decision:
    """`a` and `b` are (keys, per-noise values) of the measurement and of the right-hand side."""
    if bar.op == "==":
        raise ValueError("a direction case needs one of >=, >, <=, <; '==' compares with a fixed value")
    (keys_a, va), (keys_b, vb) = a, b
    for side, keys in (("measurement", keys_a), ("right-hand side", keys_b)):
        if len(set(keys)) < len(keys):  # pairing by key would keep one value of each repeated key
            twice = sorted({str(k) for k in keys if list(keys).count(k) > 1})[:5]
            raise ValueError(f"the {side}'s keys repeat ({', '.join(twice)}): each value needs a key of its own")
    shared = len(set(keys_a) & set(keys_b))
    if shared and not _paired(keys_a, keys_b):
        raise ValueError(f"the two sides share {shared} of their noise ids but not all ({len(set(keys_a))} and "
                         f"{len(set(keys_b))} ids): a direction compares the same noises (paired) or disjoint ones")
    if not shared:  # the unpaired test: each value an independent draw
        kinds = ({type(k).__name__ for k in keys_a}, {type(k).__name__ for k in keys_b})
        if kinds[0] != kinds[1]:  # 0 against "0": the same noises keyed two ways would be compared unpaired
            raise ValueError(f"the two sides share no key, and their keys are of other kinds ({', '.join(kinds[0])} "
                             f"against {', '.join(kinds[1])}): key both sides alike")
        for side, keys in (("measurement", keys_a), ("right-hand side", keys_b)):
            if clusters_of(keys) is not None and len(set(clusters_of(keys))) < len(keys):
                raise ValueError(f"the {side}'s values come in {cluster_unit(clusters_of(keys))} of several "
                                 f"(keys such as {keys[0]!r}), and the sides share none: an unpaired test would take "
                                 f"each value as independent")
    want_greater = bar.op in UPPER
    mean_a, mean_b = sum(va) / len(va), sum(vb) / len(vb)
    clusters = clusters_of(keys_a)
    if _paired(keys_a, keys_b):
        by_key = dict(zip(keys_b, vb))
        pairs = [(x, by_key[k]) for k, x in zip(keys_a, va)]
        if clusters is not None:  # several units per noise: resample noises, not units; signs per noise
            differences = [x - y for x, y in pairs]
            lo, hi = stats.cluster_bootstrap_mean(differences, clusters)
            pos, neg, p = stats.sign_test([sum(g) / len(g) for g in stats.by_cluster(differences, clusters)])
            holds = _both_show(want_greater, lo, hi, pos, neg, p)
            unit = cluster_unit(clusters)
            test = {"name": f"paired bootstrap and sign test over {unit}", "difference": [lo, hi],
                    "signs": [pos, neg], "p": p, "pairs": len(pairs), unit: len(set(clusters))}
            reason = (f"{mean_a:.3g} vs {mean_b:.3g} over {len(set(clusters))} paired {unit} ({len(pairs)} pairs): "
                      f"95% interval of the difference [{lo:.3g}, {hi:.3g}], {unit} up / down {pos} / {neg}, "
                      f"exact sign test p = {p:.3g}")
        elif stats.is_binary(va) and stats.is_binary(vb):
            b10 = sum(1 for x, y in pairs if x > y)
            b01 = sum(1 for x, y in pairs if x < y)
            p = stats.mcnemar_exact(b10, b01)
            right_way = b10 > b01 if want_greater else b01 > b10
            holds = right_way and p < stats.ALPHA
            test = {"name": "exact McNemar", "discordant": [b10, b01], "p": p, "pairs": len(pairs)}
            reason = (f"{mean_a:.3g} vs {mean_b:.3g} over {len(pairs)} paired noises: discordant {b10} / {b01}, "
                      f"exact McNemar p = {p:.3g}")
        else:
            differences = [x - y for x, y in pairs]
            lo, hi = stats.bootstrap_mean(differences)
            pos, neg, p = stats.sign_test(differences)
            holds = _both_show(want_greater, lo, hi, pos, neg, p)
            test = {"name": "paired bootstrap and sign test", "difference": [lo, hi], "signs": [pos, neg], "p": p,
                    "pairs": len(pairs)}
            reason = (f"{mean_a:.3g} vs {mean_b:.3g} over {len(pairs)} paired noises: 95% interval of the "
                      f"difference [{lo:.3g}, {hi:.3g}], up / down {pos} / {neg}, exact sign test p = {p:.3g}")
    else:
        lo, hi = stats.unpaired_bootstrap(va, vb)
        p = stats.permutation_test(va, vb)
        holds = (lo > 0 if want_greater else hi < 0) and p < stats.ALPHA  # as _both_show: two level-5% tests
        test = {"name": "unpaired bootstrap and permutation test", "difference": [lo, hi], "p": p,
                "sizes": [len(va), len(vb)]}
        reason = (f"{mean_a:.3g} vs {mean_b:.3g} (no shared noise ids; {len(va)} and {len(vb)} values): 95% "
                  f"interval of the difference [{lo:.3g}, {hi:.3g}], permutation test p = {p:.3g}")
    reason += ("; the claimed direction holds at the 5% level" if holds
               else f"; the claimed direction ({bar.op}) is not shown at the 5% level")
    test["direction"] = bar.op
    test["holds"] = holds
    return Decision(holds, iv, reason, None, test)

"""The results file: its format name and the checks every reader applies, shared by the writer
(fixtures/results.py) and the report (reports/build.py).

A results file is `{"meta": {...}, "cases": [record, ...]}`. Every collected claim case has one record; its
`outcome` is `passed` or `failed` (a value measured against its bar) or `error` or `skipped` (`reason` says why;
no value, but for an error in a measured case's teardown, which keeps its measurement). A measured record carries its decision (cases/decision.py): the 95% interval of its value, its control's
interval and, for a direction case, its paired test; its outcome must follow from them and the bar it carries.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from cases import OPS, PARTS, Bar
from cases.decision import Interval
from models.stats import ALPHA, mcnemar_exact

RESULTS_FORMAT = "samenoise-results/4"  # 3: meta.constants (seeds, grid range); 4: decisions (interval, control)
OUTCOMES = ("failed", "error", "passed", "skipped")  # also the report's order: what needs a look first
MEASURED = ("passed", "failed")

NUMBER = (int, float)
# what a reader needs from each case record, with the types it needs (checked before anything is drawn)
CASE_FIELDS = {"id": str, "claim": str, "part": str, "figure": str, "source": str, "metric": str, "n": int, "bar": dict,
               "passed": bool, "outcome": str, "runs": list, "params": dict, "worst": list, "extra": dict}
RUN_FIELDS = {"model": str, "sampler": str, "nfe": int}
CONSTANT_FIELDS = ("bank_seed", "inverse_truth_seed", "permutation_seed")  # meta.constants: the seeds of the sets


class ResultsError(ValueError):
    """A results file (or a store entry or golden file it names) that cannot be used; the message names the file,
    the case and the field."""


def _is(value, kind) -> bool:
    """isinstance, but a bool is no number or count (True is an int to Python)."""
    return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))


def _number(value) -> bool:
    return _is(value, NUMBER) and math.isfinite(value)


def check_record(case: Any, where: str) -> None:
    """Refuse a record that lacks a field, has one of the wrong type, or whose outcome does not follow from its
    value and bar."""
    if not isinstance(case, dict):
        raise ResultsError(f"{where} is not an object")
    for name, kind in CASE_FIELDS.items():
        if name not in case:
            raise ResultsError(f"{where} has no '{name}'")
        if not _is(case[name], kind):
            raise ResultsError(f"{where}: '{name}' is {case[name]!r:.80}, expected {kind.__name__}")
    outcome, bar = case["outcome"], case["bar"]
    if outcome not in OUTCOMES:
        raise ResultsError(f"{where}: outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    if case["part"] not in PARTS:  # the report's scorecard and tables are by part: another would not be shown
        raise ResultsError(f"{where}: part {case['part']!r} is not one of {', '.join(PARTS)}")
    if not case["runs"] and outcome in MEASURED:  # a case skipped or in error before its runs were known has none
        raise ResultsError(f"{where}: 'runs' is empty; a measured case samples at least one run")
    if case["n"] < (1 if outcome in MEASURED else 0):
        raise ResultsError(f"{where}: 'n' is {case['n']}, expected a count of pairs >= "
                           f"{1 if outcome in MEASURED else 0} for outcome {outcome!r}")
    missing = [f for f in ("op", "value", "source") if f not in bar]
    if missing:
        raise ResultsError(f"{where}: 'bar' lacks {missing}")
    if bar["op"] not in OPS:
        raise ResultsError(f"{where}: bar op {bar['op']!r} is not one of {', '.join(OPS)}")
    if bar["value"] is not None and not _number(bar["value"]):
        raise ResultsError(f"{where}: bar value {bar['value']!r} is not a finite number")
    if not isinstance(bar["source"], str) or not bar["source"]:
        raise ResultsError(f"{where}: bar source {bar['source']!r} is not a text naming where the bar comes from")
    for k, pair in enumerate(case["worst"]):  # the report draws these noise ids and prints their values
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and _is(pair[0], int) and _number(pair[1])):
            raise ResultsError(f"{where}: worst[{k}] is {pair!r:.80}, expected [noise id, finite value]")
    reference = case["extra"].get("reference")
    if reference is not None:  # a measured reference beside the value (held-out data's GL): the tables print it
        if not (isinstance(reference, dict) and isinstance(reference.get("label"), str)
                and _number(reference.get("value"))):
            raise ResultsError(f"{where}: extra.reference is {reference!r:.80}, expected a 'label' and a finite "
                               f"'value'")
        if "interval" in reference:
            _check_interval(reference["interval"], reference["value"], f"{where}: extra.reference")
    for k, run in enumerate(case["runs"]):
        for name, kind in RUN_FIELDS.items():
            if not isinstance(run, dict) or not _is(run.get(name), kind):
                got = run.get(name) if isinstance(run, dict) else run
                raise ResultsError(f"{where}: runs[{k}] '{name}' is {got!r}, expected {kind.__name__}")
    if outcome not in MEASURED:
        if not isinstance(case.get("reason"), str) or not case["reason"]:
            raise ResultsError(f"{where}: outcome {outcome!r} needs a 'reason'")
        if case["passed"]:
            raise ResultsError(f"{where}: outcome {outcome!r} with passed true; only a passed case has passed true")
        value = case.get("value")
        if value is not None and not (_number(value) and case.get("decision") is not None):
            raise ResultsError(f"{where}: 'value' is {value!r:.80} for outcome {outcome!r}; expected null, or a finite "
                               f"number beside the decision of a case that raised after it")
        if case.get("decision") is not None:  # a case that raised after its decision keeps it; the tables show it
            decision_holds(case["decision"], bar, where, value)
        if case.get("versus") is not None and not isinstance(case["versus"], dict):
            raise ResultsError(f"{where}: 'versus' is {case['versus']!r:.80}, expected an object or null")
        return
    value = case.get("value")
    if not _number(value):
        raise ResultsError(f"{where}: 'value' is {value!r}, expected a finite number for outcome {outcome!r}")
    if bar["value"] is None:
        versus = case.get("versus")
        if not _number(versus.get("value") if isinstance(versus, dict) else None):
            raise ResultsError(f"{where}: the bar compares with another measurement, but 'versus' has no value")
    holds = decision_holds(case.get("decision"), bar, where, value)
    if holds != (outcome == "passed") or case["passed"] != holds:
        raise ResultsError(f"{where}: its decision says {'holds' if holds else 'does not hold'}, but the record says "
                           f"outcome {outcome!r}, passed {case['passed']}")


def _check_interval(interval: Any, value: Any, where: str) -> None:
    """An interval [lo, hi, ...] of finite bounds, lo <= hi, holding its value (to rounding): a reversed interval or
    one beside its value cannot be what the decision computed (the verdict is recomputed from the bounds alone)."""
    if not (isinstance(interval, (list, tuple)) and len(interval) >= 2 and all(_number(v) for v in interval[:2])):
        raise ResultsError(f"{where}: interval {interval!r:.80} is not [lo, hi, ...] of finite bounds")
    lo, hi = interval[:2]
    slack = 1e-9 * max(1.0, abs(lo), abs(hi))
    if lo > hi or not lo - slack <= value <= hi + slack:
        raise ResultsError(f"{where}: interval [{lo}, {hi}] {'is reversed' if lo > hi else 'does not hold'} its value "
                           f"{value}")


def decision_holds(decision: Any, bar: dict, where: str, value: Any = None) -> bool:
    """Whether a recorded decision holds, recomputed from its interval, control and test (cases/decision.py); with
    `value`, the interval must hold it."""
    if not isinstance(decision, dict) or not isinstance(decision.get("interval"), list) or \
            len(decision["interval"]) != 3 or not all(_number(v) for v in decision["interval"][:2]):
        got = decision.get("interval") if isinstance(decision, dict) else decision
        raise ResultsError(f"{where}: a measured case needs a 'decision' with an 'interval' [lo, hi, method] of "
                           f"finite bounds, got {got!r:.80}")
    if value is not None:
        _check_interval(decision["interval"], value, f"{where}: the decision")
    if not isinstance(decision.get("reason"), str):
        raise ResultsError(f"{where}: the decision's 'reason' is {decision.get('reason')!r:.80}, expected text")
    if bar["value"] is None:
        test = decision.get("test")
        if not isinstance(test, dict) or not isinstance(test.get("holds"), bool) or test.get("direction") != bar["op"]:
            raise ResultsError(f"{where}: a direction case needs a 'test' for {bar['op']} with 'holds', got "
                               f"{test!r:.80}")
        return direction_holds(test, bar["op"], where)
    b = Bar(bar["op"], bar["value"], bar["source"])
    holds = Interval(*decision["interval"]).side(b) == "pass"
    control = decision.get("control")
    if control is not None:  # checked whatever the case's own interval says: the report shows it either way
        if not isinstance(control, dict) or not _number(control.get("value")) or \
                not isinstance(control.get("interval"), list) or len(control["interval"]) < 2 or \
                not all(_number(v) for v in control["interval"][:2]) or not isinstance(control.get("caught"), bool):
            raise ResultsError(f"{where}: 'control' needs a finite 'value', an 'interval' [lo, hi, ...] and "
                               f"'caught'")
        _check_interval(control["interval"], control["value"], f"{where}: the control")
        lo, hi, *how = control["interval"]
        caught = Interval(lo, hi, str(how[0]) if how else "").caught(b)
        if caught != control["caught"]:
            raise ResultsError(f"{where}: the control's interval says {'caught' if caught else 'not caught'}, "
                               f"but the record says caught {control['caught']}")
        holds = holds and caught
    return holds


def direction_holds(test: dict, op: str, where: str) -> bool:
    """A direction test's verdict recomputed from what it recorded: McNemar's discordant counts, or the interval
    of the difference (with the sign test's counts where it recorded them); refused when the recorded 'holds'
    disagrees."""
    greater = op in (">=", ">")
    if "discordant" in test:
        if not (isinstance(test["discordant"], list) and len(test["discordant"]) == 2 and
                all(_is(v, int) and v >= 0 for v in test["discordant"])):
            raise ResultsError(f"{where}: McNemar's 'discordant' needs two counts, got {test['discordant']!r:.80}")
        b10, b01 = test["discordant"]
        holds = (b10 > b01 if greater else b01 > b10) and mcnemar_exact(b10, b01) < ALPHA
    elif isinstance(test.get("difference"), list) and len(test["difference"]) == 2 and \
            all(_number(v) for v in test["difference"]):
        lo, hi = test["difference"]
        holds = lo > 0 if greater else hi < 0
        if "signs" in test:  # a paired test of non-0/1 values also needs the exact sign test (cases/decision.py)
            signs = test["signs"]
            if not (isinstance(signs, list) and len(signs) == 2 and all(_is(v, int) and v >= 0 for v in signs)):
                raise ResultsError(f"{where}: a sign test needs two counts (up, down), got {signs!r}")
            up, down = signs
            holds = holds and (up > down if greater else down > up) and mcnemar_exact(up, down) < ALPHA
        elif "p" in test:  # an unpaired test also needs its permutation test (cases/decision.py), which the record
            # cannot recompute (it keeps no values): its p is taken as recorded
            if not _number(test["p"]) or not 0 < test["p"] <= 1:
                raise ResultsError(f"{where}: a permutation test's 'p' must lie in (0, 1], got {test['p']!r:.80}")
            holds = holds and test["p"] < ALPHA
    else:
        raise ResultsError(f"{where}: a direction test needs 'discordant' counts or a 'difference' interval")
    if holds != test["holds"]:
        raise ResultsError(f"{where}: its test records holds {test['holds']}, but its figures say {holds}")
    return holds


def check_results(doc: Any, path: str | os.PathLike) -> dict[str, Any]:
    meta = doc.get("meta") if isinstance(doc, dict) else None
    fmt = meta.get("format") if isinstance(meta, dict) else None
    if fmt != RESULTS_FORMAT:
        name, _, version = str(fmt).partition("/")
        ours, current = RESULTS_FORMAT.split("/")
        if name != ours or not version.isdigit():
            kind = "a foreign file"
        elif int(version) < int(current):
            kind = "an older version of the format; rerun `pytest bench` to remake it"
        else:
            kind = "a newer version of the format; update samenoise to read it"
        raise ResultsError(f"{path}: results format {fmt!r} is not {RESULTS_FORMAT!r} ({kind})")
    if not _is(meta.get("noises"), int) or meta["noises"] < 2:  # a run takes --noises 2 or more
        raise ResultsError(f"{path}: meta has no whole number 'noises' of at least 2 (got {meta.get('noises')!r:.80})")
    constants = meta.get("constants")
    missing = [k for k in CONSTANT_FIELDS if not isinstance(constants, dict) or not _is(constants.get(k), int)]
    if missing:
        raise ResultsError(f"{path}: meta.constants lacks the integers {missing}")
    if not isinstance(doc.get("cases"), list):
        raise ResultsError(f"{path}: no 'cases' list")
    for k, case in enumerate(doc["cases"]):
        ident = case.get("id", "?") if isinstance(case, dict) else repr(case)
        check_record(case, f"{path}: case {k} ({ident})")
    return doc


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """A results file written by `pytest bench`, checked record by record; anything else is refused by name."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(), parse_constant=lambda c: float(c))  # NaN is refused by check_record
    except (OSError, ValueError) as e:
        raise ResultsError(f"{path}: cannot read the results file ({e})") from e
    return check_results(doc, path)

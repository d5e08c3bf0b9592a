"""The report: built from a small results file and sample store; refuses foreign results; says what is missing."""
import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from fixtures.measure import CONSTANTS
from models.store import SampleStore, key_hash
from reports.build import ReportError, build_report, load_results
from reports.schema import RESULTS_FORMAT


def pair_case(hashes, ident="C2/a~b/dpm3@20: rp>=0.6", **kw):
    return {"id": ident, "claim": "C2", "part": "C2", "figure": "Fig. 3", "source": "Sec. 2.1", "metric": "rp",
            "value": 0.25,
            "n": 64, "bar": {"op": ">=", "value": 0.6, "source": "src"}, "versus": None, "passed": False,
            "models": ["a", "b"], "runs": [{"model": m, "sampler": "dpm3", "nfe": 20} for m in "ab"],
            "versus_runs": [], "params": {}, "worst": [[3, 0.1], [5, 0.2]], "extra": {"samples": hashes},
            "outcome": "failed", "seconds": 1.0} | kw | {"decision": decision_of(kw.get("value", 0.25))}


def decision_of(value):
    """A recorded decision around `value`: a 95% interval of +/- 0.1 and a control caught at 0."""
    if value is None:
        return None
    return {"holds": value - 0.1 > 0.6, "interval": [value - 0.1, value + 0.1, "Wilson"], "reason": "test",
            "control": {"value": 0.0, "interval": [0.0, 0.05, "Wilson"], "side": "fail", "caught": True},
            "test": None, "noises_to_decide": None}


def write_results(tmp_path, cases, fmt=RESULTS_FORMAT):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"meta": {"format": fmt, "noises": 64, "constants": CONSTANTS}, "cases": cases}))
    return results


def stored_pair(tmp_path, with_samples=True, n=64) -> list[str]:
    """Two models' sets of n random 8 x 8 images in the run's store folder (made with or without the entries); their
    key hashes."""
    store = SampleStore(tmp_path / "cache")
    (tmp_path / "cache").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    hashes = []
    for model in ("a", "b"):
        key = {"model": model, "sampler": "dpm3", "nfe": 20}
        if with_samples:
            store.put(key, rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8), range(n), 20)
        hashes.append(key_hash(key))
    return hashes


def make_run(tmp_path, with_samples=True, n=64):
    return write_results(tmp_path, [pair_case(stored_pair(tmp_path, with_samples, n))])


def test_report_is_built_with_figures_that_decode_and_are_not_blank(tmp_path):
    page = build_report(make_run(tmp_path), tmp_path / "cache", tmp_path / "out")
    text = page.read_text()
    assert "C2/a~b/dpm3@20: rp&gt;=0.6" in text and "no C3 case ran" in text
    pngs = re.findall(r"src='([^']+)'", text)  # every image the page links
    assert pngs == ["grids.png", "matrices.png", "worst.png", "forest-C2.png"]
    # each case shows its 95% interval, its control and why it holds or not
    assert "[0.150, 0.350] Wilson" in text and "0 [0.000, 0.050] caught" in text
    for name in pngs:
        img = np.asarray(Image.open(tmp_path / "out" / name).convert("L"))
        assert img.std() > 5, name  # not a blank canvas


def test_missing_store_entry_is_said_instead_of_drawn(tmp_path):
    page = build_report(make_run(tmp_path, with_samples=False), tmp_path / "cache", tmp_path / "out")
    assert "not drawn: sample store entry" in page.read_text()


@pytest.mark.parametrize("fmt, says", [("something-else/0", "a foreign file"),
                                        ("samenoise-results/0", "an older version of the format; rerun"),
                                        ("samenoise-results/7", "a newer version of the format")])
def test_foreign_or_older_results_are_refused_with_the_file_name(tmp_path, fmt, says):
    bad = write_results(tmp_path, [], fmt)
    with pytest.raises(ReportError, match=re.escape(f"results.json: results format {fmt!r} is not "
                                                    f"{RESULTS_FORMAT!r} ({says}")):
        load_results(bad)


@pytest.mark.parametrize("field, value, says", [("value", None, "'value' is None, expected a finite number"),
                                                ("worst", {}, "'worst' is {}, expected list"),
                                                ("outcome", "unsure", "outcome 'unsure' is not"),
                                                ("bar", {"op": ">="}, "'bar' lacks ['value', 'source']"),
                                                # each of these was accepted and crashed the report with a traceback
                                                ("bar", {"op": ">=", "value": 0.6, "source": None},
                                                 "bar source None is not a text"),
                                                ("part", "C9", "part 'C9' is not one of C2, "),
                                                ("runs", [], "'runs' is empty; a measured case"),
                                                ("n", True, "'n' is True, expected int"),
                                                ("n", 0, "'n' is 0, expected a count of pairs >= 1")])
def test_a_damaged_case_record_is_refused_naming_the_case_and_field(tmp_path, field, value, says):
    bad = write_results(tmp_path, [pair_case(["x", "y"], **{field: value})])
    with pytest.raises(ReportError, match=re.escape("case 0 (C2/a~b/dpm3@20: rp>=0.6)") + ".*" + re.escape(says)):
        load_results(bad)
    record = pair_case(["x", "y"])
    del record["n"]
    with pytest.raises(ReportError, match=r"case 0 \(C2/a~b/dpm3@20: rp>=0.6\) has no 'n'"):
        load_results(write_results(tmp_path, [record]))


def test_a_damaged_decision_of_a_case_in_error_is_refused_before_anything_is_written(tmp_path):
    """An error record keeps the decision it reached before it raised, and the tables show it: a damaged one
    crashed the page after the figures were written."""
    make_run(tmp_path)
    errored = pair_case(["x", "y"], outcome="error", reason="it raised") | {"decision": {"interval": [0.1, 0.2]}}
    with pytest.raises(ReportError, match=r"case 0 .*needs a 'decision' with an 'interval' \[lo, hi, method\]"):
        build_report(write_results(tmp_path, [errored]), tmp_path / "cache", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    errored = pair_case(["x", "y"], outcome="error", reason="it raised", value=None) | {"versus": [1]}
    with pytest.raises(ReportError, match=r"'versus' is \[1\], expected an object or null"):
        load_results(write_results(tmp_path, [errored]))


def test_a_case_skipped_before_its_runs_were_known_is_readable_and_a_non_measured_record_claims_nothing(tmp_path):
    """A checkpoint regression's runs are known once its candidate is loaded: one skipped or in error before that
    has no runs, and its record made the whole results file unreadable. A skipped or error record must not say
    passed, nor carry a value without the decision it came from, nor a negative count."""
    skipped = pair_case(["x", "y"], outcome="skipped", reason="no candidate", runs=[], value=None, n=0,
                        passed=False) | {"decision": None}
    assert load_results(write_results(tmp_path, [skipped]))["cases"][0]["runs"] == []
    for change, says in ((dict(passed=True), "outcome 'skipped' with passed true"),
                         (dict(value=float("nan")), "'value' is nan for outcome 'skipped'"),
                         (dict(value=0.7), "'value' is 0.7 for outcome 'skipped'"),
                         (dict(n=-5), "'n' is -5, expected a count of pairs >= 0")):
        with pytest.raises(ReportError, match=re.escape(says)):
            load_results(write_results(tmp_path, [skipped | change]))


def test_a_damaged_decision_or_test_is_refused_before_anything_is_drawn(tmp_path):
    case = pair_case(["x", "y"])
    case["decision"]["reason"] = 5
    with pytest.raises(ReportError, match=r"the decision's 'reason' is 5, expected text"):
        load_results(write_results(tmp_path, [case]))
    case = pair_case(["x", "y"], bar={"op": ">", "value": None, "source": "src"}, versus={"value": 0.1})
    case["decision"]["test"] = {"name": "exact McNemar", "discordant": [None, 3], "holds": False, "direction": ">"}
    with pytest.raises(ReportError, match=r"McNemar's 'discordant' needs two counts, got \[None, 3\]"):
        load_results(write_results(tmp_path, [case]))
    doc = json.loads(write_results(tmp_path, [pair_case(["x", "y"])]).read_text())
    for noises in (True, -5, 1):  # a count of noises no run takes was printed in the metadata table
        doc["meta"]["noises"] = noises
        (tmp_path / "results.json").write_text(json.dumps(doc))
        with pytest.raises(ReportError, match=rf"meta has no whole number 'noises' of at least 2 \(got {noises}\)"):
            load_results(tmp_path / "results.json")


def test_a_grid_from_fewer_than_64_noises_says_it_is_partial(tmp_path):
    page = build_report(make_run(tmp_path, n=16), tmp_path / "cache", tmp_path / "out").read_text()
    assert "grids.png" in page and "partial: the run sampled fewer than the 64 noise ids" in page
    assert "a dpm3@20 (16)" in page
    # a case of 16 noises whose sets were taken from longer stored ones (fixtures/samples.py) shows its 16, not 64
    results = make_run(tmp_path, n=64)
    doc = json.loads(results.read_text())
    doc["cases"] = [c | {"n": 16} for c in doc["cases"]]
    results.write_text(json.dumps(doc))
    page = build_report(results, tmp_path / "cache", tmp_path / "out2").read_text()
    assert "a dpm3@20 (16)" in page


def test_failing_cases_with_missing_samples_are_named_beside_the_drawn_ones(tmp_path):
    make_run(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    drawn = results["cases"][0]
    gone = pair_case(["0" * 64, "1" * 64], ident="C2/c~d/dpm3@20: rp>=0.6")
    page = build_report(write_results(tmp_path, [drawn, gone]), tmp_path / "cache", tmp_path / "out").read_text()
    assert "worst.png" in page and "partial: not drawn for C2/c~d/dpm3@20: rp&gt;=0.6: sample store entry" in page


def test_table_1_pairs_of_published_checkpoints_join_the_matrices_and_grids(tmp_path):
    """The real-weight pairs (Fig. 14) are same-noise model pairs like the embedded zoo's (Fig. 3): a run of them
    alone draws the matrices and the grids."""
    make_run(tmp_path)
    case = json.loads((tmp_path / "results.json").read_text())["cases"][0]
    real = case | {"id": "real/DDPMv1~EDMv1/a~b/dpm3@20: rp>=0.6", "claim": "real", "part": "real",
                   "figure": "Fig. 14"}
    page = build_report(write_results(tmp_path, [real]), tmp_path / "cache", tmp_path / "out").read_text()
    assert "matrices.png" in page and "grids.png" in page


def test_a_worst_pairs_figure_drawn_from_part_of_the_store_is_not_kept(tmp_path):
    """One failing case drawn, one whose entries are gone: the page says so, and the set is not kept for a rerun
    (a kept set would bring the stale note back after the entries are restored)."""
    make_run(tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    gone = pair_case(["0" * 64, "1" * 64], ident="C2/c~d/dpm3@20: rp>=0.6")
    page = build_report(write_results(tmp_path, [results["cases"][0], gone]), tmp_path / "cache",
                        tmp_path / "out").read_text()
    assert "partial: not drawn for C2/c~d" in page and not (tmp_path / "cache" / "figures").exists()


def test_failed_cases_without_a_pair_to_show_or_of_a_direction_are_named_not_drawn(tmp_path):
    """A failed direction case's least similar pairs say nothing of its other side, and a failed case of one model's
    samples (GL) has no pair of sets: both are named under the figure, neither drawn."""
    make_run(tmp_path)
    drawn = json.loads((tmp_path / "results.json").read_text())["cases"][0]
    hashes = drawn["extra"]["samples"]
    direction = pair_case(hashes, ident="C3/a/dpm3@20: rp>rp(b/dpm3@20)", claim="C3", part="C3", figure="Fig. 5",
                          bar={"op": ">", "value": None, "source": "src"}, value=0.96,
                          versus={"value": 0.961, "n": 64})
    direction["decision"] = {"holds": False, "interval": [0.9, 1.0, "Wilson"], "reason": "test", "control": None,
                             "test": {"name": "exact McNemar", "discordant": [3, 3], "p": 1.0, "pairs": 64,
                                      "direction": ">", "holds": False}}
    gl = pair_case(hashes[:1], ident="C3/a/dpm3@20: gl>=0.6", claim="C3", part="C3", figure="Fig. 2b", metric="gl",
                   runs=[{"model": "a", "sampler": "dpm3", "nfe": 20}], models=["a"])
    page = build_report(write_results(tmp_path, [drawn, direction, gl]), tmp_path / "cache",
                        tmp_path / "out").read_text()
    assert "worst.png" in page
    assert "claims of high similarity: C3/a/dpm3@20: rp&gt;rp(b/dpm3@20) (claims of low similarity, direction" in page
    assert "no pair of sample sets to show): C3/a/dpm3@20: gl&gt;=0.6" in page


def test_a_failing_regression_case_is_drawn_beside_the_golden_thumbnails(tmp_path):
    from models.golden import Golden
    from models.atomic import file_sha256

    rng = np.random.default_rng(1)
    store = SampleStore(tmp_path / "cache")
    key = {"model": "candidate", "sampler": "dpm3", "nfe": 20}
    store.put(key, rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), range(16), 20)  # thumbnailed to 16 px
    golden = Golden(model="ref", bank_hash="h", sampler="dpm3", nfe=20, grid="edm", label=None, descriptor="d",
                    ids=np.arange(16), embeddings=rng.normal(size=(16, 8)).astype(np.float32),
                    thumbnails=np.full((16, 16, 16, 3), 200, np.uint8)).save(tmp_path / "ref.npz")
    case = pair_case([key_hash(key)], ident="regression/golden file ref.npz: rp>=0.6", claim="regression",
                     part="regression", figure="",
                     extra={"samples": [key_hash(key)], "golden": {"path": str(golden),
                                                                   "sha256": file_sha256(golden)}})
    out = tmp_path / "out"
    page = build_report(write_results(tmp_path, [case]), tmp_path / "cache", out).read_text()
    assert "worst.png" in page and "partial:" not in page
    img = np.asarray(Image.open(out / "worst.png").convert("L"))
    assert img.std() > 5
    golden.write_bytes(golden.read_bytes()[:100])  # the golden file changed after the run
    page = build_report(write_results(tmp_path, [case]), tmp_path / "cache", out).read_text()
    assert "not drawn: " in page and "changed since the run" in page


def test_report_opens_in_headless_chromium_without_console_errors(tmp_path):
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("needs Debian's chromium package (apt-get install chromium; .ci/run installs it)")
    page = build_report(make_run(tmp_path), tmp_path / "cache", tmp_path / "out")
    shot = tmp_path / "shot.png"
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
                          f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1600",
                          f"--screenshot={shot}", page.as_uri()], capture_output=True, text=True, timeout=120)
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line or "ERR_FILE_NOT_FOUND" in line]
    assert shot.is_file() and not console, out.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"))
    assert img.std() > 5  # the page rendered something
    # a missing or undecodable figure logs nothing: a copy of the page beside it (its relative links the same) lists,
    # once loaded, every image the browser could not decode
    probe = page.with_name("probe.html")
    listing = ("<script>window.addEventListener('load', () => document.body.setAttribute('data-images', [...document"
               ".images].map(i => (i.complete && i.naturalWidth > 0 ? 'ok:' : 'broken:') + i.getAttribute('src'))"
               ".join(' ')))</script>")
    probe.write_text(page.read_text().replace("</body>", listing + "</body>"))
    dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                          f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    images = re.search(r'data-images="([^"]*)"', dom).group(1).split()
    assert images and all(i.startswith("ok:") for i in images), images


def test_the_scorecard_says_per_claim_whether_it_holds_with_counts_and_the_paper_number(tmp_path):
    results = make_run(tmp_path)
    doc = json.loads(results.read_text())
    holds = pair_case(doc["cases"][0]["extra"]["samples"], ident="C2/b~a/dpm3@20: rp>=0.6", value=0.8,
                      passed=True, outcome="passed")
    skipped = pair_case([], ident="real/x~y/dpm3@20: rp>=0.6", claim="real", part="real", value=None,
                        outcome="skipped", reason="no zoo entry for x")
    doc["cases"] += [holds, skipped]
    doc["meta"]["versions"] = {"torch": "2.13.0", "diffusers": None}
    results.write_text(json.dumps(doc))
    page = build_report(results, tmp_path / "cache", tmp_path / "out").read_text()
    card = page[page.index("<h2>Claims</h2>"):page.index("<h2>Run</h2>")]
    assert ("<td>Unconditional models, same noise (Sec. 2)</td><td>holds in 1 of 2</td><td>1 failed, 1 passed</td>"
            "<td>rp 0.25-0.8</td><td>RP 0.70 and MAE score 0.64") in card
    assert "<td>Real checkpoints (App. A.1, A.2)</td><td>not run</td><td>1 skipped</td>" in card
    assert "<td>torch 2.13.0, diffusers -</td>" in page and "None" not in page and "{" not in card
    assert "no zoo entry for x" in page  # a skipped case shows its reason in the table
    crashed = pair_case([], ident="manifold/x~y/dpm3@20: rp_manifold>=0.6", claim="manifold", part="manifold",
                        metric="rp_manifold", value=None, outcome="error", reason="call: RuntimeError: boom")
    doc["cases"].append(crashed)
    results.write_text(json.dumps(doc))
    page = build_report(results, tmp_path / "cache", tmp_path / "out2").read_text()
    assert "<tr class='fails'><td>Manifold reproducibility (App. A.3)</td><td>errors</td><td>1 error</td>" in page
    # a part whose every failure straddles its bar is undecided at this noise count, not refuted
    straddles = pair_case([], ident="finetune/x~y/dpm3@20: rp>=0.6", claim="finetune", part="finetune", value=0.62)
    doc["cases"].append(straddles)
    results.write_text(json.dumps(doc))
    page = build_report(results, tmp_path / "cache", tmp_path / "out3").read_text()
    assert "<td>undecided</td><td>1 failed (1 undecided: an interval straddles the bar)</td>" in page
    # so is one whose own interval lies below a '<' bar while its control (which must clear the bar) straddles it
    low = pair_case([], ident="real/x~y/dpm3@20: rp_unrelated<0.6", claim="real", part="real", metric="rp_unrelated",
                    value=0.2, bar={"op": "<", "value": 0.6, "source": "src"})
    low["decision"]["control"] = {"value": 0.63, "interval": [0.55, 0.70, "Wilson"], "side": "straddles",
                                  "caught": False}
    doc["cases"] = [c for c in doc["cases"] if c["part"] != "real"] + [low]
    results.write_text(json.dumps(doc))
    page = build_report(results, tmp_path / "cache", tmp_path / "out4").read_text()
    assert "<td>undecided</td><td>1 failed (1 undecided: an interval straddles the bar)</td>" in page


def test_a_control_records_fields_and_verdict_are_checked_whatever_the_case_says(tmp_path):
    """A failing case's control is shown too: a NaN value, a missing 'caught' or a 'caught' its own interval
    contradicts is refused, not shown."""
    for change, says in (({"value": float("nan")}, "'control' needs a finite 'value'"),
                         ({"caught": None}, "and 'caught'"),
                         ({"caught": False}, "the control's interval says caught, but the record says caught False")):
        record = pair_case(["x", "y"])
        record["decision"]["control"] |= change
        with pytest.raises(ReportError, match=re.escape(says)):
            load_results(write_results(tmp_path, [record]))


def test_a_shifted_controls_worst_pairs_show_the_pairs_it_scored(tmp_path):
    """A control pairs a's id i with b's next id: its worst-pairs figure shows those, not a[i] beside b[i]."""
    from reports.build import Report, StoredSets

    results = make_run(tmp_path, n=8)
    doc = json.loads(results.read_text())
    case = doc["cases"][0] | {"params": {"pairing": "shifted"}, "worst": [[3, 0.1], [7, 0.2]]}
    stored = StoredSets(tmp_path / "cache")
    report = Report(load_results(write_results(tmp_path, [case])), stored, tmp_path / "out")
    a, b = report.worst_pair_images(report.cases[0])
    sa, sb = (stored.get(h) for h in case["extra"]["samples"])
    assert np.array_equal(a, sa.take([3, 7])) and np.array_equal(b, sb.take([4, 0]))  # 7's partner wraps to 0
    # a case of 4 noises whose sets were taken from longer stored ones (fixtures/samples.py): 3 wraps to 0, not 4
    fewer = case | {"n": 4, "worst": [[3, 0.1]]}
    report = Report(load_results(write_results(tmp_path, [fewer])), stored, tmp_path / "out")
    a, b = report.worst_pair_images(report.cases[0])
    assert np.array_equal(a, sa.take([3])) and np.array_equal(b, sb.take([0]))


def test_the_rebuild_command_writes_beside_its_results_file_by_default(tmp_path, capsys):
    from reports.build import main

    results = make_run(tmp_path)
    main([str(results), "--cache-dir", str(tmp_path / "cache")])
    assert capsys.readouterr().out.strip() == str(tmp_path / "index.html")
    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "missing.json")])
    assert err.value.code == 2 and "missing.json: cannot read the results file" in capsys.readouterr().err


def test_a_figure_that_fails_unexpectedly_is_said_not_drawn_and_the_page_is_built(tmp_path, monkeypatch):
    """E.g. a model name that matplotlib reads as maths, or a store entry without the noise ids a figure shows."""
    from reports.build import Report

    def broken(self, fig, name):
        raise RuntimeError(f"cannot typeset {name}")

    monkeypatch.setattr(Report, "save", broken)
    page = build_report(make_run(tmp_path), tmp_path / "cache", tmp_path / "out").read_text()
    assert "not drawn (RuntimeError: cannot typeset" in page and "<h2>Claims</h2>" in page


@pytest.mark.parametrize("op, interval, side", [(">=", (0.62, 0.8), "pass"), (">=", (0.3, 0.5), "fail"),
                                                (">=", (0.55, 0.7), "straddles"), ("<", (0.1, 0.3), "pass"),
                                                ("<", (0.7, 0.9), "fail"), ("<", (0.5, 0.65), "straddles")])
def test_a_threshold_cases_own_side_tells_undecided_and_control_failures_apart(op, interval, side):
    """The forest plots colour an undecided case apart, the scorecard counts it, and the worst-pairs figure leaves
    out cases whose recorded (least similar) pairs do not explain their failure."""
    from reports.build import own_side

    case = {"bar": {"op": op, "value": 0.6}, "decision": {"interval": [*interval, "Wilson"]}}
    assert own_side(case) == side
    assert own_side({"bar": {"op": "<", "value": None}, "decision": {"interval": [0, 1, "x"]}}) is None


def test_failed_cases_the_worst_pairs_do_not_explain_are_named_even_when_none_is_drawn(tmp_path):
    """A claim of low similarity that failed (its recorded pairs are the least similar): no worst-pairs image, and
    the page names the case instead of saying that no pair case failed."""
    low = pair_case(stored_pair(tmp_path), ident="control/a~b/dpm3@20: rp<0.6", claim="control", part="control", figure="",
                    value=0.7, bar={"op": "<", "value": 0.6, "source": "src"})
    low["decision"]["control"] = None  # a claim that something does not hold is itself a control
    page = build_report(write_results(tmp_path, [low]), tmp_path / "cache", tmp_path / "out").read_text()
    assert "worst.png" not in page and "no failing pair case" not in page
    assert "claims of high similarity: control/a~b/dpm3@20: rp&lt;0.6" in page


def test_the_manifold_figure_draws_rp_along_the_slerp_paths(tmp_path):
    case = pair_case([], ident="manifold/a~b/dpm3@20: rp_manifold>=0.6", claim="manifold", part="manifold",
                     figure="Fig. 11", metric="rp_manifold", value=0.8, outcome="passed", passed=True, worst=[],
                     extra={"per_point": [0.9, 0.7, 0.8]})
    (tmp_path / "cache").mkdir()  # the run's store: this figure reads none of it
    page = build_report(write_results(tmp_path, [case]), tmp_path / "cache", tmp_path / "out").read_text()
    assert "manifold.png" in page and "no manifold case ran" not in page
    img = np.asarray(Image.open(tmp_path / "out" / "manifold.png").convert("L"))
    assert img.std() > 5  # not blank


def test_the_loss_figure_draws_both_recorded_curves_of_each_case(tmp_path):
    """Fig. 13 from the curves the loss cases record (every 10th step), the small set's model against the large's."""
    small, large = list(np.linspace(1.0, 0.2, 300)), list(np.linspace(1.0, 0.5, 300))
    case = pair_case([], ident="C3/s/dpm3@20: loss<loss(l/dpm3@20)", claim="C3", part="C3", figure="Fig. 13",
                     metric="loss", value=0.2, outcome="passed", passed=True, worst=[], models=["s", "l"],
                     runs=[{"model": "s", "sampler": "dpm3", "nfe": 20}],
                     versus_runs=[{"model": "l", "sampler": "dpm3", "nfe": 20}], params={"last_steps": 200},
                     versus={"value": 0.5, "n": 200, "extra": {"loss": large}}, extra={"loss": small},
                     bar={"op": "<", "value": None, "source": "Fig. 13"})
    case["decision"] |= {"control": None, "test": {"name": "unpaired bootstrap and permutation test",
                                                   "difference": [-0.31, -0.29], "p": 0.0005, "sizes": [200, 200], "direction": "<", "holds": True}}
    (tmp_path / "cache").mkdir()  # the run's store: this figure reads none of it
    page = build_report(write_results(tmp_path, [case]), tmp_path / "cache", tmp_path / "out").read_text()
    assert "loss.png" in page and "no training-loss case ran" not in page
    # off the forest plots' 0-1 axis: said so, not "no case of this part was measured"; the scorecard keeps a
    # direction case's range apart from the levels
    assert "its 1 measured case(s) are not on a 0-1 scale (training loss, layout MAE)" in page
    assert "loss (compared) 0.2" in page
    img = np.asarray(Image.open(tmp_path / "out" / "loss.png").convert("RGB")).astype(int)
    blue, orange = np.array([31, 119, 180]), np.array([255, 127, 14])  # matplotlib's C0 and C1: both curves drawn
    for colour in (blue, orange):
        assert (np.abs(img - colour).sum(-1) < 40).sum() > 100
    del case["versus"]["extra"]["loss"]  # a record without the other curve: said, not half-drawn
    page = build_report(write_results(tmp_path, [case]), tmp_path / "cache", tmp_path / "out2").read_text()
    assert "not drawn: 1 loss case(s) ran, none with both recorded curves" in page and "loss.png" not in page


def drawn_figures(monkeypatch) -> list:
    """Counts the report's figure drawings (a reused set draws none)."""
    from reports.build import Report

    calls, draw = [], Report.draw_figures
    monkeypatch.setattr(Report, "draw_figures", lambda self: (calls.append(1), draw(self))[1])
    return calls


def test_a_rerun_with_the_same_records_copies_the_kept_figures_instead_of_drawing(tmp_path, monkeypatch):
    results, cache = make_run(tmp_path), tmp_path / "cache"
    doc = json.loads(results.read_text())
    doc["meta"] |= {"run": "main-run", "kind": "main"}
    results.write_text(json.dumps(doc))
    calls = drawn_figures(monkeypatch)
    first = build_report(results, cache, tmp_path / "out1").read_text()
    doc["cases"][0]["seconds"] = 7.5  # a case's run time is not drawn
    doc["meta"] |= {"run": "another-run", "date": "2026-01-01", "kind": "subset"}  # the main job's records, by -k
    results.write_text(json.dumps(doc))
    second = build_report(results, cache, tmp_path / "out2").read_text()
    assert len(calls) == 1 and "Drawn for an earlier run" in second and "Drawn for an earlier run" not in first
    for name in re.findall(r"src='([^']+)'", first):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes(), name
    assert first.split("<h2>Figures</h2>")[1] == second.split("<h2>Figures</h2>")[1].split("</p>", 1)[1]


def test_figures_are_drawn_again_when_a_record_or_a_file_they_read_changes(tmp_path, monkeypatch):
    results, cache = make_run(tmp_path), tmp_path / "cache"
    calls = drawn_figures(monkeypatch)
    build_report(results, cache, tmp_path / "out")
    doc = json.loads(results.read_text())
    doc["cases"][0] |= {"value": 0.3, "decision": decision_of(0.3)}
    results.write_text(json.dumps(doc))
    build_report(results, cache, tmp_path / "out")
    assert len(calls) == 2  # another value
    build_report(results, cache, tmp_path / "out")
    assert len(calls) == 2  # the same again: reused
    for entry in (cache / "samples").glob("*.npz"):
        os.utime(entry, (1e9, 1e9))  # what a run's read of the entry sets (models.store: the mark prune goes by)
    build_report(results, cache, tmp_path / "out")
    assert len(calls) == 2  # a read entry is the same entry
    store = SampleStore(cache)
    entry = next((cache / "samples").glob("*.npz"))
    key = {"model": "a", "sampler": "dpm3", "nfe": 20}
    assert entry.name == f"{key_hash(key)}.npz"
    entry.unlink()
    store.put(key, np.zeros((64, 8, 8, 3), np.uint8), range(64), 20)  # the same key, other images
    page = build_report(results, cache, tmp_path / "out").read_text()
    assert len(calls) == 3 and "Drawn for an earlier run" not in page
    grid = np.asarray(Image.open(tmp_path / "out" / "grids.png").convert("L"))
    build_report(results, cache, tmp_path / "out")
    assert len(calls) == 3  # the set drawn from the new entry replaced the old one
    assert np.array_equal(np.asarray(Image.open(tmp_path / "out" / "grids.png").convert("L")), grid)
    assert len(list((cache / "figures").iterdir())) == 2  # one set per record set, no temporary folder left


def test_a_figure_not_drawn_for_a_missing_entry_is_drawn_once_the_entry_is_back(tmp_path, monkeypatch):
    results, cache = make_run(tmp_path, with_samples=False), tmp_path / "cache"
    assert "not drawn: sample store entry" in build_report(results, cache, tmp_path / "out").read_text()
    assert not (cache / "figures").exists()  # a set with a figure not drawn is not kept
    assert make_run(tmp_path) == results  # the same records, now with their store entries
    page = build_report(results, cache, tmp_path / "out").read_text()
    assert "not drawn" not in page.split("<h2>Figures</h2>")[1].split("Worst pairs")[0]


def test_only_the_most_recently_used_figure_sets_are_kept(tmp_path, monkeypatch):
    import reports.build

    monkeypatch.setattr(reports.build, "FIGURE_SETS_KEPT", 2)
    results, cache = make_run(tmp_path), tmp_path / "cache"
    doc = json.loads(results.read_text())
    stale = cache / "figures" / ".figures.killed"
    stale.mkdir(parents=True)
    os.utime(stale, (1, 1))  # a temporary folder a killed run left, long ago
    for k, value in enumerate((0.1, 0.2, 0.3)):
        doc["cases"][0] |= {"value": value, "decision": decision_of(value)}
        results.write_text(json.dumps(doc))
        build_report(results, cache, tmp_path / f"out{k}")
    kept = sorted(p.name for p in (cache / "figures").iterdir())
    assert len(kept) == 2 and not any(name.startswith(".") for name in kept)


def test_a_damaged_kept_set_is_drawn_again_and_replaced(tmp_path, monkeypatch):
    results, cache = make_run(tmp_path), tmp_path / "cache"
    calls = drawn_figures(monkeypatch)
    build_report(results, cache, tmp_path / "out")
    (kept,) = (cache / "figures").iterdir()
    (kept / "figures.json").write_text("{not json")
    build_report(results, cache, tmp_path / "out")
    (kept,) = (cache / "figures").iterdir()
    (kept / "grids.png").unlink()
    build_report(results, cache, tmp_path / "out")
    assert len(calls) == 3
    build_report(results, cache, tmp_path / "out")
    assert len(calls) == 3 and (kept / "grids.png").is_file()


def test_a_rebuild_against_a_missing_cache_folder_or_of_no_cases_is_refused_and_makes_nothing(tmp_path, capsys,
                                                                                              monkeypatch):
    """`python -m reports.build` run from another folder looked for ./.cache/samenoise and replaced the run's page with
    one whose figures all said "missing"; a results file of no case built a page of nothing. Both are refused, and
    by default the store is the one the results name (meta.cache_dir)."""
    from reports.build import _code_digest, main

    results = make_run(tmp_path)
    _code_digest.cache_clear()  # as in a fresh process: the code is digested (its digests are not kept there either)
    with pytest.raises(ReportError, match=r"sample store folder .*elsewhere/cache does not exist: give the run's "
                                          r"--cache-dir"):
        build_report(results, tmp_path / "elsewhere" / "cache", tmp_path / "out")
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "out").exists()
    doc = json.loads(results.read_text())
    doc["meta"]["cache_dir"] = str(tmp_path / "cache")
    results.write_text(json.dumps(doc))
    monkeypatch.chdir(tmp_path / "cache")  # anywhere: the default store is the results' own
    main([str(results), "--out", str(tmp_path / "out")])
    assert "forest-C2.png" in (tmp_path / "out" / "index.html").read_text()
    assert "not drawn" not in (tmp_path / "out" / "index.html").read_text()
    doc["cases"] = []
    results.write_text(json.dumps(doc))
    with pytest.raises(ReportError, match=r"results.json: holds no claim case; nothing to report"):
        build_report(results, tmp_path / "cache", tmp_path / "out2")
    (tmp_path / "afile").write_text("")
    with pytest.raises(SystemExit) as err:  # a file as the output folder: a traceback before
        main([str(make_run(tmp_path)), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "afile")])
    assert err.value.code == 2 and f"cannot write the report to {tmp_path / 'afile'}" in capsys.readouterr().err


@pytest.mark.parametrize("change, says", [
    # each of these loaded, and the first crashed the report with a KeyError
    (lambda c: c["extra"].update(reference={"label": "held-out"}), "extra.reference is .*expected a 'label' and a finite"),
    (lambda c: c["extra"].update(reference={"label": "held-out", "value": float("nan")}), "extra.reference"),
    (lambda c: c.update(worst=[[1, float("nan")]]), r"worst\[0\] is \[1, nan\], expected \[noise id, finite value\]"),
    (lambda c: c.update(worst=[[1.5, 0.2]]), r"worst\[0\] is \[1.5, 0.2\]"),
    (lambda c: c["decision"].update(interval=[0.65, 0.75, "Wilson"]), r"the decision: interval \[0.65, 0.75\] does "
                                                                      r"not hold its value 0.25"),
    (lambda c: c["decision"].update(interval=[0.35, 0.15, "Wilson"]), r"interval \[0.35, 0.15\] is reversed"),
    (lambda c: c["decision"]["control"].update(interval=[0.2, 0.3, "Wilson"]), r"the control: interval .* does not "
                                                                               r"hold its value 0.0"),
])
def test_a_record_whose_intervals_worst_pairs_or_reference_cannot_be_drawn_is_refused(tmp_path, change, says):
    record = pair_case(["x", "y"])
    change(record)
    with pytest.raises(ReportError, match=re.escape("case 0 (C2/a~b/dpm3@20: rp>=0.6)") + ".*" + says):
        load_results(write_results(tmp_path, [record]))


def test_values_and_bounds_that_round_onto_the_bar_get_the_digits_that_tell_them_apart():
    from reports.build import _format, _interval, _shown, _value

    assert _shown(0.59996, 0.6) == "0.59996" and _shown(0.6, 0.6) == "0.6" and _shown(0.71, 0.6) == "0.71"
    passing, straddling = (pair_case(["x", "y"], value=0.64) for _ in range(2))
    passing["decision"]["interval"][:2] = [0.6004, 0.68]
    straddling["decision"]["interval"][:2] = [0.5996, 0.68]
    assert _interval(passing) == "[0.6004, 0.680] Wilson" and _interval(straddling) == "[0.5996, 0.680] Wilson"
    assert _value(pair_case(["x", "y"], value=0.59996)) == "0.59996"
    # hashes are cut to 16 characters, an unrecorded case's reason is not
    assert _format(["ab" * 32, "id C2/x~y/dpm3@20: no decision"]) == "abababababababab, id C2/x~y/dpm3@20: no decision"


@pytest.mark.parametrize("name, line", [("unet16-edm-m4", "unet16-edm"), ("uvit-edm-l2048", "uvit-edm"),
                                        ("unet32-edm-n256", "unet32-edm"), ("unet16-edm-m4-seed1", "unet16-edm-seed1"),
                                        ("unet32-edm-ft-m64", "unet32-edm-ft"), ("my-model", "my-model"),
                                        ("unet16-m4x", "unet16-m4x")])
def test_the_size_axis_joins_a_model_to_its_family_without_its_size_tag(name, line):
    """Fig. 2 / 5's lines: a second seed is a line of its own, and a name without a size tag stays whole."""
    from cases.names import family

    assert family(name) == line


def test_the_runs_index_is_listed_and_written_under_a_lock(tmp_path, monkeypatch):
    """Two runs ending at once each listed the run folders, and the one that wrote last could leave the other out:
    the listing and the write happen under one lock."""
    import reports.build as build

    (tmp_path / "runs" / "20260101-000000-main").mkdir(parents=True)
    (tmp_path / "runs" / "20260101-000000-main" / "results.json").write_text("{}")
    held = []
    real = build._write_runs_index
    monkeypatch.setattr(build, "_write_runs_index",
                        lambda root: held.append((root / "runs" / ".index.lock").exists()) or real(root))
    page = build.write_runs_index(tmp_path).read_text()
    assert held == [True] and "20260101-000000-main" in page and not (tmp_path / "runs" / ".index.lock").exists()


def test_a_failed_case_of_no_pairs_a_sizeless_regime_case_and_an_errored_case_are_named_under_their_figures(
        tmp_path):
    """A failed manifold (or hyperplane) case records no worst pairs and vanished from the worst-pairs figure; a
    Fig. 2 case of no training-set size (the seed pairs) was left out of the regimes figure; a grid drawn without a
    case that ended in an error did not say so."""
    make_run(tmp_path)
    drawn = json.loads((tmp_path / "results.json").read_text())["cases"][0]
    manifold = pair_case([], ident="manifold/a~b/dpm3@20: rp_manifold>=0.6", claim="manifold", part="manifold",
                         figure="Fig. 11", metric="rp_manifold", value=0.5, worst=[],
                         extra={"per_point": [0.5, 0.4, 0.6]})
    sized = pair_case(drawn["extra"]["samples"], ident="C3/a~b/dpm3@20: rp>=0.6 [64]", claim="C3", part="C3",
                      figure="Fig. 2", value=0.9, outcome="passed", passed=True, params={"size": 64})
    seed = pair_case(drawn["extra"]["samples"], ident="C2/seed/a~b/dpm3@20: rp>=0.6", figure="Fig. 2", value=0.9,
                     outcome="passed", passed=True)
    errored = pair_case([], ident="C2/a~c/dpm3@20: rp>=0.6", value=None, outcome="error", passed=False, worst=[],
                        extra={}, reason="RuntimeError: out of memory")
    page = build_report(write_results(tmp_path, [drawn, manifold, sized, seed, errored]), tmp_path / "cache",
                        tmp_path / "out").read_text()
    assert "record no per-noise pairs of images (maps, grids and paths, losses, colour layouts): manifold/a~b" in page
    assert "regimes.png" in page and "name no training-set size (see the case tables): C2/seed/a~b/dpm3@20" in page
    assert "partial: drawn without the cases that ended in an error: C2/a~c/dpm3@20: rp&gt;=0.6" in page

"""What a run leaves: a record for every collected claim case (errors and skips too), its own folder with results
and report, a pointer to the latest, the paths as its last lines, and the results kept when the folder fails."""
import json
import tempfile
from pathlib import Path

import pytest

from reports.schema import load_results
from tests.helpers import ROOT, pytest_run


def run(tmp_path, *args, env=None):
    return pytest_run("tests/claim_outcomes.py", "--cache-dir", str(tmp_path / "cache"), "--report-dir",
                      str(tmp_path / "out"), *args, timeout=300,
                      env={"HF_HUB_OFFLINE": "0"} | (env or {}))  # the suite must force it back to 1


def test_every_collected_case_is_recorded_with_its_outcome_and_the_paths_come_last(tmp_path):
    out = run(tmp_path)
    assert out.returncode == 1, out.stdout[-3000:]
    runs = sorted((tmp_path / "out" / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-subset")
    doc = load_results(runs[0] / "results.json")
    assert doc["meta"]["micro_batch"] == 16 and "tf32" not in doc["meta"]  # the CPU's rows per call; no GPU switches
    outcomes = {c["id"].split("/")[1].split("-")[0]: (c["outcome"], c.get("reason", "")) for c in doc["cases"]}
    assert outcomes == {"holds": ("passed", ""), "misses": ("failed", ""),
                        "crashes": ("error", "call: RuntimeError: the sampler diverged at sigma 80"),
                        "skips": ("skipped", "nothing to compare"),
                        "breaks": ("error", "setup: RuntimeError: the store folder vanished during setup"),
                        "forgets": ("error", "the case ended without checking a measurement"),
                        # measured and decided, then its fixture's teardown failed: an error that keeps its value
                        "tears": ("error", "teardown: OSError: the lock file could not be released (after the "
                                           "measurement: passed)")}
    tears = next(c for c in doc["cases"] if "/tears-" in c["id"])
    assert tears["value"] == 1.0 and tears["n"] == 16 and tears["decision"]["holds"] and not tears["passed"]
    page = (runs[0] / "index.html").read_text()
    assert "7 claim cases: 1 failed, 4 error, 1 passed, 1 skipped" in page
    assert (tmp_path / "out" / "latest").resolve() == runs[0].resolve()
    assert runs[0].name in (tmp_path / "out" / "index.html").read_text()
    last = out.stdout.strip().splitlines()[-3:]
    assert last[0] == "samenoise: 7 claim cases: 1 failed, 4 error, 1 passed, 1 skipped"
    assert last[1] == f"samenoise: results -> {runs[0] / 'results.json'}"
    assert last[2].startswith(f"samenoise: report -> {runs[0] / 'index.html'}")
    assert "FAILED tests/claim_outcomes.py::test_the_hub_is_offline" not in out.stdout  # forced offline
    # worst-id values carry their unit
    assert "worst noise ids (SSCD similarity): 3 (0.20), 5 (0.40)" in out.stdout


def test_a_run_that_records_nothing_writes_nothing_and_leaves_earlier_runs_alone(tmp_path):
    run(tmp_path)
    before = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    out = run(tmp_path, "-k", "no_such_case")
    assert out.returncode == 5
    assert "samenoise: no claim case ran; no results or report written" in out.stdout
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == before
    # under pytest-xdist too, where the process that writes the results collects nothing itself
    out = run(tmp_path, "-k", "no_such_case", "-n", "2")
    assert out.returncode == 5 and "samenoise: no claim case ran; no results or report written" in out.stdout
    assert sorted(p.name for p in (tmp_path / "out" / "runs").iterdir()) == before


def test_results_survive_an_output_folder_that_fails_at_the_end(tmp_path):
    """The results go to a file of the run's own in the temporary folder, and a --results file is written all the
    same."""
    named = tmp_path / "named.json"
    out = run(tmp_path, "--results", str(named), env={"SAMENOISE_TEST_SABOTAGE": "1"})
    line = next(l for l in out.stdout.splitlines() if "could not write the run's output" in l)
    fallback = Path(line.split("results are saved to ")[1].split(" instead")[0])
    try:
        assert fallback.parent == Path(tempfile.gettempdir())
        assert {c["outcome"] for c in json.loads(fallback.read_text())["cases"]} == {"passed", "failed", "error",
                                                                                      "skipped"}
        assert named.read_bytes() == fallback.read_bytes()
    finally:
        fallback.unlink(missing_ok=True)


def test_two_runs_finishing_at_once_under_one_name_keep_both_folders(tmp_path):
    """A run's folder is named by its start to the second; making the folder (mkdir) decides which run gets the name,
    and a rename lands only on a folder the run made itself."""
    from fixtures.results import _rename_onto_reserved, _reserve

    runs = tmp_path / "runs"
    (runs / "20260101-000000-main-2").mkdir(parents=True)  # empty: another run's reservation, not taken over
    got = []
    for k in range(3):
        tmp = Path(tempfile.mkdtemp(dir=tmp_path))
        (tmp / "results.json").write_text(str(k))
        got.append(_rename_onto_reserved(tmp, runs, "20260101-000000-main"))
    assert [p.name for p in got] == ["20260101-000000-main", "20260101-000000-main-3", "20260101-000000-main-4"]
    assert [(p / "results.json").read_text() for p in got] == ["0", "1", "2"]
    # a reserved folder that something filled meanwhile is left as it is; the run reserves another
    mine = _reserve(runs, "20260101-000001-main")
    (mine / "intruder").write_text("x")
    tmp = Path(tempfile.mkdtemp(dir=tmp_path))
    (tmp / "results.json").write_text("3")
    final = _rename_onto_reserved(tmp, runs, "20260101-000001-main", mine)
    assert final.name == "20260101-000001-main-2" and (mine / "intruder").is_file()


def test_a_run_whose_reserved_folder_is_taken_at_the_end_names_its_final_folder_in_results_and_page(tmp_path):
    """The race the test above covers, at the write: the results were rewritten with the folder's final name, but
    the page built before the rename kept the first name."""
    from fixtures.results import ResultsWriter, _reserve
    from tests.test_report import make_run

    results = make_run(tmp_path)
    doc = json.loads(results.read_text())
    doc["meta"]["run"] = "20260101-000002-subset"
    root = tmp_path / "out"
    reserved = _reserve(root / "runs", "20260101-000002-subset")
    (reserved / "intruder").write_text("x")  # filled after it was reserved: the run takes another name

    class Config:
        def getoption(self, name):
            return {"--cache-dir": str(tmp_path / "cache")}[name]

    writer = ResultsWriter.__new__(ResultsWriter)
    writer.config, writer.name, writer.stopped, writer.lines = Config(), "20260101-000002-subset", None, []
    writer.write_run(root, json.dumps(doc).encode(), reserved)
    final = root / "runs" / "20260101-000002-subset-2"
    assert load_results(final / "results.json")["meta"]["run"] == final.name
    page = (final / "index.html").read_text()
    assert "20260101-000002-subset-2" in page


def test_no_temporary_files_or_locks_are_left(tmp_path):
    run(tmp_path)
    left = [p for p in tmp_path.rglob("*") if p.name.endswith((".tmp", ".lock"))]
    assert not left


def test_a_run_stopped_early_says_so_and_leaves_latest_on_the_last_whole_run(tmp_path):
    """Stopped by -x (or Ctrl-C), a run wrote a report that looked whole, its unreached claims shown as "none
    collected", and moved `latest` to it."""
    run(tmp_path)
    whole = (tmp_path / "out" / "latest").resolve()
    out = run(tmp_path, "-x")
    assert out.returncode == 1, out.stdout[-3000:]
    stopped, = [r for r in (tmp_path / "out" / "runs").iterdir() if r.resolve() != whole]
    doc = load_results(stopped / "results.json")
    assert "stopping after 1 failures" in doc["meta"]["stopped_early"]
    assert len(doc["cases"]) < 6
    assert (tmp_path / "out" / "latest").resolve() == whole
    assert "This run stopped early (stopping after 1 failures)" in (stopped / "index.html").read_text()
    assert "(the run stopped early: stopping after 1 failures;" in out.stdout


def test_x_under_xdist_says_what_stopped_the_run(tmp_path):
    """pytest-xdist ends a run at -x by raising its Interrupted, which pytest reports as an interruption: the run said
    "interrupted", as for Ctrl-C."""
    out = run(tmp_path, "-x", "-n", "2")
    assert out.returncode == 2, out.stdout[-3000:]
    folder, = (tmp_path / "out" / "runs").iterdir()
    doc = load_results(folder / "results.json")
    assert doc["meta"]["stopped_early"].startswith("stopping after"), doc["meta"]
    assert "(the run stopped early: stopping after" in out.stdout
    assert len(doc["cases"]) < 7


def test_a_run_folder_is_readable_by_others_as_its_files_are(tmp_path):
    """mkdtemp made it 0700 while its files were 0644: a web server or another user could not open the report."""
    import os
    import stat

    from models.atomic import UMASK

    run(tmp_path)
    folder, = (tmp_path / "out" / "runs").iterdir()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o777 & ~UMASK


def test_a_latest_that_is_a_real_folder_is_left_alone_and_said(tmp_path):
    import shutil

    run(tmp_path)
    latest = tmp_path / "out" / "latest"
    target = latest.resolve()
    latest.unlink()
    shutil.copytree(target, latest)  # e.g. `cp -rL`
    out = run(tmp_path)
    assert f"samenoise: {latest} is not a link (a copy?); left as it is" in out.stdout
    assert latest.is_dir() and not latest.is_symlink()
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 2
    assert not list((tmp_path / "out").glob(".latest.*"))


def test_a_run_that_finds_its_name_taken_carries_the_name_it_gets(tmp_path):
    """Two runs started in the same second: the second's folder was `<name>-2` but its results and report said
    `<name>`. Folders of this kind's names for the next minutes are made first, so the run ends up with `-2`."""
    import datetime

    runs = tmp_path / "out" / "runs"
    now = datetime.datetime.now()
    for s in range(-5, 300):
        (runs / ((now + datetime.timedelta(seconds=s)).strftime("%Y%m%d-%H%M%S") + "-subset")).mkdir(parents=True,
                                                                                                     exist_ok=True)
    out = run(tmp_path)
    assert out.returncode == 1, out.stdout[-3000:]
    mine, = [p for p in runs.iterdir() if (p / "results.json").is_file()]
    assert mine.name.endswith("-subset-2")
    assert load_results(mine / "results.json")["meta"]["run"] == mine.name
    assert f"samenoise: results -> {mine / 'results.json'}" in out.stdout
    index = (tmp_path / "out" / "index.html").read_text()
    assert mine.name in index and index.count("<li>") == 1  # the empty folders are no runs


def test_a_case_cut_short_by_ctrl_c_is_not_recorded_as_an_error(tmp_path):
    """Ctrl-C during a case left it with its setup report only, and it was recorded as an error ("the case ended
    without checking a measurement"), which the scorecard counted as a failing part; it was not reached."""
    out = run(tmp_path, env={"SAMENOISE_TEST_INTERRUPT": "1"})
    assert out.returncode == 2, out.stdout[-3000:]
    folder, = (tmp_path / "out" / "runs").iterdir()
    doc = load_results(folder / "results.json")
    assert doc["meta"]["stopped_early"] == "interrupted"
    assert {c["id"].split("/")[1].split("-")[0]: c["outcome"] for c in doc["cases"]} == {"holds": "passed",
                                                                                        "misses": "failed"}


def test_a_whole_run_whose_last_case_trips_x_is_not_stopped_early(tmp_path):
    """pytest flags -x's stop on the failure itself, also when the failing case was the last to run."""
    out = run(tmp_path, "-x", "-k", "misses")
    assert out.returncode == 1, out.stdout[-3000:]
    folder, = (tmp_path / "out" / "runs").iterdir()
    assert "stopped_early" not in load_results(folder / "results.json")["meta"]
    assert (tmp_path / "out" / "latest").resolve() == folder.resolve()


def test_saved_benchmarks_go_beside_the_sample_store_not_into_the_working_directory(tmp_path):
    """pytest-benchmark makes its storage folder (default ./.benchmarks) at every run, wherever pytest runs from."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    common = (str(ROOT / "tests" / "claim_outcomes.py"), "--collect-only", "-q", f"--cache-dir={tmp_path / 'cache'}",
              f"--report-dir={tmp_path / 'out'}")
    out = pytest_run(*common, cwd=work)
    assert out.returncode == 0, out.stdout[-2000:]
    assert list(work.iterdir()) == [] and (tmp_path / "cache" / "benchmarks").is_dir()
    for given in (f"file://{tmp_path / 'mine'}", "file://./.benchmarks"):  # the user's own, even the default: kept
        out = pytest_run(*common, f"--benchmark-storage={given}", cwd=work)
        assert out.returncode == 0, out.stdout[-2000:]
    assert (tmp_path / "mine").is_dir() and (work / ".benchmarks").is_dir()
    in_file = tmp_path / "infile"  # the default value given in an @argsfile is kept too
    in_file.mkdir()
    (in_file / "args.txt").write_text("--benchmark-storage=file://./.benchmarks\n")
    out = pytest_run(*common, "@args.txt", cwd=in_file)
    assert out.returncode == 0, out.stdout[-2000:]
    assert (in_file / ".benchmarks").is_dir()


class _Report:
    """What the writer reads of a pytest TestReport (or of pytest-xdist's report for a crashed worker)."""

    def __init__(self, nodeid, when, outcome, props=(), reason="boom"):
        self.nodeid, self.when, self.outcome, self.user_properties = nodeid, when, outcome, list(props)
        self.skipped, self.failed, self.passed = outcome == "skipped", outcome == "failed", outcome == "passed"
        self.duration, self.longrepr = 0.1, reason


def _writer():
    from fixtures.results import ResultsWriter

    writer = ResultsWriter.__new__(ResultsWriter)
    writer.items, writer.lines, writer.cut_short = {}, [], False
    return writer


def test_a_case_whose_worker_crashed_before_its_setup_was_reported_keeps_an_error_record():
    """pytest-xdist reports a crashed worker's item with when '???' and no user properties: with no description of
    the case, the item was dropped from the results without a word. The catalog case its id names is recorded."""
    from cases.catalog import ALL
    from fixtures.results import _case_of_nodeid

    case = ALL[0]
    nodeid = f"bench/test_c2_unconditional.py::test_pair[{case.id}]"
    assert _case_of_nodeid(nodeid) is case and _case_of_nodeid("bench/test_x.py::test_y[no such case]") is None
    writer = _writer()
    writer.pytest_runtest_logreport(_Report(nodeid, "???", "failed", reason="worker 'gw1' crashed while running"))
    writer.pytest_runtest_logreport(_Report("bench/test_throughput.py::test_speed[unet]", "???", "failed"))
    record, = writer.collect()  # the throughput item is no claim case: no record, as before
    assert record["id"] == case.id and record["outcome"] == "error" and "crashed while running" in record["reason"]


def test_a_regression_item_whose_worker_crashed_before_its_setup_was_reported_keeps_an_error_record():
    """A checkpoint regression item's id names its golden file and metric, not a catalog case: crashed before its
    setup was reported, it left no record. It is recorded with the run's bar for its metric."""
    from cases.regression import item_id

    writer = _writer()

    class Config:
        @staticmethod
        def getoption(name):
            return {"--golden-rp": 0.7, "--golden-mae": 0.5}[name]

    writer.config = Config
    ids = {m: f"bench/test_regression.py::test_regression[{item_id('ref/a.npz', m)}]"
           for m in ("golden_rp", "golden_mae")}
    for nodeid in ids.values():
        writer.pytest_runtest_logreport(_Report(nodeid, "???", "failed", reason="worker 'gw0' crashed while running"))
    writer.pytest_runtest_logreport(_Report("bench/test_regression.py::test_regression[other/a.npz/rp]", "???",
                                            "failed"))
    records = {r["metric"]: r for r in writer.collect()}
    assert set(records) == {"golden_rp", "golden_mae"}  # the item that names no regression case: no record
    for metric, bar in (("golden_rp", 0.7), ("golden_mae", 0.5)):
        r = records[metric]
        assert r["id"] == item_id("ref/a.npz", metric) and r["outcome"] == "error" and r["bar"]["value"] == bar
        assert r["params"] == {"golden": "ref/a.npz"} and "crashed while running" in r["reason"]
        assert r["nodeid"] == ids[metric]


def test_a_rerun_attempt_leaves_no_record_of_its_own():
    """A plugin that reruns failed items reports each failed attempt with outcome 'rerun' and keeps the item's user
    properties: one case gave three records (failed, failed, passed). Only the last attempt counts, and each attempt
    starts without the earlier ones' measurements."""
    from fixtures.results import DESCRIBED, PROPERTY, forget_earlier_attempts

    writer = _writer()
    described, failed, passed = {"id": "c"}, {"id": "c", "outcome": "failed"}, {"id": "c", "outcome": "passed"}
    writer.pytest_runtest_logreport(_Report("t[c]", "call", "rerun", [(DESCRIBED, described), (PROPERTY, failed)]))

    class Item:
        user_properties = [(DESCRIBED, described), (PROPERTY, failed)]

    forget_earlier_attempts(Item)  # conftest.py's pytest_runtest_setup, in every process
    assert Item.user_properties == [(DESCRIBED, described)]
    writer.pytest_runtest_logreport(_Report("t[c]", "call", "passed", [(DESCRIBED, described), (PROPERTY, passed)]))
    assert [r["outcome"] for r in writer.collect()] == ["passed"]


def test_a_git_that_hangs_leaves_the_revision_unknown_and_a_failing_metadata_keeps_the_results(monkeypatch):
    """`git rev-parse` past its timeout raised TimeoutExpired, which is no OSError: the run's results were lost."""
    import subprocess

    from fixtures import results
    from reports.schema import check_results

    def hang(*args, **kwargs):
        raise subprocess.TimeoutExpired("git", 10)

    monkeypatch.setattr(results.subprocess, "run", hang)
    assert results.git_revision(ROOT) is None
    writer = _writer()
    # the commit is read when the run begins (a commit made while a run went on was recorded as the one it ran), so
    # the metadata at its end asks git nothing: it hangs here
    writer.revision = "0123abc"

    class Config:
        rootpath = ROOT

        def getoption(self, name):
            return {"--device": "cpu", "--noises": 128, "--descriptor": "sscd", "--descriptor-size": 224,
                    "--cache-dir": "c", "--micro-batch": None, "--candidate": None, "--compile": False}[name]

    writer.config, writer.name, writer.kind, writer.records, writer.stopped, writer.started = \
        Config(), "r", "main", [], None, 0.0
    meta = writer.metadata()
    assert meta["git_revision"] == "0123abc" and meta["runner"] == "traced"
    bare = writer._bare_metadata(RuntimeError("no GPU driver"))
    assert check_results({"meta": bare, "cases": []}, "x")["meta"]["metadata_error"] == "RuntimeError: no GPU driver"
    assert "could not be gathered (RuntimeError: no GPU driver)" in writer.lines[-1]


def test_a_regression_case_in_error_before_its_candidate_loaded_is_a_readable_record(tmp_path):
    """A checkpoint regression's runs are known once its candidate is loaded; one in error before that (a candidate
    that is no entry or folder) has no runs, and its record made `load_results` refuse the whole file."""
    from cases.regression import regression_case
    from fixtures.results import describe_case
    from reports.schema import check_record

    record = describe_case(regression_case("ref.npz", "golden_rp", 0.6)) | {
        "outcome": "error", "reason": "setup: ValueError: no zoo entry or checkpoint folder 'nope'"}
    assert record["runs"] == []
    check_record(record, "case")
    doc = {"meta": {"format": "samenoise-results/4", "noises": 128,
                    "constants": {"bank_seed": 0, "inverse_truth_seed": 2, "permutation_seed": 3}}, "cases": [record]}
    (tmp_path / "results.json").write_text(json.dumps(doc))
    assert load_results(tmp_path / "results.json")["cases"][0]["outcome"] == "error"


def test_an_invalid_record_is_kept_as_an_error_bare_if_need_be_or_named_in_the_meta(tmp_path):
    """The writer's last line of defence: a record the schema refuses is written as an error (keeping its value and
    decision where those are sound), without them where they are what is wrong (a NaN interval), and when its
    description itself is wrong (a part the report has no place for), named in meta.unrecorded and on the terminal."""
    from cases.catalog import ALL
    from fixtures.results import ResultsWriter, describe_case

    good = describe_case(ALL[0]) | {"outcome": "failed", "value": 0.5, "n": 4,
                                    "decision": {"interval": [0.3, 0.7, "Wilson"], "reason": "r", "control": None}}
    said_passed = dict(good, id="said passed", outcome="passed", passed=True)  # its interval straddles the bar
    nan_interval = dict(good, id="nan", decision=dict(good["decision"], interval=[float("nan"), 0.7, "Wilson"]))
    bad_part = dict(good, id="part", part="C9")

    class Config:
        option = type("O", (), {"collectonly": False})

        def getoption(self, name):
            return {"--report-dir": "", "--results": str(tmp_path / "r.json"), "--noises": 128}.get(name)

    writer = _writer()
    writer.config, writer.name, writer.kind, writer.started, writer.ran = Config(), "r", "subset", 0.0, 4
    writer.collected_claims, writer.written, writer.interrupted_by = True, [], None
    writer.collect = lambda: [good, said_passed, nan_interval, bad_part]
    writer.metadata = lambda: writer._bare_metadata(RuntimeError("stub"))

    class Session:
        shouldstop = shouldfail = False
        items = [1, 2, 3, 4]

    writer.pytest_sessionfinish(Session(), 1)
    doc = load_results(tmp_path / "r.json")
    by_id = {c["id"]: c for c in doc["cases"]}
    assert by_id[good["id"]]["outcome"] == "failed"
    kept = by_id["said passed"]  # its decision is sound: kept beside the error
    assert kept["outcome"] == "error" and kept["value"] == 0.5 and "invalid record" in kept["reason"]
    assert by_id["nan"]["value"] is None and by_id["nan"]["decision"] is None
    assert "part" not in by_id and doc["meta"]["unrecorded"][0]["id"] == "part"
    assert any("1 case records were invalid" in line for line in writer.lines)


def test_ctrl_c_while_the_run_is_written_leaves_no_half_made_folder(tmp_path, monkeypatch):
    """A KeyboardInterrupt inside the report left the temporary run folder for the next run's sweep (and the
    reserved one, empty, for good: the session's end now removes it on any exception, as it did on OSError); the
    temporary folder goes at once, and the interrupt goes on."""
    from fixtures import results as results_module
    import reports.build

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reports.build, "build_report", interrupted)
    writer = results_module.ResultsWriter.__new__(results_module.ResultsWriter)
    writer.name, writer.lines = "20260101-000000-main", []
    writer.config = type("Config", (), {"getoption": staticmethod(lambda name: str(tmp_path / "cache"))})()
    reserved = results_module._reserve(tmp_path / "runs", writer.name)
    with pytest.raises(KeyboardInterrupt):
        writer.write_run(tmp_path, b"{}", reserved)
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [writer.name]  # the reservation, removed by the caller

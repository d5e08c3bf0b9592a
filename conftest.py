"""Options, markers and skip logic for the whole suite, in one place.

Every option is checked before collection: a bad value stops the run with one line naming the value and what
is valid, and nothing the user asked for is ever skipped silently. The only skips are cases whose real
checkpoints (models/real.toml) are absent and were not named with --models or --candidate, and GPU-only cases
on a machine without one; their reason says what to provide.
"""
from __future__ import annotations

import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import pytest

# Model hubs are never reached from the suite, whatever the environment says: loaders fail fast instead.
os.environ["HF_HUB_OFFLINE"] = "1"
# The property tests keep their examples outside the checkout (the suite's tests write nothing into it). Hypothesis
# reads this variable when it first opens its storage, so it is set without importing Hypothesis: that import costs
# about 1 s a process (measured), which every claim run would otherwise pay. A value the user set wins.
if not os.environ.get("HYPOTHESIS_STORAGE_DIRECTORY"):  # an empty value would mean ./.hypothesis to Hypothesis
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = str(Path(tempfile.gettempdir()) / "samenoise-hypothesis")

pytest_plugins = ["fixtures.devices", "fixtures.descriptor", "fixtures.zoo", "fixtures.samples", "fixtures.results",
                  "fixtures.measure"]

from cases import DEFAULT_NOISES, SCORE_BAR  # noqa: E402  (after HF_HUB_OFFLINE is set)

DEFAULT_CACHE = ".cache/samenoise"
DEFAULT_REPORTS = "reports/out"
GOLDEN_DEFAULT_BAR = SCORE_BAR  # the regression check's RP and MAE score bars: the suite's 0.6 below Fig. 3's (Sec. 2.2)
REAL_ZOO = Path(__file__).resolve().parent / "models" / "real.toml"  # its absent entries may skip, unless named
BENCHMARK_STORAGE_DEFAULT = "file://./.benchmarks"  # pytest-benchmark's default --benchmark-storage
DESCRIPTOR_FIXTURES = ("descriptor", "embed", "make_run_descriptor")

MARKERS = {
    "gpu": "needs a CUDA device (skipped without one)",
    "weights": "needs real published checkpoints from a local path (skipped when absent)",
    "slow": "long sweeps or training; deselect with -m 'not slow'",
    "golden_rp": "the checkpoint regression's RP case (bench/test_regression.py)",
    "golden_mae": "the checkpoint regression's MAE score case (bench/test_regression.py)",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("samenoise")
    group.addoption("--device", default="cpu", help="torch device for sampling (cpu, cuda, cuda:1, ...)")
    group.addoption("--workers", type=int, default=None,
                    help="threads that share each model's micro-batches, one core each (default: torch's thread "
                         "count, i.e. the cores or OMP_NUM_THREADS; 1 samples on one core; CPU only; samples do not "
                         "depend on it)")
    group.addoption("--micro-batch", type=int, default=None, metavar="ROWS",
                    help="rows per network call (default 16 on a CPU, 256 on a GPU; a zoo entry's micro_batch caps "
                         "it); a row's low bits depend on it, so samples are stored under it")
    group.addoption("--compile", action="store_true",
                    help="torch.compile the networks (for long GPU runs: compiling takes tens of seconds per model; "
                         "its calls take turns; samples differ from eager in the low bits and are stored under their "
                         "own key)")
    group.addoption("--descriptor", default="sscd-int8",
                    help="similarity descriptor: sscd-int8 (offline default), sscd-mixup, sscd-large")
    group.addoption("--descriptor-path", default=None,
                    help="weights file of the descriptor (a TorchScript SSCD, or the ONNX file of sscd-int8)")
    group.addoption("--descriptor-size", type=int, default=None,
                    help="descriptor input size in pixels (default: 224 for sscd-int8, 320 for TorchScript)")
    group.addoption("--noises", type=int, default=DEFAULT_NOISES,
                    help=f"noises per case from the shared bank (default {DEFAULT_NOISES}; the paper uses 10000)")
    group.addoption("--zoo", action="append", default=[], metavar="FILE",
                    help="a TOML zoo file whose [models.<name>] entries are added to the embedded zoo (repeatable)")
    group.addoption("--models", default="", metavar="NAMES",
                    help="comma-separated model names: run only the cases whose models are all among them")
    group.addoption("--cache-dir", default=DEFAULT_CACHE, help="sample store, embeddings and trained sweep models")
    group.addoption("--results", default=None, metavar="FILE",
                    help="also write the run's results JSON here (it is always written beside the run's report)")
    group.addoption("--golden", action="append", default=[], metavar="FILE",
                    help="golden file(s) to check --candidate against (bench/test_regression.py)")
    group.addoption("--candidate", default=None, metavar="MODEL",
                    help="zoo entry name or suite checkpoint folder checked against the golden file(s)")
    group.addoption("--update-golden", action="store_true",
                    help="record the golden file(s) from --candidate instead of comparing")
    group.addoption("--golden-rp", type=float, default=GOLDEN_DEFAULT_BAR,
                    help="RP score bar of the regression case (default 0.6)")
    group.addoption("--golden-mae", type=float, default=GOLDEN_DEFAULT_BAR,
                    help="MAE score bar of the regression case (default 0.6)")
    group.addoption("--golden-thumbnail", type=int, default=None, metavar="PIXELS",
                    help="with --update-golden: the largest thumbnail side the golden file keeps for its MAE case "
                         "(default 16; images up to this size are kept whole, larger ones downsized to it); a check "
                         "compares at the file's own size")
    group.addoption("--report-dir", default=DEFAULT_REPORTS,
                    help=f"folder of the runs' output (default {DEFAULT_REPORTS}): each run writes runs/<date>-<time>-"
                         f"<kind>/ with results.json and the HTML report; latest points at the newest ('' for none)")


def pytest_configure(config: pytest.Config) -> None:
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")
    if "huggingface_hub" in sys.modules:  # imported before this file set the variable: its constant is read once
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    for dest, default in (("cache_dir", DEFAULT_CACHE), ("report_dir", DEFAULT_REPORTS)):
        # the defaults belong to the checkout, wherever pytest runs from; the same text given is the user's folder
        if getattr(config.option, dest) == default and not _given(config, "--" + dest.replace("_", "-")):
            setattr(config.option, dest, str(Path(__file__).resolve().parent / default))
    # pytest-benchmark makes its storage folder at every run, by default ./.benchmarks wherever pytest runs: saved
    # benchmark runs (--benchmark-save, --benchmark-autosave) go beside the sample store instead, unless given
    if (_option(config, "benchmark_storage") == BENCHMARK_STORAGE_DEFAULT and config.option.cache_dir
            and not _given(config, "--benchmark-storage")):
        config.option.benchmark_storage = f"file://{Path(config.option.cache_dir).resolve() / 'benchmarks'}"
    _check_options(config)
    if not hasattr(config, "workerinput"):  # the controller (or the only process) writes the results and report
        from fixtures.results import ResultsWriter
        from models.atomic import sweep_stale

        for root in (config.getoption("--cache-dir"), config.getoption("--report-dir")):
            if root:
                sweep_stale(root)
        # the files a run writes outside those folders: only their own leftovers, beside them
        for target in (config.getoption("--golden") or []) + [config.getoption("--results") or ""]:
            if target.strip():
                sweep_stale(Path(target).parent, of=Path(target).name)
        config.pluginmanager.register(ResultsWriter(config), "samenoise-results")


def _given(config: pytest.Config, option: str) -> bool:
    """Whether the command line (an @argsfile's lines too), PYTEST_ADDOPTS or the ini file's addopts name `option`
    (given its default value)."""
    args = [*config.invocation_params.args, *shlex.split(os.environ.get("PYTEST_ADDOPTS", "")),
            *config.getini("addopts")]
    return any(a == option or a.startswith(option + "=") for a in _expand_argsfiles(args, config.invocation_params.dir))


def _expand_argsfiles(args, cwd: Path, depth: int = 0) -> list[str]:
    """pytest's `@file` arguments replaced by the file's lines, one argument a line, as its parser reads them."""
    out = []
    for a in args:
        if a.startswith("@") and depth < 8:  # a file naming itself would recurse without end
            try:
                lines = (Path(cwd) / a[1:]).read_text().splitlines()
            except OSError:  # pytest says what is wrong with it
                out.append(a)
                continue
            out += _expand_argsfiles(lines, cwd, depth + 1)
        else:
            out.append(a)
    return out


def _option(config: pytest.Config, name: str):
    """An option another plugin adds (None when that plugin is not loaded, e.g. under -p no:benchmark)."""
    try:
        return config.getoption(name)
    except (ValueError, KeyError):
        return None


def _not_results(path: Path) -> str:
    """Why an existing file at `path` is not a results file that a run may replace ('' when absent or one)."""
    if not path.is_file():
        return ""
    try:
        meta = json.loads(path.read_text()).get("meta")
    except (OSError, ValueError, AttributeError) as e:  # unreadable, not JSON, or JSON but not an object
        return f"{type(e).__name__}: {e}"
    fmt = meta.get("format") if isinstance(meta, dict) else None
    return "" if isinstance(fmt, str) and fmt.startswith("samenoise-results/") else "no samenoise-results meta.format"


MAX_NOISES = 1_000_000
MAX_MICRO_BATCH = 65_536  # far above what a GPU holds for any zoo network; a bound on a typo, not a tuned limit


def _check_options(config: pytest.Config) -> None:
    """Bad options stop the run before collection, with what is wrong and what is valid."""
    from fixtures.results import unwritable

    opt, usage = config.getoption, pytest.UsageError
    if opt("--noises") < 2:  # every control pairs a noise with another noise of the run
        raise usage(f"--noises must be at least 2 (a case's control pairs each noise with another), got "
                    f"{opt('--noises')}")
    if opt("--noises") > MAX_NOISES:  # a case draws its whole bank at once: 12 KB a noise at 32 px
        raise usage(f"--noises must be at most {MAX_NOISES:,} (the paper uses 10,000; a case holds its noises in "
                    f"memory, 12 GB at this count for 32-px models), got {opt('--noises'):,}")
    if opt("--micro-batch") is not None and not 1 <= opt("--micro-batch") <= MAX_MICRO_BATCH:
        raise usage(f"--micro-batch must be between 1 and {MAX_MICRO_BATCH:,} rows, got {opt('--micro-batch')}")
    if opt("--workers") is not None and not 1 <= opt("--workers") <= 256:
        raise usage(f"--workers must be between 1 and 256 threads, got {opt('--workers')}")
    for name in ("--golden-rp", "--golden-mae"):
        if not 0 <= opt(name) <= 1:
            raise usage(f"{name} is a score bar between 0 and 1, got {opt(name)}")
    if not str(opt("--cache-dir")).strip():  # Path("") is the working folder: the store would land wherever pytest runs
        raise usage(f"--cache-dir must name a folder, got {opt('--cache-dir')!r} (the default is {DEFAULT_CACHE}; only "
                    f"--report-dir takes '' for none)")
    if opt("--report-dir") and not str(opt("--report-dir")).strip():
        raise usage(f"--report-dir must name a folder or be '' for none, got {opt('--report-dir')!r}")
    goldens = [Path(g).resolve() for g in opt("--golden") or []]
    if len(set(goldens)) < len(goldens):
        twice = sorted({str(g) for g in goldens if goldens.count(g) > 1})
        raise usage(f"--golden names one file twice ({', '.join(twice)}): its cases would be recorded twice")
    folders = {"--cache-dir": opt("--cache-dir"), "--report-dir": opt("--report-dir")}
    for name, value in folders.items():
        if value and (why := unwritable(Path(value), folder=True)):
            raise usage(f"{name} {value} cannot be written: {why}")
    if opt("--results") and (why := unwritable(Path(opt("--results")), folder=False)):
        raise usage(f"--results {opt('--results')} cannot be written: {why}")
    if opt("--results") and (why := _not_results(Path(opt("--results")))):
        raise usage(f"--results {opt('--results')} would replace a file that is not a results file ({why}); name a "
                    f"new file, or remove this one first")
    outputs = {"--results": opt("--results"), "--benchmark-json": _option(config, "benchmark_json")}
    inputs = {f"--golden {g}": g for g in opt("--golden")}
    for out_name, out in outputs.items():
        for in_name, src in inputs.items():
            if out and src and Path(out).resolve() == Path(src).resolve():
                raise usage(f"{out_name} {out} is the file of {in_name}: the run would write over it; name another "
                            f"file")
    if outputs["--results"] and outputs["--benchmark-json"] and \
            Path(outputs["--results"]).resolve() == Path(outputs["--benchmark-json"]).resolve():
        raise usage(f"--results and --benchmark-json name one file, {outputs['--results']}: name two")
    bench_json = outputs["--benchmark-json"]
    if bench_json:  # pytest-benchmark writes it after the run and does not make its folder (a fresh checkout lacks it)
        if why := unwritable(Path(bench_json), folder=False):
            raise usage(f"--benchmark-json {bench_json} cannot be written: {why}")
    _check_device(opt("--device"))
    if opt("--workers") is not None and not str(opt("--device")).startswith("cpu"):
        raise usage(f"--workers {opt('--workers')} applies to a CPU run (threads sharing the micro-batches); on "
                    f"--device {opt('--device')} the micro-batches run one after another: leave --workers out")
    _check_descriptor(config)
    _check_regression(config, _check_zoo(config))
    if bench_json:  # made once every check has passed: a refused run leaves no folder behind
        Path(bench_json).parent.mkdir(parents=True, exist_ok=True)


def _check_device(name: str) -> None:
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda") or (device.type == "cpu" and device.index not in (None, 0)):
        # torch takes cpu:N for any N and runs it on the one CPU device, so another index names nothing
        raise pytest.UsageError(f"--device {name!r} is not a device the suite samples on; valid: cpu, cuda, cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError(f"--device {name}: torch {torch.__version__} sees no CUDA device (a CPU build, or "
                                    f"no driver); run on a GPU machine with torch's CUDA build, or use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise pytest.UsageError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices "
                                    f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")


def _check_descriptor(config: pytest.Config) -> None:
    from models.descriptor import DESCRIPTORS, weights_format_error

    name, path, size = (config.getoption(o) for o in ("--descriptor", "--descriptor-path", "--descriptor-size"))
    if name not in DESCRIPTORS:
        raise pytest.UsageError(f"--descriptor {name!r} is unknown; valid: {', '.join(DESCRIPTORS)}")
    if size is not None and not 16 <= size <= 1024:
        raise pytest.UsageError(f"--descriptor-size {size} is out of range; valid: 16 to 1024 pixels (SSCD uses 224 "
                                f"or 320)")
    if path is not None and not Path(path).is_file():
        raise pytest.UsageError(f"--descriptor-path {path}: " + ("a folder, not a weights file" if Path(path).is_dir()
                                                                  else "the file does not exist"))
    if path is not None and (why := weights_format_error(name, path)):
        raise pytest.UsageError(f"--descriptor-path {path}: {why}")


def _check_zoo(config: pytest.Config):
    """Every zoo file readable; every entry the user asked for available: the entries of their own --zoo files,
    and entries named by --models. Absent entries of models/real.toml that nobody named may skip later."""
    from fixtures.zoo import EMBEDDED_ZOO, pseudo_models
    from models.zoo import ZooError, check_available, read_zoo

    zoo, origin = {}, {}
    try:
        paths = [EMBEDDED_ZOO] + list(config.getoption("--zoo"))
        for path in [p for k, p in enumerate(paths) if Path(p).resolve() not in {Path(q).resolve() for q in paths[:k]}]:
            entries = read_zoo(path)
            # a name is a model's identity in the cases' ids, the results and the report: one entry each
            if same := sorted(set(entries) & set(zoo)):
                raise pytest.UsageError(f"--zoo {path}: entries {', '.join(same)} are already in "
                                        f"{origin[same[0]]}; a model name is its identity in the case ids and "
                                        f"results: give yours other names")
            if Path(path).resolve() not in (REAL_ZOO, EMBEDDED_ZOO):
                for entry in entries.values():
                    check_available(entry)
            zoo.update(entries)
            origin.update({name: path for name in entries})
        named = [m for m in (config.getoption("--models") or "").split(",") if m]
        valid = sorted(zoo) + list(pseudo_models())
        valid += [m for m in _built_in_case_models(zoo) if m not in valid]
        unknown = [m for m in named if m not in valid]
        if unknown:
            raise pytest.UsageError(f"--models: unknown model names {unknown}; valid names: {', '.join(valid)}")
        for m in named:
            if m in zoo:
                check_available(zoo[m])
    except ZooError as e:
        raise pytest.UsageError(str(e)) from e
    return zoo


def _built_in_case_models(zoo) -> list[str]:
    """The built-in models the cases name beyond the zoo (the slow sweep's `unet16-edm-n16`, D* of a size), so that
    --models can select their cases."""
    from cases.catalog import ALL
    from cases.names import parse

    return sorted({m for c in ALL for m in c.models if m not in zoo and parse(m) is not None})


def _check_regression(config: pytest.Config, zoo) -> None:
    from cases.regression import candidate_name
    from fixtures.results import unwritable
    from models.golden import MIN_THUMBNAIL, Golden, GoldenError
    from models.zoo import ZooError, check_available

    candidate, goldens = config.getoption("--candidate"), config.getoption("--golden")
    recording = config.getoption("--update-golden")
    thumbnail = config.getoption("--golden-thumbnail")
    if thumbnail is not None and not recording:  # a check compares at the size its file was recorded at
        raise pytest.UsageError(f"--golden-thumbnail {thumbnail} sets the thumbnails a golden file records, and needs "
                                f"--update-golden; a check compares at the size the file was recorded at")
    if thumbnail is not None and thumbnail < MIN_THUMBNAIL:
        raise pytest.UsageError(f"--golden-thumbnail must be at least {MIN_THUMBNAIL} pixels, got {thumbnail}")
    if not candidate and not goldens:
        if recording:
            raise pytest.UsageError("--update-golden needs --candidate MODEL and --golden FILE")
        for name in ("--golden-rp", "--golden-mae"):  # a bar given for a check that is not run would go unused
            if config.getoption(name) != GOLDEN_DEFAULT_BAR:
                raise pytest.UsageError(f"{name} is the bar of a checkpoint regression check, which needs --candidate "
                                        f"MODEL and --golden FILE; got {name} {config.getoption(name):g} alone")
        return
    if not candidate or not goldens:
        raise pytest.UsageError(f"checkpoint regression needs both --candidate and --golden; got "
                                f"{'--candidate ' + candidate if candidate else '--golden ' + ', '.join(goldens)}")
    if candidate in zoo and (Path(candidate) / "samenoise.json").is_file():
        raise pytest.UsageError(f"--candidate {candidate} names both the zoo entry {candidate} and the checkpoint "
                                f"folder ./{candidate}; write ./{candidate} for the folder (or run from another folder "
                                f"for the zoo entry)")
    if candidate in zoo:
        try:
            check_available(zoo[candidate])
        except ZooError as e:
            raise pytest.UsageError(f"--candidate {candidate}: {e}") from e
    elif not Path(candidate).exists():
        raise pytest.UsageError(f"--candidate {candidate}: no zoo entry of that name, and the path does not exist; "
                                f"give a zoo entry ({', '.join(sorted(zoo))}, or add yours with --zoo) or a suite "
                                f"checkpoint folder")
    elif not (Path(candidate) / "samenoise.json").is_file():
        raise pytest.UsageError(f"--candidate {candidate}: not a suite checkpoint folder (it has no samenoise.json); "
                                f"for another format add a zoo entry with --zoo")
    else:
        from fixtures.zoo import entry_from_checkpoint

        try:  # its weights and config too: a candidate the user named is never skipped for a missing file
            check_available(entry_from_checkpoint(Path(candidate)))
        except (ZooError, ValueError) as e:  # a samenoise.json that is not JSON, or lacks a field
            raise pytest.UsageError(f"--candidate {candidate}: {e}") from e
    from models.stats import Z, chained_wilson, wilson

    noises = config.getoption("--noises")
    bars = (config.getoption("--golden-rp"), config.getoption("--golden-mae"))

    def why_not(n: int) -> str:
        """Why no candidate could pass at n noises: n of n pairs must clear the higher bar, and the control
        (each noise against the next one's golden image: chained pairs) at 0 of n must be caught by the lower."""
        if wilson(n, n)[0] <= max(bars):
            return (f"even {n} of {n} pairs give a 95% interval reaching {wilson(n, n)[0]:.2f}, not above the "
                    f"bar {max(bars):g} (Wilson)")
        control_hi = chained_wilson([0.0] * n)[1]  # the control's pairs are chained (fixtures/metrics.py)
        if control_hi >= min(bars):
            return (f"its control (each noise against the next noise's golden image) at 0 of {n} pairs keeps "
                    f"a 95% interval up to {control_hi:.2f}, not below the bar {min(bars):g} (Wilson over "
                    f"chained pairs), so it is never caught")
        return ""

    if recording:  # the check runs on the file's noises: too few, and even a perfect match cannot pass it
        if why := why_not(noises):
            high, low = max(bars), min(bars)
            if high >= 1 or low <= 0:  # no interval lies above 1 (all pairs) or below 0 (the control at none)
                what = (f"no count's interval lies above the bar {high:g}" if high >= 1 else
                        f"no control's interval lies below the bar {low:g}")
                raise pytest.UsageError(f"--update-golden at --noises {noises}: a check against this file could "
                                        f"never pass, since {why}; {what}: change --golden-rp / --golden-mae")
            # where the two conditions start to hold in closed form (Wilson's lower bound at n of n is n / (n + z^2),
            # its upper bound at 0 of n / 2 is z^2 / (n / 2 + z^2)), then the first count from just below that
            # meets both as why_not computes them
            z2 = Z * Z
            start = max(noises, int(max(z2 * high / (1 - high), 2 * z2 * (1 - low) / low)) - 2)
            least = next((n for n in range(start, MAX_NOISES + 1) if not why_not(n)), None)
            raise pytest.UsageError(f"--update-golden at --noises {noises}: a check against this file could never "
                                    f"pass, since {why}; "
                                    + (f"record at least {least} noises" if least else
                                       f"no count up to {MAX_NOISES:,} passes: change --golden-rp / --golden-mae"))
    for g in goldens:
        if g in ("", "-"):  # `-` is not standard input here, and a regression item's id writes `-` for no file
            raise pytest.UsageError(f"--golden {g!r} names no file: give a golden file's path (a file called `-` as "
                                    f"./-)")
        if recording:
            if why := unwritable(Path(g), folder=False):
                raise pytest.UsageError(f"--golden {g} cannot be written: {why}")
            if Path(g).is_file():  # re-recording replaces a golden file; any other file is a mistyped argument
                try:
                    recorded = Golden.load(g)
                except GoldenError as e:
                    raise pytest.UsageError(f"--golden {g}: --update-golden would replace this file, which is no "
                                            f"usable golden file ({e}); name a new file, or remove this one first"
                                            ) from e
                # a new release of the same model replaces its reference; another model's reference is kept (the
                # flag added to a check command by mistake would leave later checks comparing a model with itself)
                name = candidate_name(candidate)
                if recorded.model != name:
                    raise pytest.UsageError(f"--golden {g} was recorded from {recorded.model}; --update-golden would "
                                            f"replace it with {name}'s samples: name a new file, or remove this one "
                                            f"first")
        elif Path(g).is_dir():
            raise pytest.UsageError(f"--golden {g} is a folder; give the golden file in it")
        elif not Path(g).is_file():
            raise pytest.UsageError(f"--golden {g}: the file does not exist (record it first with --update-golden)")
        else:
            try:
                golden = Golden.load(g)
            except GoldenError as e:
                raise pytest.UsageError(f"--golden: {e}") from e
            if why := why_not(len(golden.ids)):  # the check runs on the file's noises, whatever --noises says
                raise pytest.UsageError(f"--golden {g}: no candidate could pass a check of its {len(golden.ids)} "
                                        f"noises at --golden-rp {bars[0]:g} / --golden-mae {bars[1]:g}, since {why}; "
                                        f"lower the bars, or record the file again with more noises")


def pytest_runtest_setup(item: pytest.Item) -> None:
    from fixtures.results import forget_earlier_attempts

    forget_earlier_attempts(item)  # in every process: under pytest-xdist the items live in the workers


def pytest_itemcollected(item: pytest.Item) -> None:
    from fixtures.results import note_collected_claim

    note_collected_claim(item)  # a worker tells the controller whether claim cases were collected


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    device = config.getoption("--device")
    has_gpu = torch.cuda.is_available() and device.startswith("cuda")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device: run on a GPU machine with --device cuda")
    from fixtures.results import describe

    wanted = {m for m in (config.getoption("--models") or "").split(",") if m}
    regression, recording = bool(config.getoption("--candidate")), config.getoption("--update-golden")
    keep, drop = [], []
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)
        params = getattr(getattr(item, "callspec", None), "params", {})
        case = params.get("case")
        if wanted and case is not None and not set(case.models) <= wanted:
            drop.append(item)
        elif wanted and isinstance(params.get("name"), str) and params["name"] not in wanted:
            drop.append(item)  # a throughput case of another zoo model (its `name`); model-free ones are kept
        elif "golden_file" in params and (not regression or ("golden_metric" in params) == recording):
            drop.append(item)  # checkpoint regression runs only when asked for: recording or comparing
        else:
            describe(item)  # every report of a claim case carries what the case is, errors and skips too
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    if any(f in item.fixturenames for item in items for f in DESCRIPTOR_FIXTURES):
        _check_descriptor_files(config)


def pytest_collection_finish(session: pytest.Session) -> None:
    """A regression check that was asked for (--candidate, --golden) but that the selection (-k, -m, --models, the
    files named) left out stops the run: it would otherwise pass without checking the golden file. Under pytest-xdist
    the controller collects nothing: `pytest_xdist_node_collection_finished` checks the workers' ids instead."""
    config = session.config
    if not config.getoption("--candidate") or getattr(config, "workerinput", None) is not None:
        return
    selected = {getattr(getattr(item, "callspec", None), "params", {}).get("golden_file") for item in session.items}
    _golden_files_selected(config, selected, len(session.items))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids) -> None:
    """The controller's view of a worker's collection (every worker collects the same items): the golden files
    whose regression items are among `ids` (`regression/<file>/<metric>` or `record/<file>`)."""
    config = node.config
    if not config.getoption("--candidate"):
        return
    from _pytest.compat import ascii_escaped

    from cases.regression import GOLDEN_BARS, item_id

    params = {i[i.index("[") + 1:-1] for i in ids if i.endswith("]") and "[" in i}
    selected = set()
    for g in config.getoption("--golden"):
        names = {g, ascii_escaped(g)}  # pytest writes a non-ASCII id escaped
        wanted = {f"record/{n}" for n in names} | {item_id(n, m) for n in names for m in GOLDEN_BARS}
        if params & wanted:
            selected.add(g)
    _golden_files_selected(config, selected, len(ids))


def _golden_files_selected(config: pytest.Config, selected: set, items: int) -> None:
    left_out = [g for g in config.getoption("--golden") if g not in selected]
    if left_out:  # each file named: with two, a -k that keeps one would pass without checking the other
        what = "record" if config.getoption("--update-golden") else "check"
        raise pytest.UsageError(f"--candidate {config.getoption('--candidate')} asks to {what} the golden file(s) "
                                f"{', '.join(config.getoption('--golden'))}, but no regression case of "
                                f"{', '.join(left_out)} is selected ({items} item(s) selected); run "
                                f"bench/test_regression.py and leave out the -k / -m / --models selection that drops "
                                f"it")


def _check_descriptor_files(config: pytest.Config) -> None:
    """The descriptor's weights must be here when a collected case needs them (never a silent skip)."""
    from models.descriptor import descriptor_weights

    try:
        descriptor_weights(config.getoption("--descriptor"), config.getoption("--descriptor-path"))
    except FileNotFoundError as e:
        raise pytest.UsageError(f"--descriptor {config.getoption('--descriptor')}: {e}") from e


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """A case whose real checkpoint (or the code it needs) is absent is skipped, saying what to provide: such
    entries were not named by the user, or the run would have stopped before collection."""
    outcome = yield
    report = outcome.get_result()
    from models.zoo import Unavailable

    if call.excinfo is not None and call.excinfo.errisinstance(Unavailable):
        report.outcome = "skipped"
        report.longrepr = (str(item.path), item.location[1] or 0, f"Skipped: {call.excinfo.value}")

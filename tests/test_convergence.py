"""Convergence figures of a training run: the slope per doubling of steps, and D*'s loss floor (closed forms)."""
import math
import re

import pytest
import torch

from models.convergence import optimal_loss, tail_slope
from models.training import TrainConfig


def test_the_slope_of_a_log_linear_loss_is_its_coefficient():
    losses = [1.0 - 0.07 * math.log2(step) for step in range(1, 4001)]  # falls 0.07 per doubling
    assert tail_slope(losses).value == pytest.approx(-0.07, abs=1e-9)
    assert tail_slope([0.3] * 1000).value == pytest.approx(0.0, abs=1e-12)  # levelled off


def _noisy_log(slope: float, sd: float, phi: float, steps: int, gen: torch.Generator) -> list[float]:
    """0.4 + slope * log2(step) plus AR(1) noise of stationary sd `sd` and lag-1 correlation phi."""
    from scipy.signal import lfilter

    shocks = (torch.randn(steps, generator=gen, dtype=torch.float64) * sd * math.sqrt(1 - phi * phi)).numpy()
    shocks[0] /= math.sqrt(1 - phi * phi)  # the first step from the stationary distribution
    noise = lfilter([1.0], [1.0, -phi], shocks)  # noise[i] = phi noise[i - 1] + shocks[i]
    return [0.4 + slope * math.log2(k + 1) + float(e) for k, e in enumerate(noise)]


@pytest.mark.parametrize("phi", [0.0, 0.6])
def test_the_slope_interval_covers_the_true_slope_95_times_in_100(phi):
    """Simulated logs with a known slope and per-step noise like the zoo's (sd 0.05, 6,000 steps; the zoo's residual
    lag-1 correlations are -0.07 to +0.04), and with strongly correlated steps (phi 0.6, which the AR(1) widening must
    cover). Coverage over 300 logs must lie within 0.95 +- 3 binomial standard deviations (0.912-0.988)."""
    gen = torch.Generator().manual_seed(1)
    covered = 0
    for _ in range(300):
        s = tail_slope(_noisy_log(-0.02, 0.05, phi, 6000, gen))
        covered += s.low <= -0.02 <= s.high
    assert 0.912 <= covered / 300 <= 0.988, covered


def test_the_slope_verdict_falls_rises_or_shows_no_trend():
    """A loss falling 0.07 per doubling (the unconverged zoo's rate, issue text) with small noise is found falling,
    a rising one rising, and a flat noisy one shows no trend; the verdict is what the interval says."""
    gen = torch.Generator().manual_seed(2)
    falling = tail_slope(_noisy_log(-0.07, 0.002, 0.0, 6000, gen))
    assert falling.verdict == "falls" and falling.high < 0 and falling.low < -0.07 < falling.high
    assert tail_slope(_noisy_log(+0.07, 0.002, 0.0, 6000, gen)).verdict == "rises"
    flat = tail_slope(_noisy_log(0.0, 0.05, 0.0, 6000, gen))
    assert flat.verdict == "no trend" and flat.low < 0 < flat.high
    assert abs(flat.lag1) < 0.15  # independent steps: lag-1 correlation near 0 (sd 1 / sqrt(600) = 0.04; 0.15 is 3.7 sd)


def test_the_last_doubling_change_of_a_log_linear_loss_is_its_coefficient_and_covers_it_under_noise():
    """The windows (90%, 100%] and (45%, 50%] of the steps are a doubling apart, so a loss falling 0.07 per doubling
    changes by -0.07 between them (up to the discrete steps: 2.5e-6 at 6,000 steps); under per-step noise like
    the zoo's (sd 0.05) the interval covers the true change in 0.95 +- 3 binomial standard deviations of 300 logs,
    and is at least ten times narrower than the last-10% slope's."""
    from models.convergence import last_doubling

    exact = last_doubling([1.0 - 0.07 * math.log2(step) for step in range(1, 6001)])
    assert exact.value == pytest.approx(-0.07, abs=1e-5) and exact.verdict == "falls"  # measured: 2.5e-6 off
    # the noise-free change of the simulated logs' trend, which the interval must cover (not -0.02 itself: the
    # windows' discrete steps move it by 2.5e-6 / 0.07 * 0.02)
    truth = last_doubling([0.4 - 0.02 * math.log2(step) for step in range(1, 6001)]).value
    gen = torch.Generator().manual_seed(3)
    covered, widths = 0, []
    for _ in range(300):
        log = _noisy_log(-0.02, 0.05, 0.0, 6000, gen)
        d = last_doubling(log)
        covered += d.low <= truth <= d.high
        s = tail_slope(log)
        widths.append((s.high - s.low) / (d.high - d.low))
    assert 0.912 <= covered / 300 <= 0.988, covered
    assert min(widths) > 10


def test_a_log_too_short_for_the_last_doubling_is_refused():
    from models.convergence import last_doubling

    with pytest.raises(ValueError, match="at least 2 steps in each window .* the log has 12 steps"):
        last_doubling([1.0] * 12)


def test_the_last_doubling_interval_covers_on_short_logs_and_its_windows_never_overlap():
    """Each window's variance comes from a few steps on a short log, so the interval takes the t quantile at Welch
    and Satterthwaite's degrees of freedom: with the normal quantile a flat 40-step log's interval covered 0 in
    0.86 of 2,000 simulated logs (0.944 of 1,000 now). Here 400 logs of 40 steps must cover within 0.95 +- 3
    binomial standard deviations (0.917-0.983). A tail above a half would make the windows share steps: refused."""
    from models.convergence import last_doubling

    gen = torch.Generator().manual_seed(4)
    changes = [last_doubling(_noisy_log(0.0, 0.05, 0.0, 40, gen)) for _ in range(400)]
    covered = sum(d.low <= 0.0 <= d.high for d in changes)
    assert 0.917 <= covered / 400 <= 0.983, covered
    with pytest.raises(ValueError, match=r"overlap above a half; tail must lie in \(0, 0.5\], got 0.6"):
        last_doubling([0.5] * 100, tail=0.6)


@pytest.mark.parametrize("which", ["tail_slope", "last_doubling"])
def test_a_diverged_log_or_a_bad_fraction_is_refused_by_name(which):
    """A NaN loss would make every bound NaN and the verdict read "no trend": the log is refused instead."""
    import models.convergence as conv

    fn = getattr(conv, which)
    with pytest.raises(ValueError, match=r"non-finite loss \(nan\) at step 7: the run diverged"):
        fn([0.5] * 6 + [math.nan] + [0.5] * 93)
    with pytest.raises(ValueError, match=r"tail must be a fraction of the steps in \(0, 1\), got 1.5"):
        fn([0.5] * 100, tail=1.5)
    with pytest.raises(ValueError, match=r"level must be a confidence level in \(0, 1\), got 95"):
        fn([0.5] * 100, level=95)


def test_a_log_too_short_for_a_slope_is_refused():
    with pytest.raises(ValueError, match="at least 3 steps in the last 10%, the log has 5 steps"):
        tail_slope([1.0] * 5)


def edm_config(n: int) -> TrainConfig:
    return TrainConfig(kernel="edm", prediction="edm", objective="edm", time_input="log-sigma", time_scale=1.0,
                       dataset_size=n, image_size=8)


def test_the_floor_of_one_training_image_is_zero_and_grows_with_the_set():
    """D* of a single image returns that image at every sigma (Theorem 1), so its loss is exactly 0; with more
    images D* must guess at large sigma, so the floor is positive and grows with the set."""
    assert optimal_loss(edm_config(1), samples=256).value == pytest.approx(0.0, abs=1e-12)
    small, large = optimal_loss(edm_config(4), samples=1024), optimal_loss(edm_config(64), samples=1024)
    assert 0 < small.value < large.value


def test_the_floors_standard_error_is_that_of_a_mean_of_independent_draws():
    """The floor's standard error falls as 1 / sqrt(draws) (4x the draws: half the error, within the error's own
    Monte Carlo spread), and means of disjoint draws (other seeds) scatter as it says: 40 floors of 256 draws each
    lie within 3 of their standard errors of the mean of all 40 at least 38 times (a normal mean: 0.997 each)."""
    cfg = edm_config(4)
    few, many = optimal_loss(cfg, samples=2048), optimal_loss(cfg, samples=8192)
    assert many.se == pytest.approx(few.se / 2, rel=0.25)
    floors = [optimal_loss(cfg, samples=256, seed=s) for s in range(40)]
    centre = sum(f.value for f in floors) / 40
    assert sum(abs(f.value - centre) <= 3 * f.se for f in floors) >= 38
    low, high = many.interval()
    assert low < many.value < high and high - low == pytest.approx(2 * 1.959964 * many.se)


def test_the_error_per_sigma_bin_puts_d_star_below_the_zero_denoiser_and_below_itself_at_a_wrong_sigma():
    """D* minimizes the expected denoising error at every sigma, so it scores below D = 0 in every bin, and below D*
    told a wrong noise level (0.8 or 1.25 times sigma) where that difference is resolvable: at sigma 1-10, with 512
    draws (measured 0.00711 against 0.00742 / 0.00754; with 64 draws D* at 0.8 sigma scored lower by chance, and at
    sigma 10-100 the three differ by under 1%)."""
    from models.convergence import SIGMA_BINS, error_per_sigma
    from models.datasets import embedded_photos
    from models.optimal import OptimalDenoiser
    from models.training import TrainConfig

    cfg = TrainConfig(kernel="edm", prediction="edm", objective="edm", time_input="log-sigma", time_scale=1.0,
                      image_size=8, dataset_size=8)
    optimal = {k: v.eps_error for k, v in error_per_sigma(
        cfg, OptimalDenoiser(embedded_photos(8, size=8).as_tensor(), dtype=torch.float64), samples=64).items()}
    zero = {k: v.eps_error for k, v in error_per_sigma(cfg, lambda x, sigma: torch.zeros_like(x), samples=64).items()}
    # D = 0: error ||y||^2 / sigma^2
    assert list(optimal) == [f"{lo:g}-{hi:g}" for lo, hi in zip(SIGMA_BINS[:-1], SIGMA_BINS[1:])]  # EDM: 0.002-80
    assert all(optimal[k] < zero[k] for k in optimal)  # D* minimizes the denoising error at every sigma
    assert optimal["0.01-0.1"] < 1e-6  # at low noise D* returns the training image itself (Theorem 1)
    d_star = OptimalDenoiser(embedded_photos(8, size=8).as_tensor(), dtype=torch.float64)
    own = error_per_sigma(cfg, d_star, samples=512)["1-10"].eps_error
    for factor in (0.8, 1.25):
        wrong = error_per_sigma(cfg, lambda x, sigma: d_star(x, factor * sigma), samples=512)["1-10"].eps_error
        assert own < wrong, (factor, own, wrong)


def test_a_bin_whose_centre_lies_outside_the_kernels_range_is_left_out():
    """A VE kernel cut at sigma_max 20 is never trained at sigma 31.6, the centre of the 10-100 bin."""
    from models.convergence import error_per_sigma
    from models.training import TrainConfig

    cfg = TrainConfig(kernel="ve", prediction="eps", objective="ve", time_input="log-sigma", time_scale=1.0,
                      image_size=8, dataset_size=8, kernel_options={"sigma_max": 20.0})
    got = error_per_sigma(cfg, lambda x, sigma: torch.zeros_like(x), samples=8)
    assert list(got) == ["0.01-0.1", "0.1-1", "1-10"]


def test_the_table_names_each_zoo_folders_training_time(tmp_path, capsys):
    """The convergence table sits beside the training time (train_time.json of an embedded zoo folder); a run
    folder without one says '-'."""
    import json
    from dataclasses import asdict

    from models.convergence import main

    for name, timing in (("timed", {"wall_seconds": 1799, "threads": 1}), ("untimed", None)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "samenoise.json").write_text(json.dumps({"config": asdict(edm_config(4))}))
        (folder / "loss.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in range(1, 41)))
        if timing:
            (folder / "train_time.json").write_text(json.dumps(timing))
    main([str(tmp_path / "timed"), str(tmp_path / "untimed"), "--samples", "64"])
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].endswith("| train time |")
    assert rows[2].startswith("| timed | 40 | 0.5000 | +0.0000 [+0.0000, +0.0000] no trend | "
                              "+0.0000 [+0.0000, +0.0000] no trend |") and rows[2].endswith("| 1799 s, 1 thread |")
    assert rows[3].startswith("| untimed |") and rows[3].endswith("| - |")


@pytest.mark.parametrize("timing, message", [
    ('{"seconds": 5}', r"KeyError: 'wall_seconds'"),
    ("{seconds: 5", r"JSONDecodeError"),
    ('{"wall_seconds": 5, "threads": 0}', r"'threads' must be an integer >= 1, got 0"),
    ('{"wall_seconds": "long", "threads": 1}', r"'wall_seconds' must be a number >= 0, got 'long'"),
])
def test_a_malformed_training_time_is_refused_naming_the_file(tmp_path, capsys, timing, message):
    """A train_time.json without its two numbers was a bare KeyError traceback (or a JSON error without the file)."""
    import json
    from dataclasses import asdict

    from models.convergence import main

    (tmp_path / "samenoise.json").write_text(json.dumps({"config": asdict(edm_config(4))}))
    (tmp_path / "loss.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in range(1, 41)))
    (tmp_path / "train_time.json").write_text(timing)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--samples", "64"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'train_time.json'} is not a training time" in err and re.search(message, err), err


def test_the_table_gives_the_floor_and_the_ratio_with_intervals_and_marks_a_conditional_runs_floor(tmp_path, capsys):
    """The floor is a Monte Carlo mean and the loss a mean over steps: both print with their 95% intervals, the
    ratio's by the delta method. A conditional run is shown the unconditional D*'s floor, said so on its row."""
    import json
    from dataclasses import asdict, replace

    from models.convergence import main, optimal_loss

    for name, cfg in (("plain", edm_config(4)), ("cond", replace(edm_config(4), conditional=True))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "samenoise.json").write_text(json.dumps({"config": asdict(cfg)}))
        (tmp_path / name / "loss.jsonl").write_text("".join(json.dumps({"step": s, "loss": 0.3 + 0.01 * (s % 3)})
                                                            + "\n" for s in range(1, 401)))
    main([str(tmp_path / "plain"), str(tmp_path / "cond"), "--samples", "512"])
    rows = capsys.readouterr().out.splitlines()
    floor = optimal_loss(edm_config(4), samples=512)
    low, high = floor.interval()
    cells = rows[2].split(" | ")
    assert cells[5] == f"{floor.value:.4f} [{low:.4f}, {high:.4f}]"
    ratio, bounds = cells[6].split(" [")
    lo, hi = (float(b) for b in bounds.rstrip("]").split(", "))
    assert lo < float(ratio) < hi and float(ratio) == pytest.approx(float(cells[2]) / floor.value, abs=1e-3)
    assert rows[3].split(" | ")[5].endswith("(unconditional D*)") and not cells[5].endswith("D*)")


def test_the_eps_scale_spread_finds_a_per_sample_scale_error():
    """A denoiser whose eps (x - D) / sigma is D*'s times 1 + c or 1 - c, by the sign of the input's mean (half the
    draws each), has an eps-scale spread of c at sigma 10-100, where D*'s own spread is only the noise's chance
    correlation with y - D*: about rms(y - D*) / (sigma sqrt(d)) = 0.5 / (31.6 sqrt(192)) = 1.1e-3 here."""
    from models.convergence import error_per_sigma
    from models.datasets import embedded_photos
    from models.optimal import OptimalDenoiser

    c = 0.03
    optimal = OptimalDenoiser(embedded_photos(8, size=8).as_tensor(), dtype=torch.float64)

    def scaled(x, sigma):
        d = optimal(x, sigma)
        factor = 1 + c * torch.sign(x.flatten(1).mean(1)).reshape(-1, 1, 1, 1)
        return x - factor * (x - d)

    cfg = edm_config(8)
    bad = error_per_sigma(cfg, scaled, samples=256)["10-100"]
    good = error_per_sigma(cfg, optimal, samples=256)["10-100"]
    assert good.scale_spread < 0.1 * c
    assert bad.scale_spread == pytest.approx(c, rel=0.05)  # std of +-c over draws split about evenly: c


def test_the_eps_norm_slope_tells_a_norm_following_eps_from_a_scale_invariant_one():
    """D*'s eps (x - D*(x)) / sigma grows with the state at sigma 10-100, where x is almost all noise: slope about 1
    (closed form: ||c x - y|| / ||x - y|| -> c as sigma ||n|| >> ||y||). A denoiser whose F sees only x / ||x||, as a
    network normalizing each sample does, has an eps of fixed norm: slope 0 exactly."""
    from models.convergence import error_per_sigma
    from models.datasets import embedded_photos
    from models.optimal import OptimalDenoiser

    optimal = OptimalDenoiser(embedded_photos(8, size=8).as_tensor(), dtype=torch.float64)

    def invariant(x, sigma):  # D = x - sigma F(x / ||x||): eps of norm sqrt(d) whatever ||x||
        unit = x / x.flatten(1).norm(dim=1).reshape(-1, 1, 1, 1)
        return x - sigma.reshape(-1, 1, 1, 1) * unit * x[0].numel() ** 0.5

    cfg = edm_config(8)
    good = error_per_sigma(cfg, optimal, samples=128)
    bad = error_per_sigma(cfg, invariant, samples=128)
    assert good["10-100"].norm_slope == pytest.approx(1.0, abs=0.01)
    assert all(abs(b.norm_slope) < 1e-9 for b in bad.values())


def test_the_handover_is_exact_for_d_star_and_void_for_a_model_that_forgets_its_input():
    """With D = D*, every handover gives D*'s own sample (share 1). A denoiser that always returns training image 0
    ends every ODE on image 0 from whatever state it is handed, so its share is the same at every handover: the
    fraction of D*'s samples that are image 0, below 1."""
    from models.convergence import HANDOVER_SIGMAS, handover
    from models.datasets import embedded_photos
    from models.optimal import OptimalDenoiser

    cfg = edm_config(4)
    data = embedded_photos(4, size=8).as_tensor().double()
    assert handover(cfg, OptimalDenoiser(data, dtype=torch.float64), noises=32, nfe=10) == {
        h: 1.0 for h in HANDOVER_SIGMAS}
    shares = handover(cfg, lambda x, sigma, label=None: data[:1].expand_as(x), noises=32, nfe=10)
    assert len(set(shares.values())) == 1 and shares[HANDOVER_SIGMAS[0]] < 1


def test_misses_count_what_each_model_and_each_pair_leave_of_d_stars_choice():
    """D* misses nothing. Two denoisers that always return training image 0 miss exactly the noises where D* picks
    another image, together, and pick the same other image there; one that returns image 0 and one that returns
    image 1 miss together only where D* picks neither, and never pick the same image."""
    from models.convergence import _Choices, misses
    from models.datasets import embedded_photos
    from models.optimal import OptimalDenoiser

    cfg = edm_config(4)
    data = embedded_photos(4, size=8).as_tensor().double()

    def constant(i):
        return lambda x, sigma, label=None: data[i:i + 1].expand_as(x)

    reference = _Choices(cfg, 64, "dpm3", 10, 0).reference
    not0, not1 = int((reference != 0).sum()), int((reference != 1).sum())
    neither = int(((reference != 0) & (reference != 1)).sum())
    assert 0 < neither < not0 < 64  # the 64 noises reach more than two of the 4 images
    m = misses(cfg, {"dstar": OptimalDenoiser(data, dtype=torch.float64), "a": constant(0), "b": constant(0),
                     "c": constant(1)}, noises=64, nfe=10)
    assert m.missed == {"dstar": 0, "a": not0, "b": not0, "c": not1}
    assert m.pairs["a", "b"][0] == not0 and m.pairs["a", "b"][2] == not0
    assert m.pairs["a", "b"][1] == pytest.approx(not0 * not0 / 64)
    assert m.pairs["a", "c"][0] == neither and m.pairs["a", "c"][2] == 0
    assert m.pairs["dstar", "a"][0] == 0
    # D* picks image 0: only c misses; image 1: a and b; image 2 or 3: a, b and c
    assert m.by_count == [0, int((reference == 0).sum()), int((reference == 1).sum()), neither, 0]


def test_misses_refuse_one_model_and_models_of_other_training_sets(capsys):
    from models.convergence import main

    with pytest.raises(SystemExit):
        main(["models/embedded/unet16-edm-m4", "--misses"])
    assert "--misses compares at least 2 models; got 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["models/embedded/unet16-edm-m4", "models/embedded/unet16-edm-l2048", "--misses"])
    err = capsys.readouterr().err
    assert "one training set and kernel" in err and "unet16-edm-m4: (4," in err and "unet16-edm-l2048: (2048," in err
    with pytest.raises(SystemExit):
        main(["models/embedded/unet16-edm-l2048", "models/embedded/unet32-vp-eps-l2048", "--misses"])
    err = capsys.readouterr().err
    assert "'edm'" in err and "'vp'" in err


def test_the_d_star_comparisons_refuse_a_conditional_model_before_the_table(capsys):
    """--bins, --handover and --misses compare with the unconditional D*; a conditional model is refused with its
    name, before the minutes of the loss table."""
    from models.convergence import main

    folder = "models/embedded/unet16-edm-cond-l2048"
    with pytest.raises(SystemExit) as e:
        main([folder, "--bins", "--handover"])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "| model |" not in out.out
    assert ("--bins and --handover compare an unconditional model with the unconditional D*; unet16-edm-cond-l2048 "
            "is conditional (2048 images in classes of 5 photos)") in out.err


@pytest.mark.parametrize("line, message", [
    ('{"step": 41, "loss"', 'line 41 is not a JSON record'), ('', 'line 41 is not a JSON record'),
    ('[1, 2]', 'line 41 logs step [1, 2], expected 41'), ('{"step": 41}', 'line 41 logs loss None, expected a number'),
    ('{"step": 41, "loss": "abc"}', "line 41 logs loss 'abc', expected a number"), (None, 'logs no step'),
    ("one step", "a slope and its interval need at least 3 steps in the last 10%, the log has 1 steps")])
def test_a_malformed_loss_log_is_refused_naming_the_file_and_line(tmp_path, capsys, line, message):
    """Each of these crashed the table with a traceback (KeyError, TypeError, ZeroDivisionError) or an error that named
    neither the file nor the line."""
    import json
    from dataclasses import asdict

    from models.convergence import main

    (tmp_path / "samenoise.json").write_text(json.dumps({"config": asdict(edm_config(4))}))
    good = "".join(json.dumps({"step": s, "loss": 0.5}) + "\n" for s in range(1, 41))
    if line == "one step":  # too short for a slope: refused as such, naming the log (it divided by zero)
        (tmp_path / "loss.jsonl").write_text(json.dumps({"step": 1, "loss": 0.5}) + "\n")
    else:
        (tmp_path / "loss.jsonl").write_text("" if line is None else good + line + "\n")
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--samples", "8"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"{tmp_path / 'loss.jsonl'}" in err and message in err, err


@pytest.mark.parametrize("meta, message", [("{}", "records no training config"), ("{", "is not JSON"),
                                           ('{"config": {"kernel": "vq"}}', "unknown kernel 'vq'"),
                                           # dropped before, and the floor computed at sigma_mean's default
                                           ('{"config": {"sigma_meen": -3.0}}',
                                            "keys ['sigma_meen'] that no training option has; valid keys: ")])
def test_a_checkpoint_without_a_usable_training_config_is_refused_by_name(tmp_path, capsys, meta, message):
    from models.convergence import main

    (tmp_path / "samenoise.json").write_text(meta)
    (tmp_path / "loss.jsonl").write_text('{"step": 1, "loss": 0.5}\n')
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "samenoise.json" in err and message in err, err


@pytest.mark.parametrize("samples", ["0", "-5", "x"])
def test_samples_below_one_are_refused(capsys, samples):
    """--samples -5 printed a D* floor of -0.0000, 0 divided by zero."""
    from models.convergence import main

    with pytest.raises(SystemExit) as e:
        main(["models/embedded/unet16-edm-m4", "--samples", samples])
    assert e.value.code == 2 and "--samples: expected an integer >= 1" in capsys.readouterr().err


def test_the_d_star_comparisons_refuse_a_vae(capsys):
    """A VAE has no denoiser to compare with D*: --bins printed eps errors of 1166 against D*'s 0."""
    from models.convergence import main

    with pytest.raises(SystemExit) as e:
        main(["models/embedded/vae-conv-l2048", "--bins"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "vae-conv-l2048 is a VAE (objective 'elbo'), which has none" in err, err


def test_a_trend_read_across_two_rounds_of_a_progressive_distillation_is_left_out(capsys):
    """The distilled model's five rounds each distil to other step counts against another teacher: its last doubling
    compared round 3 with round 5 and printed "rises"; a window pair in two rounds prints "-", a tail within the last
    round keeps its slope."""
    from models.convergence import main
    from tests.helpers import ROOT

    main([str(ROOT / "models" / "embedded" / "unet16-edm-distill-l2048")])
    row = capsys.readouterr().out.splitlines()[2].split(" | ")
    assert row[0] == "| unet16-edm-distill-l2048" and row[3].endswith(("falls", "no trend", "rises")) and row[4] == "-"

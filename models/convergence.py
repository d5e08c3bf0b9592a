"""Has a training run converged? Three numbers from its loss log and its config (paper Appendix G trains every model
"to convergence"; the paper's own criterion is the lowest FID, footnote 2 and Appendices E and G, which a 16-px
miniature cannot measure: the loss's trend and its gap to D*'s floor stand in for it here):

- the slope of the loss per doubling of steps over the last 10% of the run: the least-squares slope of the per-step
  loss against log2(step), near 0 when the loss has levelled off and negative while it still falls, with its 95%
  interval and a verdict: "falls" or "rises" when the interval excludes 0, "no trend" when it does not (`Slope`);
  and, far more precise, the change over the last doubling: the mean loss over the last 10% minus the mean over
  the same log-span a doubling earlier (`last_doubling`);
- the gap to D*'s floor: the same objective (the same sigma draw and weight) evaluated with the optimal denoiser
  D* of Theorem 1 on the run's own training set, by Monte Carlo. D* minimizes the empirical loss, so a model can
  reach it only by memorizing; the gap says how far the model is from that.
- with --bins, where on the noise axis the gap sits: the model's and D*'s denoising error
  E ||D(y + sigma n; sigma) - y||^2 / sigma^2 (the eps error, whatever the objective) at the centre of
  each decade of sigma, and the spread over draws of the scale of the predicted eps (x - D) / sigma fitted to the
  drawn n: a per-sample scale error that D = x - sigma F multiplies by sigma into the state, at every step; and
  the eps's norm slope d log ||x - D(x)|| / d log ||x|| (1 for the true eps at large sigma; 0 for an F that sees only
  x / ||x||, so that the ODE cannot tell a state's excess noise and carries it to the image);
- with --handover, at which noise levels a model's choice of training image departs from D*'s: D* denoises above
  sigma_h and the model at and below it, along one ODE from the bank's noises, and the table gives the fraction of
  noises whose sample has the same nearest training image (pixel L2) as D*'s own sample;
- with --misses, for two or more models of one training set and kernel: on how many noises each one's sample has another
  nearest training image than D*'s, how many of those misses each pair shares (against the count expected if the
  misses were independent) and on how many shared misses the pair picks the same other image.

    python -m models.convergence RUN_OR_CHECKPOINT_FOLDER [...] [--bins] [--handover] [--misses]
"""
from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from models.datasets import embedded_photos
from models.kernels import append_dims
from models.kernels import make_kernel
from models.optimal import OptimalDenoiser
from models.stats import LEVEL
from models.training import TrainConfig, draw_sigma, loss_log_path, loss_weight, read_losses

TAIL = 0.1  # the last 10% of the steps


@dataclass(frozen=True)
class Slope:
    """The least-squares slope of the per-step loss against log2(step) over the last `tail` of a run, with its 95%
    interval. The interval is the least-squares one at the effective sample size n_eff = n (1 - r) / (1 + r) of a
    trend in serially correlated values, r the lag-1 autocorrelation of the residuals when positive (Santer et al.
    2000, J. Geophys. Res. 105, 7337): the residual variance over n_eff - 2 degrees of freedom and the t quantile
    at n_eff - 2. Per-step losses are noisy (each draws its own sigmas), so over the last 10% (0.15
    doublings) the interval is wide: a verdict "no trend" means that no fall or rise was detected, not that none is
    there; the interval's width says how large a slope could have gone unseen."""

    value: float
    low: float
    high: float
    lag1: float  # the residuals' lag-1 autocorrelation (about 0 for independent steps)

    @property
    def verdict(self) -> str:
        """'falls' or 'rises' when the interval excludes 0, else 'no trend'."""
        return "falls" if self.high < 0 else "rises" if self.low > 0 else "no trend"


def _check_log(losses: list[float], tail: float, level: float) -> None:
    """A diverged log (a non-finite loss) or a tail or level outside (0, 1) is refused by name."""
    if not 0 < tail < 1:
        raise ValueError(f"tail must be a fraction of the steps in (0, 1), got {tail!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be a confidence level in (0, 1), got {level!r}")
    bad = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    if bad is not None:
        raise ValueError(f"the loss log has a non-finite loss ({losses[bad]!r}) at step {bad + 1}: the run diverged, "
                         f"and no slope or change describes it")


def _lag1(resid: torch.Tensor) -> float:
    """The lag-1 autocorrelation of zero-mean residuals (0 when they are all 0)."""
    ss = float((resid * resid).sum())
    return float((resid[1:] * resid[:-1]).sum()) / ss if ss > 0 else 0.0


def _ar1_widening(lag1: float) -> float:
    """The AR(1) variance factor (1 + r) / (1 - r) for a mean or a trend of serially correlated values (Santer et al.
    2000); r is clipped to [0, 0.99]: a negative correlation would narrow the interval, and is not taken."""
    r = min(max(lag1, 0.0), 0.99)
    return (1 + r) / (1 - r)


def windows(n: int, tail: float = TAIL) -> tuple[int, int, int]:
    """The 0-based step indices of a log of n steps that the trends read: the last `tail` starts at `late` (step 1,
    index 0, is left out: log2(1) = 0 anchors nothing), and the same span one doubling earlier is [early, half)."""
    return max(1, int(n * (1 - tail))), int(n * (1 - tail) / 2), n // 2


def tail_slope(losses: list[float], tail: float = TAIL, level: float = LEVEL) -> Slope:
    """d loss / d log2(step) over the last `tail` of the steps (steps are 1-based), with its interval."""
    from scipy.stats import t as student_t

    _check_log(losses, tail, level)
    n = len(losses)
    start = windows(n, tail)[0]
    if n - start < 3:
        raise ValueError(f"a slope and its interval need at least 3 steps in the last {tail:.0%}, the log has {n} "
                         f"steps")
    x = torch.log2(torch.arange(start + 1, n + 1, dtype=torch.float64))
    y = torch.tensor(losses[start:], dtype=torch.float64)
    x = x - x.mean()
    sxx = float((x * x).sum())
    value = float((x * (y - y.mean())).sum()) / sxx
    resid = y - y.mean() - value * x
    ss = float((resid * resid).sum())
    lag1 = _lag1(resid)
    widening = _ar1_widening(lag1)
    # Santer et al. 2000 (their eqs. 4-6): the residual variance over n_eff - 2 degrees of freedom, n_eff = n (1 - r)
    # / (1 + r), and the t quantile at n_eff - 2. On a short correlated tail it still covers less than 95% (30 steps,
    # AR(1) 0.6 / 0.9: 0.88 / 0.80 of 1,000 simulated logs), as r is underestimated there; the zoo's tails of 500+
    # steps are close to independent (lag-1 -0.07 to +0.04)
    dof = max(len(y) / widening - 2, 1.0)
    se = math.sqrt(ss / dof / sxx)
    half = float(student_t.ppf(0.5 + level / 2, dof)) * se
    return Slope(value, value - half, value + half, lag1)


def _mean_and_variance(values: torch.Tensor) -> tuple[float, float, float]:
    """A window's mean, the variance of that mean and its effective size n (1 - r) / (1 + r), widened for serial
    correlation as in `Slope`."""
    centred = values - values.mean()
    ss = float((centred * centred).sum())
    widening = _ar1_widening(_lag1(centred))
    return float(values.mean()), ss / (len(values) - 1) / len(values) * widening, len(values) / widening


def last_doubling(losses: list[float], tail: float = TAIL, level: float = LEVEL) -> Slope:
    """The loss's change over the run's last doubling of steps: the mean over the last `tail` of the steps minus the
    mean over the same span of log2(step) one doubling earlier (the steps in ((1 - tail) n / 2, n / 2]), with a 95%
    interval (the two windows' means are independent; each variance widened for serial correlation, and the t
    quantile at Welch and Satterthwaite's degrees of freedom from the windows' effective sizes). It is the change
    per doubling that the last-10% slope estimates, measured between windows a doubling apart, so its interval is
    ten or more times narrower; under a decaying learning rate it includes the annealing's gain. A tail above a half
    is refused: the windows would share steps."""
    from scipy.stats import t as student_t

    _check_log(losses, tail, level)
    if tail > 0.5:
        raise ValueError(f"the change over the last doubling compares the last `tail` of the steps with the same span "
                         f"a doubling earlier, which overlap above a half; tail must lie in (0, 0.5], got {tail!r}")
    n = len(losses)
    late_start, early_start, half = windows(n, tail)
    late, early = losses[late_start:], losses[early_start:half]
    if min(len(late), len(early)) < 2:
        raise ValueError(f"the change over the last doubling needs at least 2 steps in each window (the last "
                         f"{tail:.0%} and the same span one doubling earlier); the log has {n} steps")
    (m1, v1, n1), (m0, v0, n0) = (_mean_and_variance(torch.tensor(w, dtype=torch.float64)) for w in (late, early))
    parts = v0 * v0 / max(n0 - 1, 1.0) + v1 * v1 / max(n1 - 1, 1.0)
    dof = (v0 + v1) ** 2 / parts if parts > 0 else math.inf
    half = float(student_t.ppf(0.5 + level / 2, max(dof, 1.0))) * math.sqrt(v0 + v1)
    return Slope(m1 - m0, m1 - m0 - half, m1 - m0 + half, math.nan)


@dataclass(frozen=True)
class Floor:
    """D*'s loss on a run's objective: the Monte Carlo mean over independent draws and its standard error."""

    value: float
    se: float

    def interval(self, level: float = LEVEL) -> tuple[float, float]:
        """The normal interval of the mean (thousands of independent draws)."""
        from scipy.stats import norm

        half = float(norm.ppf(0.5 + level / 2)) * self.se
        return self.value - half, self.value + half


# Draws of D*'s loss. Its standard error on the 4-image set is 0.0061 at 4,096 draws and 0.0015 at 65,536 (measured
# with this function), larger than a memorizing model's distance to the floor; at 262,144 it is about 0.0008, below
# the standard error of a zoo model's mean loss over its last 10% (about 0.001). 8 s on the 4-image set, 30 s on
# 2,048 images (2 cores); computed once per training set and objective in a process.
FLOOR_SAMPLES = 262144


def _floor_key(cfg: TrainConfig) -> str:
    """What D*'s loss depends on: the training set, the kernel and the objective's sigma draw and weight."""
    return json.dumps([cfg.dataset_size, cfg.image_size, cfg.dataset_seed, cfg.photos, cfg.kernel, cfg.kernel_options,
                       cfg.objective, cfg.sigma_mean, cfg.sigma_std, cfg.sigma_data], sort_keys=True)


_FLOORS: dict[tuple[str, int, int, int], Floor] = {}  # one computation per training set and objective in a process


@torch.no_grad()
def optimal_loss(cfg: TrainConfig, samples: int = FLOOR_SAMPLES, seed: int = 0, batch: int = 256) -> Floor:
    """Monte Carlo of the run's objective with D* on its training set: E w(sigma) ||D*(y + sigma n; sigma) - y||^2,
    with sigma drawn as the run draws it (unconditional D*; a conditional run's floor is at most this), with the
    standard error of the mean over the independent draws."""
    key = (_floor_key(cfg), samples, seed, batch)
    if key in _FLOORS:
        return _FLOORS[key]
    data = embedded_photos(cfg.dataset_size, size=cfg.image_size, seed=cfg.dataset_seed, photos=cfg.photos).as_tensor()
    D = OptimalDenoiser(data, dtype=torch.float64)
    kernel = make_kernel(cfg.kernel, **cfg.kernel_options)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for start in range(0, samples, batch):
        n = min(batch, samples - start)
        y = data[torch.randint(0, len(data), (n,), generator=g)].double()
        sigma = draw_sigma(cfg, kernel, n, g)
        x = y + append_dims(sigma, y.ndim) * torch.randn(y.shape, generator=g, dtype=torch.float64)
        w = append_dims(loss_weight(cfg.objective, sigma, cfg.sigma_data), y.ndim)
        losses.append((w * (D(x, sigma) - y) ** 2).mean(dim=tuple(range(1, y.ndim))))
    each = torch.cat(losses)
    _FLOORS[key] = Floor(float(each.mean()), float(each.std()) / math.sqrt(samples) if samples > 1 else math.inf)
    return _FLOORS[key]


SIGMA_BINS = (0.01, 0.1, 1.0, 10.0, 100.0)  # decade edges; each bin is measured at its geometric centre
# The norm slope scales the state by 2% (a finite difference): at sigma >> |y| the true eps (x - y) / sigma grows
# with x, slope 1, and a D = x - sigma F whose F sees only x / ||x|| (a per-sample normalization) gives slope 0.
NORM_STEP = 1.02


@dataclass(frozen=True)
class BinError:
    eps_error: float  # E ||D(y + sigma n; sigma) - y||^2 / sigma^2
    scale_spread: float  # std over draws of beta = <(x - D) / sigma, n> / <n, n>, the fitted scale of the eps
    norm_slope: float  # mean over draws of d log ||x - D(x)|| / d log ||x||: does the eps follow the state's norm?


@torch.no_grad()
def error_per_sigma(cfg: TrainConfig, D, edges=SIGMA_BINS, samples: int = 512, seed: int = 0,
                    batch: int = 128) -> dict[str, BinError]:
    """The eps error and the spread of the eps scale over the run's training images at sigma = the geometric centre
    of each bin whose centre lies inside the kernel's range, keyed by the bin ('0.1-1'): a model is not evaluated at
    noise levels it was never trained on."""
    data = embedded_photos(cfg.dataset_size, size=cfg.image_size, seed=cfg.dataset_seed, photos=cfg.photos).as_tensor()
    kernel = make_kernel(cfg.kernel, **cfg.kernel_options)
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        sigma = math.sqrt(lo * hi)
        if not kernel.sigma_min <= sigma <= kernel.sigma_max:
            continue
        g = torch.Generator().manual_seed(seed)
        errors, betas, slopes = [], [], []
        for start in range(0, samples, batch):
            n = min(batch, samples - start)
            y = data[torch.randint(0, len(data), (n,), generator=g)].double()
            noise = torch.randn(y.shape, generator=g, dtype=torch.float64)
            x = y + sigma * noise
            s = torch.full((n,), sigma, dtype=torch.float64)
            d = D(x, s)
            errors.append(((d - y) ** 2).flatten(1).mean(1) / sigma**2)
            betas.append(((x - d) / sigma * noise).flatten(1).sum(1) / (noise * noise).flatten(1).sum(1))
            scaled = NORM_STEP * x
            slopes.append(((scaled - D(scaled, s)).flatten(1).norm(dim=1) / (x - d).flatten(1).norm(dim=1)).log()
                          / math.log(NORM_STEP))
        out[f"{lo:g}-{hi:g}"] = BinError(float(torch.cat(errors).mean()), float(torch.cat(betas).std()),
                                         float(torch.cat(slopes).mean()))
    return out


HANDOVER_SIGMAS = (math.inf, 20.0, 10.0, 5.0, 2.0)  # inf: the model alone


class _Choices:
    """The bank's first `noises` noises on a run's kernel, its training set, and the nearest training image (pixel L2)
    of an ODE sample from them; D*'s own choice is the reference (D* is kernel-free in sigma-space)."""

    def __init__(self, cfg: TrainConfig, noises: int, sampler: str, nfe: int, seed: int):
        from models.noise import NoiseBank

        data = embedded_photos(cfg.dataset_size, size=cfg.image_size, seed=cfg.dataset_seed,
                               photos=cfg.photos).as_tensor()
        self.optimal = OptimalDenoiser(data, dtype=torch.float64)
        self.kernel = make_kernel(cfg.kernel, **cfg.kernel_options)
        self.x = self.kernel.initial_state(NoiseBank.draw(seed, tuple(data.shape[1:]), n=noises).eps.double())
        self.flat = data.flatten(1).double()
        self.sampler, self.nfe = sampler, nfe
        self.reference = self(self.optimal)

    @torch.no_grad()
    def __call__(self, D) -> torch.Tensor:
        from models.generate import solve

        images = solve(D, self.x, self.kernel, self.sampler, self.nfe).x
        return torch.cdist(images.flatten(1), self.flat).argmin(1)


def handover(cfg: TrainConfig, D, sigmas=HANDOVER_SIGMAS, noises: int = 256, sampler: str = "dpm3", nfe: int = 20,
             seed: int = 0) -> dict[float, float]:
    """Per sigma_h, the fraction of the bank's first `noises` noises whose sample, with D* denoising above sigma_h
    and D at and below it, has the same nearest training image (pixel L2) as D*'s own sample; both on the run's
    kernel and its grid, from the bank's noise (D* is kernel-free in sigma-space)."""
    choose = _Choices(cfg, noises, sampler, nfe, seed)
    out = {}
    for sigma_h in sigmas:
        def mixed(x, sigma, label=None, sigma_h=sigma_h):
            return choose.optimal(x, sigma) if float(torch.as_tensor(sigma).max()) > sigma_h else D(x, sigma)

        out[sigma_h] = float((choose(mixed) == choose.reference).double().mean())
    return out


@dataclass
class Misses:
    """Where models trained on one set leave D*'s choice of training image, and whether they leave it together."""
    noises: int
    missed: dict[str, int]  # per model: noises whose sample has another nearest training image than D*'s sample
    # per pair of models: (missed by both, expected if their misses were independent, of those both missed: the same
    # other image)
    pairs: dict[tuple[str, str], tuple[int, float, int]]
    by_count: list[int]  # by_count[k]: noises missed by exactly k of the models


def misses(cfg: TrainConfig, denoisers: dict[str, object], noises: int = 512, sampler: str = "dpm3", nfe: int = 20,
           seed: int = 0) -> Misses:
    """Each denoiser's choice of training image against D*'s, on the run config's training set and kernel."""
    choose = _Choices(cfg, noises, sampler, nfe, seed)
    picks = {name: choose(D) for name, D in denoisers.items()}
    off = {name: p != choose.reference for name, p in picks.items()}
    names = list(denoisers)
    pairs = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = off[a] & off[b]
            expected = float(off[a].double().mean() * off[b].double().mean()) * noises
            pairs[a, b] = (int(both.sum()), expected, int((picks[a][both] == picks[b][both]).sum()))
    count = torch.stack(list(off.values())).sum(0)
    return Misses(noises, {n: int(o.sum()) for n, o in off.items()}, pairs,
                  [int((count == k).sum()) for k in range(len(names) + 1)])


@dataclass
class Convergence:
    name: str
    steps: int
    final_loss: float  # mean over the last 10% of the steps
    slope: Optional[Slope]  # per doubling of steps over the last 10%, with its interval (None: across rounds)
    doubling: Optional[Slope]  # the change over the last doubling of steps (windows a doubling apart), with its
    # interval; None where the windows lie in two rounds of a progressive distillation (two teachers)
    floor: Floor  # D*'s loss on the same objective and training set (NaN where there is none)
    train_time: str = "-"  # wall seconds and threads from train_time.json (embedded zoo folders), else '-'
    final_variance: float = 0.0  # the variance of final_loss (serial correlation taken, as in `last_doubling`)
    conditional: bool = False  # a conditional run: its floor is the unconditional D*'s, above its own

    @property
    def gap(self) -> float:
        """final loss / D*'s floor."""
        return self.final_loss / self.floor.value if self.floor.value > 0 else math.nan

    def gap_interval(self, level: float = LEVEL) -> tuple[float, float]:
        """The 95% interval of final loss / floor (delta method: the two means are independent, the floor's from
        its own draws); NaN where there is no floor."""
        from scipy.stats import norm

        r = self.gap
        if not math.isfinite(r):
            return math.nan, math.nan
        relative = self.final_variance / self.final_loss ** 2 + (self.floor.se / self.floor.value) ** 2
        half = float(norm.ppf(0.5 + level / 2)) * r * math.sqrt(relative)
        return r - half, r + half


NO_FLOOR = Floor(math.nan, math.nan)


def _train_time(path: Path) -> str:
    """'<seconds> s, <threads> thread(s)' from a zoo folder's train_time.json, refused by name when malformed."""
    try:
        took = json.loads(path.read_text())
        seconds, threads = took["wall_seconds"], took["threads"]
        if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
            raise TypeError(f"'threads' must be an integer >= 1, got {threads!r}")
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds >= 0:
            raise TypeError(f"'wall_seconds' must be a number >= 0, got {seconds!r}")
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path} is not a training time: expected JSON {{\"wall_seconds\": <seconds>, "
                         f"\"threads\": <count>}} ({type(e).__name__}: {e})") from e
    return f"{seconds} s, {threads} thread{'' if threads == 1 else 's'}"


def convergence(folder: str | Path, samples: int = FLOOR_SAMPLES) -> Convergence:
    """From a training run folder (loss.jsonl, model/samenoise.json) or a checkpoint folder with its loss log (plain
    or xz-packed, as the embedded zoo ships it)."""
    folder = Path(folder)
    meta_path = next((p for p in (folder / "model" / "samenoise.json", folder / "samenoise.json") if p.is_file()), None)
    if meta_path is None or loss_log_path(folder) is None:
        raise FileNotFoundError(f"{folder} holds no samenoise.json and loss.jsonl (or loss.jsonl.xz) of a suite "
                                f"training run")
    cfg = _config(meta_path)
    losses = read_losses(folder)
    try:  # a log too short for them is refused here, naming the log
        slope, doubling = tail_slope(losses), last_doubling(losses)
    except ValueError as e:
        raise ValueError(f"{loss_log_path(folder)}: {e}") from e
    # progressive distillation changes its teacher, and so its loss's scale, every round: a trend read across two
    # rounds measures the change of teacher, not convergence (the distilled model's last doubling compared round 3
    # with round 5 and "rose"); such a figure is left out ("-")
    n = len(losses)
    per_round = cfg.steps // cfg.distill_rounds if cfg.distill_from and cfg.distill_rounds > 1 else n
    late_start, early_start, _ = windows(n)
    if late_start // per_round != (n - 1) // per_round:
        slope = None
    if early_start // per_round != (n - 1) // per_round:
        doubling = None
    timing = folder / "train_time.json"
    train_time = _train_time(timing) if timing.is_file() else "-"
    final, variance, _ = _mean_and_variance(torch.tensor(losses[late_start:],
                                                         dtype=torch.float64))
    # a distilled student's loss is measured against its teacher, not the data: it has no D* floor
    # nor has a VAE's ELBO: it is not a denoising loss
    floor = NO_FLOOR if cfg.distill_from or cfg.objective == "elbo" else optimal_loss(cfg, samples)
    return Convergence(folder.name, len(losses), final, slope, doubling, floor, train_time, variance, cfg.conditional)


def _config(meta_path: Path) -> TrainConfig:
    """The training config a checkpoint's samenoise.json records, refused by name when it has none or a bad one."""
    try:
        raw = json.loads(meta_path.read_text())
    except ValueError as e:
        raise ValueError(f"{meta_path} is not JSON ({e})") from e
    if not isinstance(raw, dict) or not isinstance(raw.get("config"), dict):
        raise ValueError(f"{meta_path} records no training config (its 'config'): not a checkpoint this suite trained")
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(raw["config"]) - names)
    if unknown:  # a misspelt key was dropped, and D*'s floor computed under the default it left in place
        raise ValueError(f"{meta_path}: its training config has keys {unknown} that no training option has; valid "
                         f"keys: {', '.join(sorted(names))}")
    try:
        return TrainConfig(**raw["config"])
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{meta_path}: its training config is refused: {e.args[0] if e.args else e}") from e


def _load(folder: str | Path):
    """(TrainConfig, float64 denoiser) of a run or checkpoint folder."""
    from models.checkpoints import load_checkpoint
    from models.training import wrap_for

    folder = Path(folder)
    model = folder / "model" if (folder / "model" / "samenoise.json").is_file() else folder
    net, meta = load_checkpoint(model)
    cfg = _config(model / "samenoise.json")
    return cfg, wrap_for(meta["config"], net.double())


BIN_SAMPLES = 512  # draws per sigma bin for --bins (the README's eps-error table)


def print_bins(folder: str | Path, samples: int = BIN_SAMPLES) -> None:
    """The model's and D*'s eps error and eps-scale spread per sigma decade."""
    cfg, D = _load(folder)
    data = embedded_photos(cfg.dataset_size, size=cfg.image_size, seed=cfg.dataset_seed, photos=cfg.photos)
    mine = error_per_sigma(cfg, D, samples=samples)
    floor = error_per_sigma(cfg, OptimalDenoiser(data.as_tensor(), dtype=torch.float64), samples=samples)
    print(f"{Path(folder).name}: per sigma bin, eps error model / D*, eps-scale spread model / D*, "
          f"eps norm slope model / D*: " + ", ".join(
              f"{k}: {mine[k].eps_error:.4f} / {floor[k].eps_error:.4f}, {mine[k].scale_spread:.4f} / "
              f"{floor[k].scale_spread:.4f}, {mine[k].norm_slope:.3f} / {floor[k].norm_slope:.3f}" for k in mine))


def _one_training_set(loaded: list[tuple[str, TrainConfig, object]]) -> None:
    """Refuse loaded (name, config, denoiser) triples unless all share one training set (and so D*) and one
    kernel."""
    key = [(c.dataset_size, c.image_size, c.dataset_seed, c.photos, c.kernel, json.dumps(c.kernel_options,
                                                                                        sort_keys=True))
           for _, c, _ in loaded]
    if len(set(key)) != 1:  # one kernel too: every model is sampled from the same initial states on one grid
        raise ValueError("--misses compares models of one training set and kernel; these have (size, image size, "
                         "dataset seed, photos, kernel, kernel options) "
                         + ", ".join(f"{n}: {k}" for (n, _, _), k in zip(loaded, key)))


def print_misses(loaded: list[tuple[str, TrainConfig, object]]) -> None:
    m = misses(loaded[0][1], {name: D for name, _, D in loaded})
    print(f"of {m.noises} noises, missed D*'s training image: " + ", ".join(f"{n} {k}" for n, k in m.missed.items()))
    for (a, b), (both, expected, same) in m.pairs.items():
        print(f"{a} and {b}: both miss {both} (independent misses: {expected:.1f}), the same other image on {same}")
    print("missed by exactly 0, 1, ... of the models: " + ", ".join(str(k) for k in m.by_count))


def print_handover(folder: str | Path) -> None:
    cfg, D = _load(folder)
    shares = handover(cfg, D)
    print(f"{Path(folder).name}: the same nearest training image as D*'s sample, D* above sigma_h: " + ", ".join(
        f"{'model alone' if math.isinf(h) else f'sigma_h {h:g}'}: {share:.3f}" for h, share in shares.items()))


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.convergence", description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="training run or checkpoint folders (with loss.jsonl)")
    parser.add_argument("--samples", type=_at_least_one, default=None,
                        help=f"Monte Carlo draws of D*'s loss (default {FLOOR_SAMPLES}) and of each --bins bin "
                             f"(default {BIN_SAMPLES})")
    parser.add_argument("--bins", action="store_true",
                        help="also print the eps error and eps-scale spread per sigma decade, model and D*")
    parser.add_argument("--handover", action="store_true",
                        help="also print how often the model's sample keeps D*'s training image when D* denoises "
                             "above sigma_h (20, 10, 5, 2) and the model below")
    parser.add_argument("--misses", action="store_true",
                        help="also print, for models of one training set, the noises on which each leaves D*'s "
                             "training image and how many of those the models share (512 noises)")
    args = parser.parse_args(argv)
    flags = [f"--{n}" for n in ("bins", "handover", "misses") if getattr(args, n)]
    if args.misses and len(args.folders) < 2:
        parser.error(f"--misses compares at least 2 models; got {len(args.folders)}")
    try:  # loaded and checked before the table, which can take minutes
        loaded = [(Path(f).name, *_load(f)) for f in args.folders] if flags else []
        if args.misses:
            _one_training_set(loaded)
    except (FileNotFoundError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    for name, cfg, _ in loaded:
        if cfg.objective == "elbo":
            parser.exit(2, f"error: {' and '.join(flags)} compare{'s' if len(flags) == 1 else ''} a denoiser with D*; "
                           f"{name} is a VAE (objective 'elbo'), which has none: run the table without "
                           f"{' and '.join(flags)}\n")
        if cfg.conditional:
            verb = "compares" if len(flags) == 1 else "compare"
            parser.exit(2, f"error: {' and '.join(flags)} {verb} an unconditional model with the unconditional D*; "
                           f"{name} is conditional ({cfg.dataset_size} images in classes of {cfg.photos_per_class} "
                           f"photos): run the table without {' and '.join(flags)}\n")
    print("| model | steps | loss, last 10% | slope per doubling, last 10% [95% interval] | change over the last "
          "doubling [95% interval] | D* floor [95% interval] | loss / floor [95% interval] | train time |")
    print("|---|---|---|---|---|---|---|---|")
    for folder in args.folders:
        try:
            c = convergence(folder, args.samples or FLOOR_SAMPLES)
        except (FileNotFoundError, ValueError) as e:
            parser.exit(2, f"error: {e}\n")
        slope, doubling = ("-" if v is None else f"{v.value:+.4f} [{v.low:+.4f}, {v.high:+.4f}] {v.verdict}"
                           for v in (c.slope, c.doubling))
        (f_lo, f_hi), (g_lo, g_hi) = c.floor.interval(), c.gap_interval()
        # a conditional run's own floor (each class's D*) is lower than the unconditional one printed
        which = " (unconditional D*)" if c.conditional else ""
        floor = "-" if math.isnan(c.floor.value) else f"{c.floor.value:.4f} [{f_lo:.4f}, {f_hi:.4f}]{which}"
        gap = "-" if math.isnan(c.gap) else f"{c.gap:.3f} [{g_lo:.3f}, {g_hi:.3f}]"
        print(f"| {c.name} | {c.steps} | {c.final_loss:.4f} | {slope} | {doubling} | {floor} | {gap} | "
              f"{c.train_time} |")
    for folder in args.folders if args.bins else ():
        print_bins(folder, args.samples or BIN_SAMPLES)
    for folder in args.folders if args.handover else ():
        print_handover(folder)
    if args.misses:
        print_misses(loaded)


if __name__ == "__main__":
    main()

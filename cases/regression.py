"""Checkpoint regression (bench/test_regression.py): the case a golden file and a metric stand for. The candidate is
compared with the samples the golden file recorded, on the same noises; its bar comes from the command line."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from cases import Bar, Case, Run
from models.scores import SSCD_THRESHOLD_LARGE

# case metric -> (the option holding its bar, the bar's source)
GOLDEN_BARS = {
    "golden_rp": ("--golden-rp", "--golden-rp (default 0.6, the suite's RP score bar below Fig. 3's 0.70, Sec. 2.2)"),
    "golden_mae": ("--golden-mae", "--golden-mae (default 0.6, the suite's MAE score bar below Fig. 3's 0.64, "
                                   "Sec. 2.2; on thumbnails of at most 16 px, the paper's MAE score only for images "
                                   "that small)")}


def similarity_threshold(sample_side: int, latent: bool = False) -> Optional[float]:
    """The SSCD threshold of a candidate whose samples are `sample_side` px: the paper's 0.4 above CIFAR's 32 px
    (App. A.1-A.2: ImageNet and Stable Diffusion), else None, the default 0.6 (Sec. 2.1). A latent model's images are
    its VAE's decodes of latents `sample_side` wide, 8 times wider for Stable Diffusion's (256 px from 32 x 32
    latents): always above 32 px."""
    return SSCD_THRESHOLD_LARGE if latent or sample_side > 32 else None


def regression_threshold(metric: str, model) -> Optional[float]:
    """The SSCD threshold of a regression case: for the RP case, the one of the candidate's sample size (a `model`
    with `sample_shape` and `decodes`, as the suite loads it); the MAE case reads none."""
    return similarity_threshold(model.sample_shape[-1], model.decodes) if metric == "golden_rp" else None


def candidate_name(candidate: str) -> str:
    """How a golden file names the model it was recorded from: a zoo entry by its name, a suite checkpoint folder by
    its full path (the trainer names every folder it writes `model`, so a folder's own name tells none apart)."""
    return str(Path(candidate).resolve()) if (Path(candidate) / "samenoise.json").is_file() else candidate


def regression_case(golden_file: str, metric: str, bar: float, candidate: Optional[Run] = None,
                    golden: Optional[Run] = None, threshold: Optional[float] = None) -> Case:
    """The regression case of one golden file and metric; its runs (the candidate's, the golden file's) are known
    once the candidate is loaded, and empty before. `threshold`: the per-pair SSCD threshold when not the default."""
    if metric not in GOLDEN_BARS:
        raise ValueError(f"unknown regression metric {metric!r}; valid metrics: {', '.join(GOLDEN_BARS)}")
    runs = (candidate, golden) if candidate and golden else ()
    params = {"golden": str(golden_file)} | ({"threshold": threshold} if threshold is not None else {})
    return Case("regression", f"golden file {golden_file}", metric, runs, Bar(">=", bar, GOLDEN_BARS[metric][1]),
                params=params)


def item_id(golden_file: Optional[str], metric: str) -> str:
    """The test id of a regression item: `regression/<file>/rp` (select a metric with its marker, -m golden_rp)."""
    return f"regression/{golden_file or '-'}/{metric.removeprefix('golden_')}"

"""The paper's claims as data: rows naming the claim, its figure or section, what is compared, the
metric and the bar with its source. bench/ turns each row into one parametrized test.

Bars, each with its source (the paper's text is in ../shared/paper):
- RP and MAE *score* bars: 0.6. Sec. 2.2 / Fig. 3: among seven CIFAR-10 models the least similar pair
  (CT vs U-ViT) still scores RP 0.70 and MAE 0.64; 0.6 is the suite's bar below both, the same number
  as the per-pair SSCD threshold.
- The per-pair thresholds inside the scores (SSCD > 0.6, MAE < 15, 0.4 for ImageNet and Stable
  Diffusion) live in models/scores.py with their sources.
- Where the paper states a direction rather than a number (hard inpainting lower than easy,
  fine-tuning lowers RP and raises GL, ...), the case asserts the direction between two measurements.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from typing import Any, Optional

OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}

# The parts of the paper a case belongs to, as the report's scorecard groups them: a title, and the paper's own
# number where it gives one (quoted from its text).
PARTS = {
    "C2": ("Unconditional models, same noise (Sec. 2)",
           "RP 0.70 and MAE score 0.64 for the least similar pair of seven CIFAR-10 models, CT vs U-ViT (Sec. 2.2, "
           "Fig. 3)"),
    "NFE": ("Across NFE (App. A.4)", "reproducible across NFE (Fig. 12; no number given)"),
    "encoding": ("Unique encoding (Sec. 2.2)", "very similar hyperplane maps (Fig. 4; no number given)"),
    "manifold": ("Manifold reproducibility (App. A.3)", "RP_manifold high along slerp paths (Fig. 11)"),
    "C3": ("Two regimes (Sec. 3)", "RP high at both ends of the size axis; GL near 0 when memorizing, near 1 when "
                                   "generalizing (Fig. 2, 5)"),
    "theorem1": ("Theorem 1: the optimal denoiser D*", "exact: D*'s samples are training images"),
    "conditional": ("Conditional models (Sec. 4)", "RP_cond and RP_between high (Fig. 6; no number given)"),
    "inverse": ("Inverse problems, deterministic DPS (Sec. 4)",
                "reproducible within an architecture family, less across; hard masks less than easy (Fig. 25)"),
    "finetune": ("Fine-tuning (Sec. 4)", "partial fine-tuning lowers RP and raises GL when memorizing (Fig. 8)"),
    "control": ("Controls (App. C)", "no reproducibility without a shared noise space (Fig. 17)"),
    "real": ("Real checkpoints (App. A.1, A.2)",
             "81% of EDM vs ADM ImageNet pairs above SSCD 0.4 (App. A.1); Stable Diffusion v1-3 vs v1-4 0.63, "
             "pairs among v1-1..v1-3 below 0.21 (App. A.2)"),
    "regression": ("Checkpoint regression", ""),
}
# The paper's own values where it gives one, by (part, metric), for the report's forest plots: Fig. 3's least similar
# CIFAR-10 pair (CT vs U-ViT) scores RP 0.70 and MAE 0.64 (Sec. 2.2).
PAPER_VALUES = {("C2", "rp"): 0.70, ("C2", "mae"): 0.64}
CONDITIONAL_METRICS = ("rp_cond", "rp_between", "rp_between_other", "layout_mae")

SCORE_BAR = 0.6
SCORE_BAR_SOURCE = ("Sec. 2.2, Fig. 3: the least similar of seven CIFAR-10 models score RP 0.70 and MAE 0.64; "
                    "the suite's bar is 0.6")


@dataclass(frozen=True)
class Run:
    """One model's samples: a zoo entry (or 'optimal-<dataset>'), a sampler and an NFE budget."""

    model: str
    sampler: str = "dpm3"
    nfe: int = 20

    @property
    def how(self) -> str:
        return f"{self.sampler}@{self.nfe}"

    def __str__(self) -> str:
        return self.model


@dataclass(frozen=True)
class Bar:
    op: str
    value: Optional[float]  # None: the right-hand side is another measurement of the case
    source: str

    def __post_init__(self):
        if self.op not in OPS:
            raise ValueError(f"unknown comparison {self.op!r}; valid: {', '.join(OPS)}")
        value = self.value
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value)):  # NaN made every case straddle, "0.6" compared text
            raise ValueError(f"a bar's value is a finite number (or None: the case's right-hand side), got "
                             f"{value!r}")

    def holds(self, measured: float, other: Optional[float] = None) -> bool:
        return bool(OPS[self.op](measured, self.value if self.value is not None else other))


def score_bar(op: str = ">=") -> Bar:
    return Bar(op, SCORE_BAR, SCORE_BAR_SOURCE)


DEFAULT_NOISES = 128  # noises per case on a CPU run; the paper uses 10,000 (Sec. 2.1): --noises 10000 on a GPU


@dataclass(frozen=True)
class Case:
    """A claim row. `runs` are the sample sets it compares; `versus` (for directional cases) are the runs
    of the measurement on the right-hand side; `params` hold what else the part needs (mask, label...)."""

    claim: str  # C2, C3, C4, NFE, encoding, theorem1, control, real
    source: str  # the paper's section / figure
    metric: str  # rp, mae, gl, rp_cond, rp_between, ...
    runs: tuple[Run, ...]
    bar: Bar
    versus: tuple[Run, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    title: str = ""  # overrides the generated middle part of the id
    marks: tuple[str, ...] = ()  # pytest marker names (slow, weights, gpu)
    # this case's number of noises at the default DEFAULT_NOISES (None: the run's --noises); a run with more noises
    # than the default scales a count up to the default by the same factor, and gives a count above it (a floor set
    # for power) the run's own --noises where that is larger (Measure.n)
    noises: Optional[int] = None
    rhs: str = ""  # overrides the generated right-hand side of the id
    tag: str = ""  # the axis a case tests, in its id for -k (e.g. C2's arch, kernel, sampler, seed, distill)
    group: str = ""  # the scorecard row (a key of PARTS) where the claim and metric do not tell it

    @staticmethod
    def _side(runs: tuple[Run, ...]) -> str:
        if not runs:
            return ""
        if len({r.how for r in runs}) == 1:
            return "~".join(r.model for r in runs) + f"/{runs[0].how}"
        return "~".join(f"{r.model}/{r.how}" for r in runs)

    @property
    def id(self) -> str:
        what = self.title or self._side(self.runs)
        # what a case samples and scores under: the mask, the region scored where it is not the mask's own
        # (hard against easy scores both on the easy square), the training-set size, the label
        extra = "".join(f"[{k}={v}]" for k, v in self.params.items() if k in ("mask", "score_mask", "size", "label"))
        rhs = self.rhs or (f"{self.bar.value:g}" if self.bar.value is not None
                           else f"{self.metric}({self._side(self.versus)})")
        tag = f"{self.tag}/" if self.tag else ""
        return f"{self.claim}/{tag}{what}{extra}: {self.metric}{self.bar.op}{rhs}"

    @property
    def figure(self) -> str:
        """The paper's figure this case measures: the first one its source names ('Fig. 2a' -> 'Fig. 2'), or ''.
        The report draws each figure from the cases that name it."""
        found = re.search(r"Fig\. (\d+)", self.source)
        return f"Fig. {found[1]}" if found else ""

    @property
    def part(self) -> str:
        """The scorecard row (a key of PARTS) this case belongs to."""
        if self.group:
            return self.group
        if self.claim != "C4":
            return self.claim
        if "mask" in self.params:
            return "inverse"
        return "conditional" if self.metric in CONDITIONAL_METRICS else "finetune"

    @property
    def models(self) -> tuple[str, ...]:
        """Every model the case samples: its runs', its versus side's, a control's `partner` and the models of a
        control's `reference` pair ('a~b')."""
        partner = (self.params["partner"],) if self.params.get("partner") else ()
        reference = tuple(str(self.params["reference"]).split("~")) if self.params.get("reference") else ()
        return tuple(dict.fromkeys(tuple(r.model for r in self.runs + self.versus) + partner + reference))


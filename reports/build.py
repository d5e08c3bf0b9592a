"""The run's report: one HTML page with the run's metadata, every case (failing first) and the paper's
figures drawn from the run's own data (results JSON + sample store). A figure whose data did not run says
so instead of being drawn. Rebuild without rerunning anything:

    python -m reports.build reports/out/latest/results.json --cache-dir .cache/samenoise [--out DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import shutil
import tempfile
import time
from collections import defaultdict
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

import numpy as np

from cases import PAPER_VALUES, PARTS
from cases.names import family, parse
from fixtures.metrics import LOSS_CURVE_STRIDE, METRICS
from models.atomic import STALE_SECONDS, UMASK, atomic_write, file_lock
from models.store import SampleSet, SampleStore, StoreError
from reports.schema import MEASURED, OUTCOMES, ResultsError, load_results

# one error type for whatever the report cannot use: a results file, a store entry, a golden file
ReportError = ResultsError
DEFAULT_CACHE = ".cache/samenoise"  # a results file without meta.cache_dir (the store of the current folder)


class StoredSets:
    """Store entries by the key hashes the results name. Every file read through it is noted in `read` with its
    size and recorded sha256 (`_stat`; None: absent), so that figures drawn from them can be reused only while they
    stay as they were."""

    def __init__(self, cache_dir: Path):
        self.root = Path(cache_dir) / "samples"
        self.read: dict[str, Optional[list]] = {}

    def note(self, path: Path) -> None:
        self.read[str(path)] = _stat(path)

    def get(self, key_hash: str) -> SampleSet:
        path = self.root / f"{key_hash}.npz"
        self.note(path)
        if not path.is_file():
            raise ReportError(f"sample store entry {path} is missing (was the run's --cache-dir another folder?)")
        try:
            return SampleStore.read(path)
        except StoreError as e:
            raise ReportError(str(e)) from e


def _stat(path: Path) -> Optional[list]:
    """What a file the figures read holds, as far as kept figures care: its size and its recorded sha256 (a sample
    store entry's over key, ids, NFE and images, a golden file's over its header, ids, embeddings and thumbnails; a
    read checks it), or None when it is missing. Not its modification time, which every run that reads a store
    entry sets (models.store: the mark that `prune` goes by)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return [st.st_size, str(z["sha256"])]
    except Exception:  # not an entry one can read: its size and time, as it is
        return [st.st_size, st.st_mtime_ns]


# The figure sets kept in <cache-dir>/figures, the most recently used first: 2.8 MB each on the embedded zoo's
# main job (measured), so the folder stays under about 25 MB.
FIGURE_SETS_KEPT = 8
# Run metadata that changes from one run to the next and that no figure draws: left out of the figures' key. The
# run's kind is among them: the claim cases of `pytest bench -k "not throughput"` (a subset run) are the same records
# as the main job's, so a subset run after the main job copies its figures rather than drawing them again.
VOLATILE_META = ("run", "kind", "date", "seconds", "git_revision", "cache_dir")
# What the figures are drawn with, besides the records, the files they read and the suite's own code.
DRAWING_PACKAGES = ("matplotlib", "numpy", "pillow", "scikit-image", "scikit-learn")


@lru_cache(maxsize=1)
def _code_digest() -> str:
    """The suite's own code that the figures may depend on: every module of its packages (without docstrings and
    comments, which draw nothing: models.versions.source_digest)."""
    from models.versions import source_digest

    root = Path(__file__).resolve().parent.parent
    return source_digest(p for package in ("reports", "cases", "fixtures", "models")
                         for p in (root / package).rglob("*.py"))


def _drawing_setup() -> dict[str, Any]:
    """The drawing packages' versions and matplotlib's style settings (a matplotlibrc changes every figure)."""
    import matplotlib

    from models.versions import package_versions

    style = {k: repr(v) for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}
    return {"versions": package_versions(DRAWING_PACKAGES), "style": style}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _grid(images: np.ndarray, side: int = 8) -> np.ndarray:
    n = min(len(images), side * side)
    h, w, c = images.shape[1:]
    out = np.full((side * (h + 1), side * (w + 1), c), 255, np.uint8)
    for k in range(n):
        r, q = divmod(k, side)
        out[r * (h + 1):r * (h + 1) + h, q * (w + 1):q * (w + 1) + w] = images[k]
    return out


class Report:
    def __init__(self, doc: dict[str, Any], samples: StoredSets, out: Path, figure_cache: Optional[Path] = None):
        """`figure_cache`: a folder where the figures drawn for one set of records are kept, to be copied instead
        of drawn again for a run with the same records, files and code (a rerun on a warm store); None: always
        draw."""
        self.doc, self.samples, self.out = doc, samples, Path(out)
        self.records = doc["cases"]  # every collected case, errors and skips included
        self.cases = [c for c in self.records if c["outcome"] in MEASURED]  # the ones with a value to draw
        self.figures: list[tuple[str, str, Optional[str]]] = []  # (title, caption, png name or None)
        self.notes: list[str] = []
        self.figure_cache = Path(figure_cache) if figure_cache is not None else None
        self.reused: Optional[Path] = None  # the kept set the figures were copied from
        self.failed = False  # a figure raised: its caption says so, and the set is not kept

    def save(self, fig, name: str) -> str:
        target = self.out / name
        atomic_write(target, lambda f: fig.savefig(f, format="png", dpi=110, bbox_inches="tight"))
        _plt().close(fig)
        return name

    def add(self, title: str, draw, missing: str, figures: tuple[str, ...] = ()) -> None:
        """Draw a figure, or record why it is absent (the part did not run, or its data is incomplete). A draw
        returns the PNG name, None (nothing ran), or (name, note) when it shows only part of the run's data; cases
        of its paper `figures` that ended in an error are named under it (drawn without them)."""
        try:
            name = draw()
        except ReportError as e:
            self.figures.append((title, f"not drawn: {e}", None))
            self.failed = True
            return
        except Exception as e:  # one figure's failure (a store entry missing noises, a label matplotlib cannot
            # typeset) leaves the rest of the report
            self.figures.append((title, f"not drawn ({type(e).__name__}: {e})", None))
            self.failed = True
            return
        name, note = name if isinstance(name, tuple) else (name, "")
        errored = [c["id"] for c in self.records if c["figure"] in figures and c["outcome"] == "error"]
        if name and errored:
            note = "; ".join(([note] if note else []) + [f"partial: drawn without the cases that ended in an error: "
                                                          f"{', '.join(errored)}"])
        self.figures.append((title, note if name or note else missing, name))

    # --- figures --------------------------------------------------------------------------------
    def of_figure(self, *figures: str) -> list[dict]:
        """The measured cases that name one of these paper figures (their record's `figure`)."""
        return [c for c in self.cases if c["figure"] in figures]

    def pair_cases(self, metric: str):
        """The same-noise pairs of Fig. 3 (the embedded zoo) and Fig. 14 (Table 1's published checkpoints)."""
        return [c for c in self.of_figure(*PAIR_FIGURES) if c["metric"] == metric and len(c["runs"]) == 2
                and not c.get("versus_runs") and c["extra"].get("samples")]

    def fig_grids(self):
        """Figures 1 and 16: 8 x 8 grids from noise ids 0-63, model beside model."""
        seen, grids, short = set(), [], []
        for c in self.pair_cases("rp"):
            for run, h in zip(c["runs"], c["extra"]["samples"]):
                label = f"{run['model']} {run['sampler']}@{run['nfe']}"
                if label not in seen:
                    seen.add(label)
                    s = self.samples.get(h)  # a stored set may hold more than the case's n noises: show only those
                    ids = [i for i in range(min(64, c["n"])) if i in set(s.ids.tolist())]
                    if len(ids) < 64:
                        short.append(f"{label} ({len(ids)})")
                    grids.append((label, _grid(s.take(ids))))
        if not grids:
            return None
        plt = _plt()
        cols = min(4, len(grids))
        rows = -(-len(grids) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (label, img) in zip(axes.flat, grids):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(label, fontsize=7)
        note = (f"partial: the run sampled fewer than the 64 noise ids of a full grid for {', '.join(short)}; "
                f"the empty cells were not sampled" if short else "")
        return self.save(fig, "grids.png"), note

    def fig_matrices(self):
        """Figures 3, 14, 15: RP and MAE score matrices over every model pair of the run."""
        values = {m: {} for m in ("rp", "mae")}
        for metric in values:
            for c in self.pair_cases(metric):
                a, b = (f"{r['model']}/{r['sampler']}@{r['nfe']}" for r in c["runs"])
                values[metric][(a, b)] = values[metric][(b, a)] = c["value"]
        names = sorted({a for a, _ in values["rp"]} | {a for a, _ in values["mae"]})
        if len(names) < 2:
            return None
        plt = _plt()
        side = 2 + 0.45 * len(names)
        # one matrix above the other, each as wide as the page, both labelled: readable without enlarging
        fig, axes = plt.subplots(2, 1, figsize=(side, 2 * side + 1))
        for ax, metric in zip(axes, ("rp", "mae")):
            m = np.full((len(names), len(names)), np.nan)
            for i, a in enumerate(names):
                for j, b in enumerate(names):
                    m[i, j] = values[metric].get((a, b), np.nan)  # the diagonal was never measured: blank
            im = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            for i in range(len(names)):
                for j in range(len(names)):
                    if not np.isnan(m[i, j]):
                        # dark text on viridis' light upper half, light text on its dark lower half (legibility)
                        ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7,
                                color="k" if m[i, j] > 0.5 else "w")
            ax.set_title({"rp": "RP score", "mae": "MAE score"}[metric] + " (blank: pair not run, or a model with "
                         "itself)", fontsize=9)
            fig.colorbar(im, ax=ax, shrink=0.8)
        return self.save(fig, "matrices.png")

    def fig_regimes(self):
        """Figures 2, 5: RP between models, RP with D* and GL against the training-set size."""
        series = defaultdict(dict)  # (panel, line) -> {size: value}; a case's own side is measured at its size
        sizeless = []  # cases of these figures that name no training-set size (the seed pairs): named, not drawn
        for c in self.of_figure("Fig. 2", "Fig. 5"):
            size = c["params"].get("size")
            if size is None:
                sizeless.append(c["id"])
                continue
            models = [r["model"] for r in c["runs"]]
            # the slow sweep's models (`<family>-n<size>`) have a line of their own: at a size that the shipped
            # models also have (4 images: `-m4` and `-n4`), one would hide the other
            sweep = " (sweep)" if any(getattr(parse(m), "kind", "") == "sweep" for m in models) else ""
            if c["metric"] == "gl":
                series[("GL", family(models[0]) + sweep)][size] = c["value"]
            elif any(getattr(parse(m), "kind", "") == "optimal" for m in models) or c["metric"] == "rp_optimal":
                series[("RP with D*", family(models[0]) + sweep)][size] = c["value"]
            elif c["metric"] == "rp":
                series[("RP", "~".join(map(family, models)) + sweep)][size] = c["value"]
        if not series:
            return None
        sizes = {size for pts in series.values() for size in pts}
        note = "; ".join(([] if len(sizes) > 2 else [
            f"the slow sweep (pytest bench -m slow) did not run: only the "
            f"{' and '.join(f'{n:,}' for n in sorted(sizes))}-image ends of the size axis are drawn"]) + ([
            f"not drawn, as they name no training-set size (see the case tables): {', '.join(sizeless)}"]
            if sizeless else []))
        plt = _plt()
        kinds = sorted({k for k, _ in series})
        fig, axes = plt.subplots(1, len(kinds), figsize=(4 * len(kinds), 3.2), squeeze=False)
        for ax, kind in zip(axes[0], kinds):
            for (k, label), pts in sorted(series.items()):
                if k == kind:
                    pts = sorted(pts.items())
                    # markers only: a line would join sizes that were not measured (the dip of Fig. 2a lies between)
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", label=label)
            ax.set_xscale("log", base=2)
            ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel("training images")
            ax.set_ylabel(kind, fontsize=8)
            ax.set_title(kind, fontsize=9)
            ax.legend(fontsize=6)
        return self.save(fig, "regimes.png"), note

    def fig_hyperplane(self):
        """Figure 4: each model's map from the noise hyperplane to its nearest anchor image (the first plane of a case
        over several)."""
        cases = [c for c in self.of_figure("Fig. 4") if "map" in c["extra"]]
        if not cases:
            return None
        plt = _plt()
        fig, axes = plt.subplots(1, len(cases), figsize=(3.2 * len(cases), 3.2), squeeze=False)
        for ax, c in zip(axes[0], cases):
            n = c["extra"]["points"]
            nearest = np.asarray(c["extra"]["map"]).reshape(n, n)
            sim = np.asarray(c["extra"]["similarity"]).reshape(n, n)
            rgb = np.zeros((n, n, 3))
            for k in range(3):
                rgb[..., k] = (nearest == k) * np.clip(sim, 0, 1)
            ax.imshow(rgb, origin="lower", extent=(-0.1, 1.1, -0.1, 1.1))
            planes = c["extra"].get("planes", 1)
            ax.set_title(f"{c['runs'][0]['model']}" + (f", plane 1 of {planes}" if planes > 1 else "")
                         + f"\nneighbour RP {c['value']:.2f}" + (" (all planes)" if planes > 1 else ""), fontsize=7)
            ax.set_xlabel("alpha")
            ax.set_ylabel("beta")
        kappas = "; ".join(f"{a['runs'][0]['model']} vs {a['runs'][1]['model']} kappa {a['value']:.2f}"
                           for a in self.of_figure("Fig. 4") if a["metric"] == "agreement")
        fig.suptitle("colour: the nearest of the three anchor images (red, green, blue: anchor noise 0, 1, 2); "
                     "brightness: its SSCD similarity" + (f"\nmaps agree: {kappas}" if kappas else ""), fontsize=7)
        fig.tight_layout()
        return self.save(fig, "hyperplane.png")

    def fig_manifold(self):
        """Figure 11: RP at each point of the slerp paths between two noises, for each model pair."""
        cases = [c for c in self.of_figure("Fig. 11") if c["extra"].get("per_point")]
        if not cases:
            return None
        plt = _plt()
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for c in cases:
            pts = c["extra"]["per_point"]
            ax.plot(np.linspace(0, 1, len(pts)), pts, "o-", ms=3,
                    label=" vs ".join(r["model"] for r in c["runs"]) + f" ({c['value']:.2f})")
        for bar in sorted({c["bar"]["value"] for c in cases if c["bar"]["value"] is not None}):
            ax.axhline(bar, color="red", lw=1)  # the cases' own bars
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("position along the slerp path between two noises")
        ax.set_ylabel("RP over the paths")
        ax.legend(fontsize=6)
        fig.tight_layout()
        return self.save(fig, "manifold.png")

    def fig_nfe(self):
        """Figure 12: the same noises across NFE."""
        cases = sorted(self.of_figure("Fig. 12"), key=lambda c: c["runs"][0]["nfe"])
        if not cases:
            return None
        # the first 8 noise ids the cases sampled (a stored set may hold more than a case's n)
        shown = list(range(min(8, min(c["n"] for c in cases))))
        rows = [(f"{c['runs'][0]['sampler']}@{c['runs'][0]['nfe']}\nRP {c['value']:.2f}",
                 self.samples.get(c["extra"]["samples"][0])) for c in cases]
        last = cases[-1]
        ref = last["runs"][1]
        rows.append((f"{ref['sampler']}@{ref['nfe']}", self.samples.get(last["extra"]["samples"][1])))
        plt = _plt()
        fig, axes = plt.subplots(len(rows), 1, figsize=(8, 1.1 * len(rows)), squeeze=False)
        for ax, (label, s) in zip(axes[:, 0], rows):
            ax.imshow(np.concatenate(list(s.take(shown)), axis=1), interpolation="nearest")
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, 0].set_title(f"{last['runs'][0]['model']}, noise ids 0-{len(shown) - 1}; RP of each row against the "
                             "last", fontsize=7)
        return self.save(fig, "nfe.png")

    def fig_loss(self):
        """Figure 13: the training loss of the model on the small set against the model on the large one, one panel
        per case, from the curves the cases record (every LOSS_CURVE_STRIDE-th step); the steps each case averages
        are drawn bold, the rest as a running mean over 2% of the run beside the raw curve."""
        measured = [c for c in self.of_figure("Fig. 13") if c["metric"] == "loss"]
        cases = [c for c in measured
                 if c["extra"].get("loss") and ((c.get("versus") or {}).get("extra") or {}).get("loss")]
        if not cases:
            return (None, f"not drawn: {len(measured)} loss case(s) ran, none with both recorded curves") if measured \
                else None
        plt = _plt()
        fig, axes = plt.subplots(1, len(cases), figsize=(3.4 * len(cases), 2.8), squeeze=False)
        for ax, c in zip(axes[0], cases):
            last = c["params"].get("last_steps", 0)
            for run, side, colour in ((c["runs"][0], c, "C0"), (c["versus_runs"][0], c["versus"], "C1")):
                curve = np.asarray(side["extra"]["loss"], dtype=float)
                steps = np.arange(len(curve)) * LOSS_CURVE_STRIDE + 1
                ax.plot(steps, curve, color=colour, alpha=0.2, lw=0.5)
                w = max(1, len(curve) // 50)
                mean = np.convolve(curve, np.ones(w) / w, mode="valid")
                ax.plot(steps[w - 1:], mean, color=colour, lw=1, label=f"{run['model']}: {side['value']:.4f}")
                tail = steps >= steps[-1] + LOSS_CURVE_STRIDE - last
                ax.plot(steps[tail], np.full(tail.sum(), side["value"]), color=colour, lw=3)
            ax.set_xscale("log")
            ax.set_xlabel("training step", fontsize=7)
            ax.set_ylabel("loss", fontsize=7)
            ax.tick_params(labelsize=6)
            ax.legend(fontsize=6, title=f"mean of the last {last} steps", title_fontsize=6)
            ax.set_title(f"loss of {c['runs'][0]['model']} < loss of {c['versus_runs'][0]['model']}: {c['outcome']}",
                         fontsize=7)
        fig.tight_layout()
        left = [c["id"] for c in measured if c not in cases]
        return self.save(fig, "loss.png"), ("partial: no recorded curves for " + "; ".join(left)) if left else ""

    def fig_inverse(self):
        """Figure 7: the observation, the truth and each model's DPS result, for the first noises."""
        from models.datasets import embedded_photos
        from models.inverse import make_mask

        seen, cases = set(), []  # one row per mask and model pair, from the cases that sampled it with its own noise
        for c in self.cases:
            pair = (c["params"].get("mask"), tuple(r["model"] for r in c["runs"]))
            if (c["part"] == "inverse" and c["metric"] == "rp" and pair[0] and not c["params"].get("pairing")
                    and len(c["extra"].get("samples", [])) >= 2 and pair not in seen):
                seen.add(pair)
                cases.append(c)
        if not cases:
            return None
        plt = _plt()
        fig, axes = plt.subplots(len(cases), 1, figsize=(8, 2.0 * len(cases)), squeeze=False)
        for ax, c in zip(axes[:, 0], cases):
            a, b = (self.samples.get(h) for h in c["extra"]["samples"])
            size = a.images.shape[1]
            truth = embedded_photos(8, size=size, seed=self.doc["meta"]["constants"]["inverse_truth_seed"]).images
            keep = make_mask(c["params"]["mask"], size)[0, 0].numpy()[..., None]
            observed = (truth * keep + 127 * (1 - keep)).astype(np.uint8)
            rows = [np.concatenate(list(r), axis=1) for r in (observed, truth, a.take(range(8)), b.take(range(8)))]
            ax.imshow(np.concatenate(rows, axis=0), interpolation="nearest")
            ax.set_title(f"{c['params']['mask']} mask: observation / truth / {c['runs'][0]['model']} / "
                         f"{c['runs'][1]['model']} (RP {c['value']:.2f}; {c['id'].split(': ', 1)[1]} "
                         f"{c['outcome']})", fontsize=7)
            ax.axis("off")
        return self.save(fig, "inverse.png")

    def fig_conditional(self):
        """Figures 6, 20, 21: one noise under every label, for each conditional model."""
        cases = [c for c in self.of_figure("Fig. 6") if c["metric"] == "rp_cond"]
        if not cases:
            return None
        c = cases[0]
        hashes = c["extra"]["samples"]
        half = len(hashes) // 2
        plt = _plt()
        fig, axes = plt.subplots(2, 1, figsize=(8, 5), squeeze=False)
        for ax, run, group in zip(axes[:, 0], c["runs"], (hashes[:half], hashes[half:])):
            sets = [self.samples.get(h) for h in group]
            rows = [np.concatenate(list(s.take(range(8))), axis=1) for s in sets]  # a row per label, noises 0-7
            ax.imshow(np.concatenate(rows, axis=0), interpolation="nearest")
            ax.set_title(f"{run['model']}: rows = labels 0-{len(sets) - 1}, columns = noise ids 0-7", fontsize=7)
            ax.axis("off")
        return self.save(fig, "conditional.png")

    def worst_pair_images(self, c) -> tuple[np.ndarray, np.ndarray]:
        """The worst pairs' images of a failing case: both from the store, or (regression) the candidate's
        samples thumbnailed beside the golden file's thumbnails."""
        ids = [i for i, _ in c["worst"][:6]]
        golden = c["extra"].get("golden")
        if golden is None:
            a, b = (self.samples.get(h) for h in c["extra"]["samples"])
            if c.get("params", {}).get("pairing") == "shifted":  # a control: a's id i against b's next id (mod n)
                order = [int(i) for i in a.ids[:c["n"]]]  # a stored set may hold more than the case's n noises
                return a.take(ids), b.take([order[(order.index(i) + 1) % len(order)] for i in ids])
            return a.take(ids), b.take(ids)
        from models.golden import Golden, GoldenError, thumbnails
        from models.atomic import file_sha256

        path = Path(golden["path"])
        self.samples.note(path)
        try:
            if file_sha256(path) != golden["sha256"]:
                raise ReportError(f"golden file {path} changed since the run (sha256 differs)")
            g = Golden.load(path)
        except (OSError, GoldenError) as e:
            raise ReportError(f"golden file {path} cannot be used ({e})") from e
        pos = {int(i): k for k, i in enumerate(g.ids)}
        return (thumbnails(self.samples.get(c["extra"]["samples"][0]).take(ids), g.thumbnails.shape[1]),
                g.thumbnails[[pos[i] for i in ids]])

    def fig_worst(self):
        """For every failing pair case (and failing checkpoint regression): its worst pairs side by side with
        their similarity; cases whose samples are gone, or whose worst pairs do not show why they failed, are named
        instead of drawn."""
        failed = [c for c in self.cases if c["outcome"] == "failed" and c["worst"]]
        # a failed case that records no pairs of images (maps, grids and paths, losses, colour layouts)
        pairless = [c["id"] for c in self.cases if c["outcome"] == "failed" and not c["worst"]]
        unpaired = [c["id"] for c in failed if len(c["extra"].get("samples", [])) != 2 and not c["extra"].get("golden")]
        failing = [c for c in failed if c["id"] not in unpaired]
        # the figure shows the least similar pairs of failed claims of high similarity; a failed claim of low
        # similarity (a '<' case) records its most similar pairs (results of earlier releases: its least similar),
        # a direction case's pairs say nothing of the other side, and a case that failed on its control alone is
        # not explained by its own pairs
        left = [c["id"] for c in failing
                if c["bar"]["value"] is None or c["bar"]["op"] in ("<", "<=") or own_side(c) == "pass"]
        failing = [c for c in failing if c["id"] not in left]
        notes = ([f"not drawn, as this figure shows the least similar pairs of failed claims of high similarity: "
                  f"{', '.join(left)} (claims of low similarity, direction cases, or cases that failed on their "
                  f"control only)"] if left else []) + \
                ([f"not drawn, as they score one model's samples alone or against several sets (no pair of sample "
                  f"sets to show): {', '.join(unpaired)}"] if unpaired else []) + \
                ([f"not drawn, as they record no per-noise pairs of images (maps, grids and paths, losses, colour "
                  f"layouts): {', '.join(pairless)}"] if pairless else [])
        if not failing:
            return (None, "; ".join(notes)) if notes else None
        drawn, skipped = [], []
        for c in failing:
            try:
                drawn.append((c, self.worst_pair_images(c)))
            except (ReportError, StoreError) as e:
                skipped.append(f"{c['id']}: {e}")
        if not drawn:
            raise ReportError("; ".join(skipped))
        self.failed = self.failed or bool(skipped)  # drawn from part of the store: not kept for a rerun
        plt = _plt()
        fig, axes = plt.subplots(len(drawn), 1, figsize=(8, 1.6 * len(drawn)), squeeze=False)  # two title lines
        for ax, (c, (a, b)) in zip(axes[:, 0], drawn):
            pairs = [np.concatenate([x, y], axis=0) for x, y in zip(a, b)]
            ax.imshow(np.concatenate(pairs, axis=1), interpolation="nearest")
            if c["extra"].get("golden"):
                under = "top: candidate, bottom: golden file"
            else:
                under = "top: " + ", bottom: ".join(f"{r['model']}/{r['sampler']}@{r['nfe']}" for r in c["runs"][:2])
            unit = METRICS[c["metric"]].unit if c["metric"] in METRICS else ""
            ax.set_title(f"{c['id']}\n{under}; noise id: {unit or 'value'}   "
                         + "  ".join(f"#{i}: {v:.2f}" for i, v in c["worst"][:6]), fontsize=6)
            ax.axis("off")
        fig.tight_layout()
        notes = (["partial: not drawn for " + "; ".join(skipped)] if skipped else []) + notes
        return self.save(fig, "worst.png"), "; ".join(notes)

    # --- page --------------------------------------------------------------------------------------
    def build(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        if not self.reuse_figures():
            self.draw_figures()
            self.keep_figures()
        return self.write_html()

    def draw_figures(self) -> None:
        self.add("Same noise, model beside model (Fig. 1, 16)", self.fig_grids, "no C2 or Table 1 pair case ran",
                 PAIR_FIGURES)
        self.add("RP and MAE score matrices (Fig. 3, 14, 15)", self.fig_matrices,
                 "fewer than two models of C2 or Table 1 ran", PAIR_FIGURES)
        self.add("Regimes against training-set size (Fig. 2, 5)", self.fig_regimes, "no C3 case ran",
                 ("Fig. 2", "Fig. 5"))
        self.add("Noise hyperplane maps (Fig. 4)", self.fig_hyperplane, "no hyperplane case ran", ("Fig. 4",))
        self.add("One noise across NFE (Fig. 12)", self.fig_nfe, "no NFE case ran", ("Fig. 12",))
        self.add("RP along slerp paths between noises (Fig. 11)", self.fig_manifold, "no manifold case ran",
                 ("Fig. 11",))
        self.add("Training loss, small set against large (Fig. 13)", self.fig_loss, "no training-loss case ran",
                 ("Fig. 13",))
        self.add("Inpainting by deterministic DPS (Fig. 7, 25)", self.fig_inverse, "no inverse-problem case ran",
                 ("Fig. 7", "Fig. 25"))
        self.add("Conditional samples (Fig. 6, 20, 21)", self.fig_conditional, "no conditional case ran", ("Fig. 6",))
        self.add("Worst pairs of failing cases", self.fig_worst, "no failing pair case")
        for part, (title, _) in PARTS.items():
            self.add(f"Forest plot: {title}", lambda part=part: self.fig_forest(part),
                     "no case of this part was measured")

    # --- figures kept for reruns -------------------------------------------------------------------
    # A rerun on a warm store has the same records and reads the same files, so it would draw the same figures:
    # the 20 figures of the main job take 5-6 s to draw (matplotlib; measured), most of a warm run's report.
    def figures_key(self) -> str:
        """What the figures are drawn from: the records (but their run times), the run's metadata (but what changes
        from run to run unseen by any figure), the suite's code and the drawing packages and style."""
        meta = {k: v for k, v in self.doc["meta"].items() if k not in VOLATILE_META}
        cases = [{k: v for k, v in c.items() if k != "seconds"} for c in self.records]
        inputs = {"meta": meta, "cases": cases, "code": _code_digest(), "drawing": _drawing_setup()}
        return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=repr).encode()).hexdigest()[:32]

    def reuse_figures(self) -> bool:
        """Copy the figures kept for these records when every file they were drawn from is as it was then (its
        size and recorded sha256; a missing file still missing)."""
        if self.figure_cache is None:
            return False
        folder = self.figure_cache / self.figures_key()
        try:
            kept = json.loads((folder / "figures.json").read_text())
            if any(_stat(Path(path)) != stat for path, stat in kept["read"].items()):
                return False
            figures = [(str(title), str(caption), name) for title, caption, name in kept["figures"]]
            for _, _, name in figures:
                if name:
                    source = folder / name
                    atomic_write(self.out / name, lambda f: f.write(source.read_bytes()))
            os.utime(folder)  # most recently used: kept longest
        except (OSError, ValueError, KeyError, TypeError):  # absent, half-pruned or foreign: draw them
            return False
        self.figures, self.reused = figures, folder
        return True

    def keep_figures(self) -> None:
        """Keep this run's figures for a rerun, unless one of them failed; never fails the report."""
        if self.figure_cache is None or self.failed:
            return
        folder = self.figure_cache / self.figures_key()
        try:
            self.figure_cache.mkdir(exist_ok=True)  # in the run's cache folder; a missing one is not made here
            tmp = Path(tempfile.mkdtemp(dir=self.figure_cache, prefix=".figures."))
        except OSError:
            return
        try:
            os.chmod(tmp, 0o777 & ~UMASK)
            for _, _, name in self.figures:
                if name:
                    shutil.copyfile(self.out / name, tmp / name)
            (tmp / "figures.json").write_text(json.dumps({"figures": self.figures, "read": self.samples.read}))
            if folder.exists():  # kept from files that have changed since: replaced
                old = Path(tempfile.mkdtemp(dir=self.figure_cache, prefix=".figures."))
                os.replace(folder, old / "set")
                shutil.rmtree(old, ignore_errors=True)
            os.rename(tmp, folder)  # whole or absent; a set kept meanwhile by another run is the same set
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            return
        self.prune_figures()

    def prune_figures(self) -> None:
        """Keep the FIGURE_SETS_KEPT most recently used sets; remove a temporary folder a killed run left."""
        now, sets = time.time(), []
        for entry in self.figure_cache.iterdir():
            try:
                age = now - entry.stat().st_mtime
            except OSError:
                continue
            if entry.name.startswith(".figures.") and age > STALE_SECONDS:
                shutil.rmtree(entry, ignore_errors=True)
            elif not entry.name.startswith(".") and entry.is_dir():
                sets.append((age, entry))
        for _, entry in sorted(sets)[FIGURE_SETS_KEPT:]:
            shutil.rmtree(entry, ignore_errors=True)

    def fig_forest(self, part: str):
        """Per case of a part: the value with its 95% interval, the control's (grey), the bar (red) or the right-hand
        side of a direction case (hollow), and the paper's number where it gives one (dotted)."""
        measured = [c for c in self.cases if c["part"] == part and isinstance(c.get("decision"), dict)]
        rows = [c for c in measured if c["metric"] not in OFF_SCALE]
        if not rows:  # nothing measured, or only cases off the 0-1 axis: the case tables list those
            return (None, f"its {len(measured)} measured case(s) are not on a 0-1 scale (training loss, layout MAE): "
                          f"see the case tables") if measured else None
        plt = _plt()
        fig, ax = plt.subplots(figsize=(9, 0.32 * len(rows) + 1.2))
        for y, c in enumerate(rows):
            lo, hi, _ = c["decision"]["interval"]
            colour = ("tab:green" if c["outcome"] == "passed" else
                      "tab:orange" if undecided(c) else "tab:red")
            ax.plot([lo, hi], [y, y], color=colour, lw=2)
            ax.plot([c["value"]], [y], "o", color=colour, ms=4)
            control = c["decision"].get("control")
            if control:
                clo, chi = control["interval"][:2]
                ax.plot([clo, chi], [y - 0.25, y - 0.25], color="grey", lw=1)
                ax.plot([control["value"]], [y - 0.25], "x", color="grey", ms=4)
            if c["bar"]["value"] is not None:
                ax.plot([c["bar"]["value"]] * 2, [y - 0.4, y + 0.4], color="red", lw=1)
            elif isinstance((c.get("versus") or {}).get("value"), (int, float)):
                ax.plot([c["versus"]["value"]], [y], "o", mfc="none", color="black", ms=5)
            paper = PAPER_VALUES.get((c["part"], c["metric"]))
            if paper is not None:
                ax.plot([paper] * 2, [y - 0.4, y + 0.4], ":", color="black", lw=1)
        ax.set_yticks(range(len(rows)), [c["id"] if len(c["id"]) <= 90 else c["id"][:89] + "…" for c in rows],
                      fontsize=6)
        ax.invert_yaxis()
        ax.set_xlabel("value with 95% interval (green: holds, red: fails, orange: undecided, its interval or its "
                      "control's straddles the bar); grey x: control; red line: bar; hollow: right-hand side; dotted: the paper's least "
                      "similar pair", fontsize=7)
        return self.save(fig, f"forest-{part}.png")

    def scorecard(self) -> str:
        """One row per part of the paper: holds / fails / not run, counts, measured range and the paper's number."""
        esc, rows = html.escape, []
        for part, (title, paper) in PARTS.items():
            group = [c for c in self.records if c.get("part") == part]
            counts = {o: sum(c["outcome"] == o for c in group) for o in OUTCOMES}
            measured = counts["passed"] + counts["failed"]
            open_cases = sum(map(undecided, group))
            if not measured:
                verdict = "errors" if counts["error"] else "not run"
            elif counts["passed"] == measured and not counts["error"]:
                verdict = "holds"
            elif counts["passed"] == 0 and open_cases == measured and not counts["error"]:
                # every case's interval (or its control's) straddles its bar: too few noises to decide
                verdict = "undecided"
            elif counts["passed"] == 0:
                verdict = "fails"
            else:
                verdict = f"holds in {counts['passed']} of {measured + counts['error']}"
            # cases claimed low against a fixed bar, and direction cases (one measurement against another), apart
            # from the levels claimed high: one range over all three would mix unlike claims
            ranges = defaultdict(list)
            for c in group:
                if c["outcome"] in MEASURED:
                    kind = (" (compared)" if c["bar"]["value"] is None
                            else " (claimed low)" if c["bar"]["op"] in ("<", "<=") else "")
                    ranges[c["metric"] + kind].append(c["value"])
            values = "; ".join(f"{m} {min(v):.3g}" + (f"-{max(v):.3g}" if f"{max(v):.3g}" != f"{min(v):.3g}" else "")
                               for m, v in ranges.items())
            count = ", ".join(f"{n} {o}" + (f" ({open_cases} undecided: an interval straddles the bar)"
                                            if o == "failed" and open_cases else "")
                              for o, n in counts.items() if n) or "none collected"
            kind = {"holds": "holds", "fails": "fails", "errors": "fails", "not run": "notrun"}.get(verdict, "partly")
            rows.append(f"<tr class='{kind}'><td>{esc(title)}</td><td>{esc(verdict)}</td><td>{esc(count)}</td>"
                        f"<td>{esc(values)}</td><td>{esc(paper)}</td></tr>")
        return ("<table><tr><th>claim</th><th>verdict</th><th>cases</th><th>measured (range)</th>"
                "<th>the paper</th></tr>" + "".join(rows) + "</table>")

    def case_tables(self) -> str:
        """The cases of each part in a collapsed section, failing first."""
        esc, out = html.escape, []
        order = {o: k for k, o in enumerate(OUTCOMES)}
        for part, (title, _) in PARTS.items():
            group = sorted((c for c in self.records if c.get("part") == part),
                           key=lambda c: (order[c["outcome"]], c["id"]))
            if not group:
                continue
            bad = sum(c["outcome"] in ("failed", "error") for c in group)
            rows = "".join(
                f"<tr class='{c['outcome']}'><td>{esc(c['outcome'])}</td><td>{esc(c['id'])}</td>"
                f"<td>{esc(c['source'])}</td><td>{esc(_value(c))}</td><td>{esc(_interval(c))}</td>"
                f"<td>{esc(_control(c))}</td><td>{esc(_bar(c))}</td><td>{c['n']}</td>"
                f"<td>{esc((c.get('decision') or {}).get('reason', ''))}</td>"
                f"<td>{esc(c['bar']['source'])}</td></tr>" for c in group)
            out.append(f"<details><summary>{esc(title)}: {len(group)} cases, {bad} failed or in error</summary>"
                       f"<table><tr><th>outcome</th><th>case</th><th>paper</th><th>measured</th>"
                       f"<th>95% interval</th><th>control</th><th>bar</th><th>pairs</th><th>decision</th>"
                       f"<th>bar source</th></tr>{rows}</table></details>")
        return "".join(out)

    def write_html(self) -> Path:
        esc = html.escape
        image = "<a href='{0}'><img src='{0}' alt='{1}'></a>"
        reused = (f"<p>Drawn for an earlier run with the same records, store entries and code; copied from "
                  f"{esc(str(self.reused))}.</p>" if self.reused else "")
        figs = "".join(f"<h3>{esc(t)}</h3>" + (image.format(esc(n), esc(t)) if n else "")
                       + (f"<p class='none'>{esc(cap)}</p>" if cap else "") for t, cap, n in self.figures)
        metadata = "".join(f"<tr><th>{esc(k.replace('_', ' '))}</th><td>{esc(_format(v))}</td></tr>"
                           for k, v in self.doc["meta"].items())
        counts = ", ".join(f"{n} {o}" for o in OUTCOMES if (n := sum(c["outcome"] == o for c in self.records)))
        why = self.doc["meta"].get("stopped_early")
        stopped = (f"<p class='none'><b>This run stopped early ({esc(str(why))}): the cases it did not reach have no "
                   f"record, so a claim shown as not run may have cases that were never tried.</b></p>" if why else "")
        page = f"""<!doctype html><html><head><meta charset="utf-8"><title>samenoise report</title><style>
body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:2px 6px;text-align:left}} tr.failed td,tr.error td,tr.fails td{{background:#fdd}}
tr.passed td,tr.holds td{{background:#efe}} tr.partly td{{background:#ffd}}
tr.notrun td,tr.skipped td{{background:#eee}}
summary{{cursor:pointer}}
img{{max-width:100%;image-rendering:pixelated}} .none{{color:#a00}}
</style></head><body><h1>samenoise report</h1>
<p>{len(self.records)} claim cases: {esc(counts or 'none')}. Figures open full size when clicked.</p>{stopped}
<h2>Claims</h2>{self.scorecard()}<h2>Run</h2><table>{metadata}</table>
<h2>Cases by claim (failing first)</h2>{self.case_tables()}<h2>Figures</h2>{reused}{figs}</body></html>"""
        return atomic_write(self.out / "index.html", lambda f: f.write(page.encode()))


def _shown(x: float, bar: Optional[float], spec: str = ".3g") -> str:
    """x as `spec` prints it, with more digits where that print rounds onto the bar (or a bar onto x) although the
    two differ: a failed 0.59996 printed as 0.6 beside a bar of 0.6, and intervals [0.5996, 0.68] (straddling) and
    [0.6004, 0.68] (passing) printed alike."""
    text = format(x, spec)
    kind, digits = spec[-1], int(spec[1:-1])
    while bar is not None and x != bar and float(text) == float(format(bar, f".{digits}{kind}")) and digits < 12:
        digits += 1
        text = format(x, f".{digits}{kind}")
    return text


def _value(c: dict) -> str:
    if c["outcome"] not in MEASURED:
        return c.get("reason", "")
    ref = (c.get("extra") or {}).get("reference")  # a measured reference beside the value (e.g. held-out data's GL)
    return _shown(c["value"], _against(c)) + (f" ({ref['label']}: {ref['value']:.3g})" if ref else "")


def _against(c: dict) -> Optional[float]:
    """What a case's value is compared with: its bar, or the other side's measurement."""
    if c["bar"]["value"] is not None:
        return c["bar"]["value"]
    versus = (c.get("versus") or {}).get("value")
    return versus if isinstance(versus, (int, float)) else None


PAIR_FIGURES = ("Fig. 3", "Fig. 14")  # the model-pair matrices and grids: the embedded zoo's and Table 1's
OFF_SCALE = ("loss", "layout_mae")  # not on the 0-1 axis of the forest plots; the case tables list them


def _interval(c: dict) -> str:
    d = c.get("decision") or {}
    if not d.get("interval"):
        return ""
    lo, hi, how = d["interval"][:3]
    bar = c["bar"]["value"]
    return f"[{_shown(lo, bar, '.3f')}, {_shown(hi, bar, '.3f')}] {how}"


def _control(c: dict) -> str:
    ctrl = (c.get("decision") or {}).get("control")
    if not ctrl:
        return ""
    lo, hi = ctrl["interval"][:2]
    bar = c["bar"]["value"]
    return (f"{_shown(ctrl['value'], bar)} [{_shown(lo, bar, '.3f')}, {_shown(hi, bar, '.3f')}] "
            f"{'caught' if ctrl['caught'] else 'NOT caught'}")


def _bar(c: dict) -> str:
    bar = c["bar"]
    if bar["value"] is not None:
        return f"{bar['op']} {bar['value']:g}"
    versus = c.get("versus") or {}
    if not isinstance(versus.get("value"), (int, float)):
        return f"{bar['op']} ?"
    return f"{bar['op']} {_shown(versus['value'], c['value'] if c['outcome'] in MEASURED else None)}"


def _format(v: Any) -> str:
    """A metadata value as a person reads it: no JSON, Python lists or None."""
    if v is None:
        return "-"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_format(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):  # a hash is cut to 16 characters; anything else (an unrecorded case's reason)
        return ", ".join(_format(x)[:16] if _hash_like(x) else _format(x) for x in v) or "-"
    return str(v)


def _hash_like(v: Any) -> bool:
    return isinstance(v, str) and len(v) >= 32 and all(ch in "0123456789abcdef" for ch in v)


def undecided(c: dict) -> bool:
    """A failed threshold case that the run's noise count could not decide: its own interval straddles its bar, or
    lies on the claim's side while its control's interval straddles the bar (e.g. a control that must clear 0.6 at
    0.63, which needs 1,025 noises)."""
    if c["outcome"] != "failed":
        return False
    side = own_side(c)
    if side == "straddles":
        return True
    control = (c.get("decision") or {}).get("control")
    if side != "pass" or not isinstance(control, dict):
        return False
    from cases import Bar
    from cases.decision import Interval

    lo, hi, *how = control["interval"]
    bar = Bar(c["bar"]["op"], c["bar"]["value"], c["bar"].get("source", ""))
    return Interval(lo, hi, str(how[0]) if how else "").side(bar) == "straddles"


def own_side(c: dict) -> Optional[str]:
    """Where a threshold case's own interval lies against its bar (cases.decision's rule): 'pass', 'fail' or
    'straddles' (None for a direction or exact case). A failed case whose side is 'pass' failed on its control;
    'straddles' is undecided at the run's noise count."""
    from cases import Bar
    from cases.decision import Interval

    op, bar, d = c["bar"]["op"], c["bar"]["value"], c.get("decision")
    if bar is None or op not in (">=", ">", "<", "<=") or not isinstance(d, dict):
        return None
    lo, hi, method = d["interval"][:3]
    return Interval(lo, hi, method).side(Bar(op, bar, c["bar"].get("source", "")))


def write_runs_index(root: str | os.PathLike) -> Path:
    """`<root>/index.html`: every run folder under `<root>/runs`, newest first, with its report and results. Listed and
    written under a lock: two runs ending at once each listed the folders, and the one that wrote last could leave
    out the other."""
    with file_lock(Path(root) / "runs" / ".index.lock"):
        return _write_runs_index(Path(root))


def _write_runs_index(root: Path) -> Path:
    esc = html.escape
    runs = sorted((p.name for p in (root / "runs").iterdir()  # a folder without results: a run still writing
                   if p.is_dir() and not p.name.startswith(".") and (p / "results.json").is_file()),
                  reverse=True) if (root / "runs").is_dir() else []
    rows = "".join(f"<li><a href='runs/{esc(n)}/index.html'>{esc(n)}</a> (<a href='runs/{esc(n)}/results.json'>"
                   f"results</a>)</li>" for n in runs)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>samenoise runs</title></head><body>"
            f"<h1>samenoise runs</h1><p>Newest first; <a href='latest/index.html'>latest</a>. A run's name says its "
            f"kind: main (the whole claim suite), subset (-k, -m, --models or some files) or regression "
            f"(--candidate).</p><ul>{rows}</ul></body></html>")
    return atomic_write(root / "index.html", lambda f: f.write(page.encode()))


def build_report(results: str | os.PathLike, cache_dir: Optional[str | os.PathLike], out: str | os.PathLike) -> Path:
    """The report of a results file; its figures are kept in `<cache_dir>/figures` and reused by a rebuild or a
    rerun with the same records (Report.reuse_figures). The code digest of the figures' key is kept there too.
    `cache_dir` None: the run's own store, as its results name it (meta.cache_dir)."""
    from models.versions import digests_kept_in

    doc = load_results(results)
    if cache_dir is None:  # wherever the rebuild runs from, not ./.cache/samenoise
        cache_dir = doc["meta"].get("cache_dir") or DEFAULT_CACHE
    if not doc["cases"]:  # the writer writes no file for a run that recorded nothing
        raise ReportError(f"{results}: holds no claim case; nothing to report")
    if not Path(cache_dir).is_dir():  # every figure would say its sets are missing, over a complete page
        raise ReportError(f"sample store folder {cache_dir} does not exist: give the run's --cache-dir (its results "
                          f"name it: {doc['meta'].get('cache_dir', '?')})")
    with digests_kept_in(cache_dir):
        return Report(doc, StoredSets(Path(cache_dir)), Path(out), figure_cache=Path(cache_dir) / "figures").build()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reports.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a results JSON written by `pytest bench`")
    parser.add_argument("--cache-dir", default=None,
                        help="the run's sample store (default: the one its results name, meta.cache_dir)")
    parser.add_argument("--out", default=None,
                        help="folder for index.html and the PNG figures (default: the results file's own folder)")
    args = parser.parse_args(argv)
    try:
        print(build_report(args.results, args.cache_dir, args.out or Path(args.results).parent))
    except ReportError as e:
        parser.exit(2, f"error: {e}\n")
    except OSError as e:  # the output folder is a file, not writable, or the disk is full
        parser.exit(2, f"error: cannot write the report to {args.out or Path(args.results).parent}: "
                       f"{e.strerror or e} ({e.filename or ''})\n")


if __name__ == "__main__":
    main()

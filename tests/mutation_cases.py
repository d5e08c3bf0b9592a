"""Mutation cases, run by tests/test_mutations.py in a pytest of its own (no test_ prefix: `pytest tests` does not
collect it). Each row is a claim case that holds on sound input and one deliberately broken input: one side's noise
space permuted, a model's "weights" replaced (D* on photos it never saw: the closed form's weights are its training
set), a conditional model's labels shifted, a DPS observation swapped for another, or noise ids off by one. The
sound case must hold with its control caught; the mutated case must fail. The sound models are D* (the closed
form: fast and exact) and, where a claim needs networks, the embedded zoo's.

Test ids: `<row>-sound` and `<row>-mutated`; tests/test_mutations.py reads the outcomes from the results file.
"""
from __future__ import annotations

import pytest

from cases import Bar, Case, Run, score_bar
from cases.embedded import COND, L2048
from cases.names import optimal
from cases.regimes import GL_LOW_BAR
from fixtures.measure import Measure, permuted_bank
from fixtures.samples import SampleSource
from fixtures.zoo import Model
from models.datasets import embedded_photos
from models.noise import NoiseBank
from models.optimal import OptimalDenoiser

SIZE = 64
# one D* under two names and two samplers; rp_optimal pairs a run with optimal(SIZE), the one that is never broken
DSTAR, DSTAR_B = Run(optimal(SIZE)), Run(optimal("m64"), "heun", 35)
FALLS = Bar("<", None, "Sec. 3, Fig. 5 (a direction case)")
DPS = tuple(Run(m, "dps", 34) for m in L2048[:2])
COND_RUNS = (Run(COND[0]), Run(COND[0], "heun", 35))

# (row, the claim kind it stands for, case, mutation, the run it breaks)
ROWS = [
    ("c2-rp", "C2", Case("C2", "Sec. 2.1", "rp", (DSTAR, DSTAR_B), score_bar()), "noise permuted", DSTAR_B),
    ("c2-mae", "C2", Case("C2", "Sec. 2.1", "mae", (DSTAR, DSTAR_B), score_bar()), "weights perturbed", DSTAR_B),
    ("nfe-rp", "NFE", Case("NFE", "App. A.4", "rp", (Run(optimal(SIZE), "heun", 19), DSTAR_B), score_bar()),
     "noise permuted", DSTAR_B),
    ("c3-rp-optimal", "C3", Case("C3", "Fig. 5", "rp_optimal", (DSTAR_B,), score_bar(), params={"size": SIZE}),
     "weights perturbed", DSTAR_B),
    ("c3-gl-memorized", "C3", Case("C3", "Fig. 2b", "gl", (DSTAR_B,), GL_LOW_BAR, params={"size": SIZE}),
     "weights perturbed", DSTAR_B),
    # a direction case (the C3 and fine-tune kind): other noise spaces score lower than the same one
    ("direction", "direction", Case("C3", "Fig. 5", "rp", (DSTAR, DSTAR_B), FALLS, versus=(DSTAR, DSTAR_B),
                                    params={"pairing": "permuted", "versus_pairing": None}), "noise permuted", DSTAR_B),
    ("theorem1", "theorem1", Case("theorem1", "Theorem 1", "in_training_set", (DSTAR_B,),
                                  Bar("==", 1.0, "Theorem 1"), params={"size": SIZE}), "weights perturbed", DSTAR_B),
    ("encoding", "encoding", Case("encoding", "Fig. 4", "agreement", (DSTAR, DSTAR_B), score_bar(),
                                  params={"points": 12}), "noise permuted", DSTAR_B),
    ("manifold", "manifold", Case("manifold", "App. A.3", "rp_manifold", (DSTAR, DSTAR_B), score_bar(),
                                  params={"paths": 4, "points": 5}), "noise permuted", DSTAR_B),
    ("conditional", "conditional", Case("C4", "Fig. 6b", "rp_cond", COND_RUNS, score_bar(), noises=16),
     "labels shifted", COND_RUNS[1]),
    # the hard mask: on the easy one the observation nearly fixes the square (other noises: RP 0.48 over 64, measured)
    ("inverse", "inverse", Case("C4", "Fig. 7", "rp", DPS, score_bar(), params={"mask": "hard"}, noises=32),
     "observation swapped", DPS[1]),
    # a control (a negative claim): pairs of other noise ids score low, unless the ids are off by one (the bug a
    # control must catch: the shifted pairs then share their noise)
    ("control", "control", Case("control", "Sec. 2.1", "rp", (DSTAR, DSTAR_B), score_bar("<"),
                                params={"pairing": "shifted"}), "noise ids off by one", DSTAR_B),
]


class Mutant(Measure):
    """The suite's Measure with one run broken by `mutation`."""

    def __init__(self, base: Measure, mutation: str, target: Run):
        samples = SampleSource(self._model, base.samples.store, base.samples.device)  # samples the mutated models
        super().__init__(self._model, base.bank, samples, base.embed, base.noises, base.descriptor_identity)
        self.base_model, self.mutation, self.target = base.model, mutation, target

    def _model(self, name: str) -> Model:
        m = self.base_model(name)
        if self.mutation != "weights perturbed" or name != self.target.model:
            return m
        other = embedded_photos(SIZE, size=16, photos="other")  # D* of photos the sound model never saw
        return Model(name, OptimalDenoiser(other.as_tensor()), m.kernel, m.sample_shape, f"{m.fingerprint}:mutated")

    def sample(self, run, n, label=None, bank=None, extra=None, run_fn=None):
        if run == self.target and self.mutation == "noise permuted":
            bank, extra = permuted_bank(bank or self.bank_for(run, n)), (extra or {}) | {"mutation": self.mutation}
        if run == self.target and self.mutation == "noise ids off by one":  # id j gets the noise of id j - 1
            bank = bank or self.bank_for(run, n)
            bank = NoiseBank(bank.eps.roll(1, 0), bank.ids, bank.seed)
            extra = (extra or {}) | {"mutation": self.mutation}
        if run == self.target and self.mutation == "labels shifted" and label is not None:
            label = (label + 1) % self.model(run.model).num_classes
        return super().sample(run, n, label, bank, extra, run_fn)

    def inpainted(self, run, n, mask, truth_shift=0):
        if run == self.target and self.mutation == "observation swapped":
            truth_shift += 1
        return super().inpainted(run, n, mask, truth_shift)


@pytest.mark.parametrize("row, kind, case, mutation, target", [pytest.param(*r, id=f"{r[0]}-sound") for r in ROWS])
def test_sound(row, kind, case, mutation, target, measure, claim):
    claim(case, *measure.case(case))


@pytest.mark.parametrize("row, kind, case, mutation, target", [pytest.param(*r, id=f"{r[0]}-mutated") for r in ROWS])
def test_mutated(row, kind, case, mutation, target, measure, claim):
    mutant = Mutant(measure, mutation, target)
    claim(case, *mutant.case(case))

"""C2 (Sec. 2, Fig. 3, Appendix B) and NFE (Appendix A.4, Fig. 12): unconditional reproducibility."""
from itertools import combinations

from cases import Bar, Case, Run, score_bar
from cases.embedded import (CD_TEACHER, CONSISTENCY, GENERALIZATION_NOISES, KERNELS_L2048, L2048, MEMORIZATION_NOISES,
                            RESEEDED, STUDENT, TEACHER)
from models.stochastic import ANCESTRAL

KERNEL_AXIS = set(KERNELS_L2048[1:])  # the models that differ from the rest in kernel and prediction

SOURCE = "Sec. 2.2, Fig. 3, Appendix B (Fig. 14, 15)"

# Every pair of the generalization end, Fig. 3's regime ("similarity among different unconditional diffusion model
# settings in generalization regime"): architecture (UNet vs U-ViT, two UNet widths), kernel and prediction/loss (VP
# eps, sub-VP eps, VE with sigma_max-scaled noise and its own loss). Not the 64-image models: the size axis puts them
# at the dip between the regimes (C3, Fig. 2a), where the paper expects RP below both ends.
PAIRS = tuple(combinations(L2048 + KERNELS_L2048[1:], 2))

C2 = [Case("C2", SOURCE, metric, (Run(a), Run(b)), score_bar(), tag="kernel" if {a, b} & KERNEL_AXIS else "arch",
           noises=GENERALIZATION_NOISES)
      for a, b in PAIRS for metric in ("rp", "mae")]

# Training procedure: progressively distilled (its own 4-step DDIM) against a model trained from scratch that is not
# its teacher (Sec. 2.2 compares DDPMv1 with Progressivev1, distilled from DDPMv3: Appendix B), and against its teacher
# (the distillation itself).
C2 += [Case("C2", SOURCE + ", Table 1 (distilled)", metric, (Run(other), Run(STUDENT, "ddim", 4)), score_bar(),
           tag="distill", noises=GENERALIZATION_NOISES) for other in (L2048[1], TEACHER) for metric in ("rp", "mae")]
# Consistency distillation (Table 1's CD row): the one-step student against its teacher and against a model trained
# independently (another architecture, the same data).
C2 += [Case("C2", SOURCE + ", Table 1 (consistency)", metric, (Run(other), Run(CONSISTENCY, "consistency", 1)),
            score_bar(), tag="distill", noises=GENERALIZATION_NOISES)
       for other in (CD_TEACHER, L2048[1]) for metric in ("rp", "mae")]

# Training seed: the same architecture and data retrained from another seed, in each regime.
# (an extension: the paper compares no seeds); at 4 thumbnails the regime is Fig. 2a's memorization end, not Fig. 3's
SEED_SOURCE = {"l2048": SOURCE + " (any two models; here one architecture from another seed, an extension)",
               "m4": "Sec. 3, Fig. 2a (the memorization regime; here one architecture from another seed, an extension)"}
C2 += [Case("C2", SEED_SOURCE[a.rsplit("-", 1)[1]], metric, (Run(a), Run(b)), score_bar(), tag="seed",
            noises=MEMORIZATION_NOISES if a.endswith("-m4") else GENERALIZATION_NOISES)
       for a, b in RESEEDED.items() for metric in ("rp", "mae")]

# Sampler: one generalization-regime model under DPM-Solver++(3M), Heun and DDIM.
SAMPLER_RUNS = (Run("unet32-edm-l2048", "dpm3", 20), Run("unet32-edm-l2048", "heun", 35),
                Run("unet32-edm-l2048", "ddim", 50))
C2 += [Case("C2", SOURCE + ", Table 1 (sampler)", metric, (a, b), score_bar(), tag="sampler",
           noises=GENERALIZATION_NOISES)
       for a, b in combinations(SAMPLER_RUNS, 2) for metric in ("rp", "mae")]
# Architecture and sampler at once (Fig. 3 pairs models under different samplers, e.g. EDM under Heun with DDPM
# under DPM-Solver and Progressive distillation under DDIM): two models of the
# generalization regime, each under its own sampler.
MIXED_RUNS = ((Run(L2048[0], "heun", 35), Run(L2048[1], "ddim", 50)), (Run(L2048[1], "dpm3", 20),
                                                                       Run(L2048[2], "heun", 35)))
C2 += [Case("C2", SOURCE + ", Table 1 (architecture and sampler)", metric, pair, score_bar(), tag="arch-sampler",
           noises=GENERALIZATION_NOISES)
       for pair in MIXED_RUNS for metric in ("rp", "mae")]

# Sec. 2, footnote 1: the suite samples deterministically because "randomness introduced by stochastic samplers will
# break the model reproducibility". The three architectures of the generalization end, pair by pair, under Euler
# ancestral (models/stochastic.py), each run drawing its per-step noise from a stream of its own: RP below the bar,
# while the same pair under the same sampler with one step-noise stream shared by both runs (the control,
# fixtures/metrics.py rp_shared_stream) clears it.
STOCHASTIC = [Case("C2", "Sec. 2, footnote 1", "rp_stochastic", (Run(a, ANCESTRAL, 20), Run(b, ANCESTRAL, 20)),
                   Bar("<", 0.6, "Sec. 2, footnote 1: 'randomness introduced by stochastic samplers will break the "
                                 "model reproducibility'; below the RP bar 0.6"), tag="stochastic")
              for a, b in combinations(L2048, 2)]

# Appendix A.4: one model (Heun, as EDMv1 in Fig. 12) from NFE 9 to 159; each against NFE 159.
NFE_MODEL, NFE_REFERENCE = "unet16-edm-l2048", 159
NFE_SWEEP = (9, 19, 39, 79)
NFE = [Case("NFE", "Appendix A.4, Fig. 12", "rp", (Run(NFE_MODEL, "heun", n), Run(NFE_MODEL, "heun", NFE_REFERENCE)),
            score_bar()) for n in NFE_SWEEP]

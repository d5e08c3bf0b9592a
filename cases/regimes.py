"""C3, the two regimes (Sec. 3, Fig. 2, 5, 13), and Theorem 1 (Sec. 3, Appendix D)."""
from cases import Bar, Case, Run, score_bar
from cases.embedded import GENERALIZATION_NOISES, L2048, M4, MEMORIZATION_NOISES, RESEEDED
from cases.names import DATASETS, optimal, sweep

SOURCE = "Sec. 3, Fig. 2"
FIG5 = "Sec. 3, Fig. 5"

REGIMES = []
for ds, group in (("m4", M4), ("l2048", L2048)):
    # Fig. 2a: reproducibility between model sizes and architectures holds at both ends of the size axis; each end
    # at its floor (the generalization end's pairs are C2's architecture pairs: one count, one verdict)
    REGIMES += [Case("C3", SOURCE + "a", "rp", (Run(a), Run(b)), score_bar(), params={"size": DATASETS[ds]},
                     noises=MEMORIZATION_NOISES if ds == "m4" else GENERALIZATION_NOISES)
                for a, b in ((group[0], group[1]), (group[1], group[2]))]

# Fig. 2b: GL is low in the memorization regime and high in the generalization regime.
GL_BAR = Bar(">=", 0.6, "Sec. 3, Fig. 2b: GL near 1 in the generalization regime; the suite's bar is 0.6 (the RP bar)")
REGIMES += [Case("C3", SOURCE + "b", "gl", (Run(m),), GL_BAR, params={"size": 2048, "dataset": "l2048"}) for m in L2048]
REGIMES += [Case("C3", SOURCE + "b", "gl", (Run(small),), Bar("<", None, "Sec. 3, Fig. 2b: GL grows with the "
                                                                         "training-set size"),
                 versus=(Run(large),), params={"size": 4, "dataset": "m4", "versus_dataset": "l2048"})
            for small, large in zip(M4, L2048)]

# Fig. 5: in the memorization regime every trained model reproduces D*'s samples (the three architectures and a
# second seed of UNet-16); less so with more data.
REGIMES += [Case("C3", FIG5, "rp", (Run(m), Run(optimal("m4"))), score_bar(), params={"size": 4},
                 noises=MEMORIZATION_NOISES) for m in M4 + (RESEEDED[M4[0]],)]
REGIMES += [Case("C3", FIG5, "rp", (Run(large), Run(optimal("l2048"))),
                 Bar("<", None, "Sec. 3, Fig. 5: RP with D* falls from the memorization to the generalization regime"),
                 versus=(Run(small), Run(optimal("m4"))), params={"size": 2048, "versus_size": 4})
            for small, large in zip(M4, L2048)]
# Fig. 5, the capacity axis: at the same training-set size a larger network is closer to D* (more memorization).
CAPACITY = Bar(">", None, "Sec. 3, Fig. 5: 'diffusion model could converge to the theoretical solution when the "
                          "model capacity is large enough'; a larger network reproduces D* more at the same size")
REGIMES += [Case("C3", FIG5, "rp", (Run(M4[1]), Run(optimal("m4"))), CAPACITY,
                 versus=(Run(M4[0]), Run(optimal("m4"))),
                 params={"size": 4}, tag="capacity", noises=MEMORIZATION_NOISES)]

# Fig. 13 (Appendix A.5): the final training loss is lower in the memorization regime (mean of the last 200 steps).
# Losses compare only under one objective, sigma draw and schedule: the 4- and 2,048-image models of an architecture
# share their config but for the dataset size, the target (D* or the drawn image: the same expected gradient, and
# both logs record the loss against the drawn image) and the step counts (UNet-16 20,000 / 10,000, UNet-32 20,000 /
# 6,000, U-ViT 20,000 / 20,000); each cosine schedule ends at a learning rate near 0.
LOSS_STEPS = 200
REGIMES += [Case("C3", "Appendix A.5, Fig. 13", "loss", (Run(small),),
                 Bar("<", None, "Appendix A.5, Fig. 13: lower training loss with less data (closer to D*)"),
                 versus=(Run(large),), params={"last_steps": LOSS_STEPS}) for small, large in zip(M4, L2048)]

# The sweep over training-set sizes for two UNet widths (Fig. 2, 5): trains each with the recipe of the 64- and
# 2,048-image entries (fixtures/zoo.py, SWEEP_RECIPE), so it runs under `slow`. At the ends of the size axis (4
# thumbnails, where the embedded models memorize, and 2,048) the paper's levels apply; in between, each size is
# compared with the previous one: RP with D* falls (Fig. 5) and GL rises (Fig. 2b) as the training set grows.
SWEEP_SIZES = (4, 16, 64, 256, 1024, 2048)
SWEEP_MODELS = ("unet16-edm", "unet32-edm")
GL_LOW_BAR = Bar("<=", 0.4, "Sec. 3, Fig. 2b: GL near 0 in the memorization regime; the suite's bar is 1 - 0.6 "
                            "(at least 60% of samples memorized)")
FALLS = Bar("<", None, "Sec. 3, Fig. 5: RP with D* falls as the training set grows")
RISES = Bar(">", None, "Sec. 3, Fig. 2b: GL rises as the training set grows")
DIP_SIZE = 64  # Fig. 2a's dip sits between the regimes; 64 is the sweep's size nearest the log-midpoint (90.5) below
DIPS = Bar("<", None, "Sec. 3, Fig. 2a: RP between models dips between the regimes and recovers at both ends")
SWEEP = []
for k, n in enumerate(SWEEP_SIZES):
    runs = tuple(Run(sweep(m, n)) for m in SWEEP_MODELS)
    if n in (SWEEP_SIZES[0], SWEEP_SIZES[-1]):  # Fig. 2a: high RP at both ends of the size axis
        SWEEP.append(Case("C3", SOURCE + "a", "rp", runs, score_bar(), params={"size": n}, marks=("slow",)))
    if n == DIP_SIZE:  # the dip: lower than at either end
        SWEEP += [Case("C3", SOURCE + "a", "rp", runs, DIPS, versus=tuple(Run(sweep(m, end)) for m in SWEEP_MODELS),
                       params={"size": n, "versus_size": end}, marks=("slow",), tag="dip") for end in
                  (SWEEP_SIZES[0], SWEEP_SIZES[-1])]
        SWEEP.append(Case("C3", FIG5, "rp_optimal", runs[1:], CAPACITY, versus=runs[:1], params={"size": n},
                          marks=("slow",), tag="capacity"))
    prev = SWEEP_SIZES[k - 1] if k else None
    for m, r in zip(SWEEP_MODELS, runs):
        before = {"versus": (Run(sweep(m, prev)),), "params": {"size": n, "versus_size": prev}} if prev else {}
        if n == SWEEP_SIZES[0]:  # the memorization end of Fig. 5
            SWEEP.append(Case("C3", FIG5, "rp_optimal", (r,), score_bar(), params={"size": n}, marks=("slow",)))
        else:
            SWEEP.append(Case("C3", FIG5, "rp_optimal", (r,), FALLS, marks=("slow",), **before))
        if n == SWEEP_SIZES[0]:
            SWEEP.append(Case("C3", SOURCE + "b", "gl", (r,), GL_LOW_BAR, params={"size": n}, marks=("slow",)))
        elif n >= 1024:  # the generalization end of Fig. 2b
            SWEEP.append(Case("C3", SOURCE + "b", "gl", (r,), GL_BAR, params={"size": n}, marks=("slow",)))
        else:
            SWEEP.append(Case("C3", SOURCE + "b", "gl", (r,), RISES, marks=("slow",), **before))

# Theorem 1: D*'s samples are training images, and f^-1 (ODE inversion) maps a training image to a noise that
# maps back to it. Only D*'s round trip is a case: a network's ODE inverts numerically whatever its weights (the
# 64-image UNet-32 with Gaussian noise of each tensor's std added to every weight still came back within MAE 15 for
# 16 of 16 training images, median MAE 0.04; measured), so a network round trip could not fail; that a trained
# network's map is D*'s is Fig. 5's claim, the rp_optimal cases.
THEOREM_NOISES = 16
THEOREM = [Case("theorem1", "Sec. 3, Theorem 1", "in_training_set", (Run(optimal(ds)),),
                Bar("==", 1.0, "Theorem 1: every sample of D* is a training image (MAE < 15 to its nearest one, "
                               "Sec. 2.1)"),
                params={"dataset": ds}) for ds in DATASETS]
THEOREM += [Case("theorem1", "Sec. 3, Theorem 1 (f^-1)", "roundtrip", (Run(optimal("m64"), "heun", 99),),
                 Bar("==", 1.0, "Theorem 1: f(f^-1(y)) = y; every round trip within MAE 15 (Sec. 2.1)"),
                 params={"dataset": "m64"}, noises=THEOREM_NOISES)]

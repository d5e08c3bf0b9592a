"""Unique encoding (Sec. 2.2, Fig. 4) and manifold reproducibility (Appendix A.3, Fig. 11)."""
from itertools import combinations

from cases import Bar, Case, Run, score_bar
from cases.embedded import L2048

ANCHORS = (0, 1, 2)  # noise ids of eps_1, eps_2, eps_3 spanning the hyperplane
# Fig. 4 uses 100 x 100 points over [-0.1, 1.1]^2; a CPU run uses 24 x 24 of the same square (576 samples a model).
GRID_POINTS = 24
GRID_RANGE = (-0.1, 1.1)

AGREEMENT = Bar(">=", 0.6, "Fig. 4 shows 'very similar structures' without a number; the suite asks Cohen's kappa of "
                           "the two nearest-anchor maps to reach the RP bar 0.6, the edge of 'substantial' agreement "
                           "(Landis & Koch 1977: 0.61-0.80)")
LIPSCHITZ = Bar(">=", 0.6, "Sec. 2.2: 'closeby noises create images with very high similarities'; the share of "
                           "4-neighbour grid pairs with SSCD > 0.6 must reach the RP bar (0.6)")

HYPERPLANE = [Case("encoding", "Sec. 2.2, Fig. 4", "agreement", (Run(a), Run(b)), AGREEMENT,
                   params={"points": GRID_POINTS}) for a, b in combinations(L2048, 2)]
HYPERPLANE += [Case("encoding", "Sec. 2.2, Fig. 4", "neighbours", (Run(m),), LIPSCHITZ, params={"points": GRID_POINTS})
               for m in L2048]

# Appendix A.3: slerp between noise ids (2k, 2k+1) of the bank; RP_manifold at each point of the path. The points
# of one path share its noises, so the interval resamples paths: on the embedded UNet-16 vs U-ViT pair, 32 paths
# (288 samples a model) gave 0.56 [0.43, 0.67], +/-0.12; 8 paths gave 0.72 [0.44, 0.93], +/-0.24 (measured).
PATHS, PATH_POINTS = 32, 9
MANIFOLD = [Case("manifold", "Appendix A.3, Fig. 11", "rp_manifold", (Run(a), Run(b)), score_bar(),
                 params={"paths": PATHS, "points": PATH_POINTS}) for a, b in combinations(L2048, 2)]

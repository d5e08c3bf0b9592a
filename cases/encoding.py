"""Unique encoding (Sec. 2.2, Fig. 4) and manifold reproducibility (Appendix A.3, Fig. 11)."""
from itertools import combinations

from cases import Bar, Case, Run, score_bar
from cases.embedded import L2048

# Fig. 4 uses one plane of 100 x 100 points over [-0.1, 1.1]^2, spanned by three noises eps_1, eps_2, eps_3. The
# points of one plane all mix its three anchors: they are one unit of evidence, and a bootstrap over them gave
# intervals about a third as wide as one over 6 x 6 blocks of them (measured on the embedded models). So a case
# samples PLANES planes, plane p spanned by bank noises 3p, 3p + 1, 3p + 2, each over GRID_POINTS x GRID_POINTS of the
# same square (1,024 samples a model; the 48 anchors are the model's first samples), and resamples whole planes.
# Measured on the embedded 2,048-image models, 16 planes of 8 x 8: kappa 0.70-0.74 between the architectures, the
# planes' own values 0.34-0.90 (sd 0.15), intervals [0.62, 0.80]; the map of the plane's own geometry (each point's
# nearest anchor in noise space, no network) agrees with the models' at 0.51-0.54. The one 24 x 24 plane of noises
# 0-2 used before scored 0.66-0.75, and its geometry alone 0.62-0.77 (README, "Measured").
PLANES = 16
GRID_POINTS = 8
GRID_RANGE = (-0.1, 1.1)
ANCHORS = tuple(range(3 * PLANES))  # plane p's anchors are noise ids 3p, 3p + 1, 3p + 2

AGREEMENT = Bar(">=", 0.6, "Fig. 4 shows 'very similar structures' without a number; the suite asks Cohen's kappa of "
                           "the two nearest-anchor maps to reach the RP bar 0.6, the edge of 'substantial' agreement "
                           "(Landis & Koch 1977: 0.61-0.80)")
LIPSCHITZ = Bar(">=", 0.6, "Sec. 2.2: 'closeby noises create images with very high similarities'; the share of "
                           "4-neighbour grid pairs with SSCD > 0.6 must reach the RP bar (0.6)")

HYPERPLANE = [Case("encoding", "Sec. 2.2, Fig. 4", "agreement", (Run(a), Run(b)), AGREEMENT,
                   params={"points": GRID_POINTS, "planes": PLANES}) for a, b in combinations(L2048, 2)]
HYPERPLANE += [Case("encoding", "Sec. 2.2, Fig. 4", "neighbours", (Run(m),), LIPSCHITZ,
                    params={"points": GRID_POINTS, "planes": PLANES}) for m in L2048]

# Appendix A.3: slerp between noise ids (2k, 2k+1) of the bank; RP_manifold at each point of the path. The points
# of one path share its noises, so the interval resamples paths: on the embedded UNet-16 vs U-ViT pair, 32 paths
# (288 samples a model) gave 0.56 [0.43, 0.67], +/-0.12; 8 paths gave 0.72 [0.44, 0.93], +/-0.24 (measured).
PATHS, PATH_POINTS = 32, 9
MANIFOLD = [Case("manifold", "Appendix A.3, Fig. 11", "rp_manifold", (Run(a), Run(b)), score_bar(),
                 params={"paths": PATHS, "points": PATH_POINTS}) for a, b in combinations(L2048, 2)]

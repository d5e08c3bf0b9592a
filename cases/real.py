"""Real-weight cases (Appendix A.1, A.2 and the CIFAR-10 models of Table 1). Their models come from a zoo file
passed with --zoo (models/real.toml names the published checkpoints); a case whose model is absent is skipped
with what to provide."""
from itertools import combinations

from cases import Bar, Case, Run, score_bar
from models.scores import SSCD_THRESHOLD_LARGE

REAL_ZOO = "models/real.toml"
CIFAR = [("ddpm-cifar10-32", "edm-cifar10-uncond-vp"), ("edm-cifar10-uncond-vp", "edm-cifar10-uncond-ve"),
         ("ddpm-cifar10-32", "edm-cifar10-uncond-ve")]
REAL = [Case("real", "Table 1, Appendix B (CIFAR-10)", "rp", (Run(a), Run(b)), score_bar(), marks=("weights",))
        for a, b in CIFAR]
REAL += [Case("real", "Appendix A.1 (ImageNet 64)", "rp", (Run("edm-imagenet-64-cond"), Run("adm-imagenet-64-cond")),
              score_bar(), params={"threshold": SSCD_THRESHOLD_LARGE}, marks=("weights", "gpu"))]
SD_PROMPT = "a photograph of an astronaut riding a horse"  # Appendix A.2
SD = ("sd-v1-1", "sd-v1-2", "sd-v1-3", "sd-v1-4")
SD_PARAMS = {"threshold": SSCD_THRESHOLD_LARGE, "prompt": SD_PROMPT}
SD_SOURCE = "Appendix A.2, Fig. 10a"
SD_PAIR = (Run("sd-v1-3"), Run("sd-v1-4"))  # the same LAION subset: the paper's highest pair, 0.63
SD_LOW = [(Run(a), Run(b)) for a, b in combinations(SD[:3], 2)]  # other subsets: "below 0.21"
SD_MARKS = ("weights", "gpu")
# at the paper's 0.63 the 95% interval clears 0.6 only from about 1,000 noises (Wilson): run with --noises 1000
REAL += [Case("real", SD_SOURCE, "rp", SD_PAIR, Bar(">=", 0.6, "Appendix A.2: v1-3 vs v1-4 reaches 0.63 (SSCD > 0.4); "
                                                        "the suite's bar 0.6 is below it"),
              params=SD_PARAMS, marks=SD_MARKS)]
REAL += [Case("real", SD_SOURCE, "rp", low, Bar("<", 0.6, "Appendix A.2: pairs among v1-1, v1-2 and v1-3 score "
                                                          "below 0.21, under the RP bar 0.6"),
              params=SD_PARAMS, marks=SD_MARKS) for low in SD_LOW]
REAL += [Case("real", SD_SOURCE, "rp", low, Bar("<", None, "Appendix A.2: v1-3 vs v1-4 is the most reproducible "
                                                           "pair (0.63 against below 0.21)"),
              versus=SD_PAIR, params=SD_PARAMS, marks=SD_MARKS) for low in SD_LOW]
# Fig. 10b: the same prompt with other noises (pairs shifted to the next noise id) approaches zero
REAL += [Case("real", "Appendix A.2, Fig. 10b", "rp", (Run(m), Run(m)),
              Bar("<", 0.1, "Appendix A.2, Fig. 10b: the same prompt with different noises scores near zero; the "
                            "suite's bar 0.1 is half the paper's 0.21 for the least related same-noise pairs"),
              params=SD_PARAMS | {"pairing": "shifted"}, title=f"{m}~{m}[other noise]/dpm3@20", marks=SD_MARKS)
         for m in ("sd-v1-3", "sd-v1-4")]

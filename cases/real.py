"""Real-weight cases (Appendix A.1, A.2 and the CIFAR-10 models of Table 1). Their models come from a zoo file
passed with --zoo (models/real.toml names the published checkpoints); a case whose model is absent is skipped
with what to provide."""
from cases import Case, Run, score_bar
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
REAL += [Case("real", "Appendix A.2 (Stable Diffusion)", "rp", (Run(a), Run(b)), score_bar(),
              params={"threshold": SSCD_THRESHOLD_LARGE, "prompt": SD_PROMPT}, marks=("weights", "gpu"))
         for a, b in zip(SD, SD[1:])]

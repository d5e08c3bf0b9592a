"""Controls (Appendix A.2, C): the scores must be able to fail. A control passes when its RP is below the
claims' own bar: pairs that do not share a noise space are not reproducible."""
from cases import Case, Run, score_bar
from cases.embedded import L2048, M64, VAES

CONTROL_SOURCE = "Appendix C, Fig. 17: generators without a shared noise space show no reproducibility"
CONTROLS = [
    # the same model, pairs from different noise ids (id i against id i + 1)
    Case("control", "Sec. 2.1 (pairs share a noise)", "rp", (Run(L2048[1]), Run(L2048[1])), score_bar("<"),
         params={"pairing": "shifted"}, title=f"{L2048[1]}~{L2048[1]}[other noise]/dpm3@20"),
    # noise fed through a fixed random permutation of its coordinates: the second model's noise space differs
    Case("control", CONTROL_SOURCE, "rp", (Run(L2048[1]), Run(L2048[2])), score_bar("<"),
         params={"pairing": "permuted"}, title=f"{L2048[1]}~{L2048[2]}[permuted noise]/dpm3@20"),
    Case("control", CONTROL_SOURCE, "rp", (Run(M64[1]), Run(M64[1])), score_bar("<"),
         params={"pairing": "permuted"}, title=f"{M64[1]}~{M64[1]}[permuted noise]/dpm3@20"),
    # Appendix C: generators that are not diffusion models (two VAEs of different architectures, the same data, the
    # same latent noise) do not reproduce each other. "Below 0.6" would also hold for a pipeline that fed the two
    # VAEs no shared latent (another slice of the noise, a wrong scale): its control, the reproducible pair of the
    # generalization end (the C2 pair UNet-16 vs UNet-32) from the same noises, must clear 0.6. Only the VAE half
    # of Appendix C is tested: the zoo has no GAN.
    Case("control", "Appendix C, Fig. 17: other generative models (VAE, GAN) are not reproducible; the VAE half",
         "rp_unrelated", tuple(Run(m, "consistency", 1) for m in VAES), score_bar("<"),
         params={"reference": f"{L2048[0]}~{L2048[1]}"}, tag="vae"),
]

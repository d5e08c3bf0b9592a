"""Names of the embedded zoo's entries (models/embedded/zoo.toml), grouped as the claims use them.
m4: trained on 4 thumbnails, the memorization end of the regime claims (models that reproduce D*); m64: on 64 (an
intermediate size: architectures, fine-tuning); l2048: on 2,048 (the generalization regime, where Fig. 3 compares
kernels and Fig. 6 conditional models, and the teacher of both distilled models)."""

# the memorization end of C3 (Fig. 2, 5): the three architectures with the wide sigma draw and cosine decay, trained
# on D*'s target (E[y | x] of the 4 images; the M64 recipe otherwise, but for 20,000 steps instead of the recipe's
# 10,000 (UNet-16, U-ViT) and 6,000 (UNet-32))
M4 = ("unet16-edm-m4", "unet32-edm-m4", "uvit-edm-m4")
# noises for the cases among memorization-end models and D* alone (a floor: a run with more noises gives its own
# count). There RP is near 1 (Fig. 5) and the question is how near: the memorization gate asks RP with D* of
# 0.9 or more, and a 95% Wilson interval over 128 noises clears 0.9 only from 122 of 128 (0.953), so a model that
# keeps D*'s image for 94% of noises decides it one time in three (exact binomial, 0.35); over 512 noises from 475
# (0.928), nine times in ten (0.89). The per-noise cost is the default's (README, "Options").
MEMORIZATION_NOISES = 512
# noises for the cases between two runs of the generalization end (C2: architecture, kernel and prediction, training,
# seed, sampler; a floor, as above). Sec. 2.2 reads RP 0.7 for its least similar pair (CT vs U-ViT, Fig. 3) against
# the bar 0.6. A 95% Wilson interval over 128 noises clears 0.6 only from 88 of 128 (0.69), so a pair at the paper's
# 0.7 is decided two times in three (exact binomial, 0.66); over 256 noises, from 169 (0.66), nine times in ten
# (0.93), the rule of the memorization end's count. The per-noise cost is the default's (README, "Options").
GENERALIZATION_NOISES = 256

# between the ends: the M4 configs on 64 thumbnails but for the target, which is the drawn image, and UNet-32's
# 6,000 steps (the slow sweep's recipe and its 64-image models)
M64 = ("unet16-edm-m64", "unet32-edm-m64", "uvit-edm-m64")
# the generalization end: the M64 configs (one recipe along the size axis) on 2,048 thumbnails
L2048 = ("unet16-edm-l2048", "unet32-edm-l2048", "uvit-edm-l2048")
# the kernel and prediction axis at the generalization end (Fig. 3 compares CIFAR-10 models), one UNet width, each
# with its own objective and preconditioning, the L2048 recipe otherwise: EDM, VP eps, sub-VP eps (t uniform, eps
# loss), VE (Song et al. 2021: log-uniform sigma, sigma^2-weighted score matching; noise sigma_max-scaled). The width
# is UNet-32's: at UNet-16 the VP and sub-VP eps models sampled 4.7% and about 25% saturated pixels and reached RP
# 0.13-0.61 against the EDM UNets, at UNet-32 2.1% and 1.3% and RP 0.67-0.74 (README, kernel axis; 128 noises)
KERNELS_L2048 = ("unet32-edm-l2048", "unet32-vp-eps-l2048", "unet32-subvp-eps-l2048", "unet32-ve-l2048")
# progressive distillation of TEACHER (the generalization end, as Fig. 3's Progressivev1 is of a CIFAR-10 model) in
# five halvings, sampled with 4 DDIM steps
TEACHER, STUDENT = "unet16-edm-l2048", "unet16-edm-distill-l2048"
# consistency distillation of CD_TEACHER (the generalization end), sampled in one step (NFE 1)
CD_TEACHER, CONSISTENCY = "unet16-edm-l2048", "unet16-edm-cd-l2048"
# class-conditional on the 2,048 thumbnails (2 classes of 5 photos), each beside the unconditional model of its
# architecture and recipe (trained from another seed)
COND = ("unet16-edm-cond-l2048", "uvit-edm-cond-l2048")
UNCOND_OF = {"unet16-edm-cond-l2048": "unet16-edm-l2048", "uvit-edm-cond-l2048": "uvit-edm-l2048"}
# the same architecture, data and budget retrained with seed 1 (initialization, batch order, training noise)
RESEEDED = {"unet16-edm-m4": "unet16-edm-m4-seed1", "unet16-edm-l2048": "unet16-edm-l2048-seed1",
            "uvit-edm-l2048": "uvit-edm-l2048-seed1"}
# attention-only fine-tune of a model pretrained on other photos (Appendix G), and the same UNet from scratch
FINETUNED, SCRATCH = "unet32-edm-ft-m64", "unet32-edm-m64"
PRETRAINED = "unet32-edm-other-l2048"  # the fine-tunes' pretraining: 2,048 thumbnails of ten other photos
FINETUNED_L, SCRATCH_L = "unet32-edm-ft-l2048", "unet32-edm-l2048"  # the same, in the generalization regime
# two VAEs of different architectures on the same 2,048 thumbnails, decoded from the same noise (Appendix C)
VAES = ("vae-conv-l2048", "vae-mlp-l2048")

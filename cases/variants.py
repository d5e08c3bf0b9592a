"""C4 (Sec. 4): conditional models (Fig. 6, Appendix E), inverse problems (Fig. 7, Appendix F) and
fine-tuning (Fig. 8, Appendix G)."""
from cases import Bar, Case, Run, score_bar
from cases.embedded import COND, FINETUNED, FINETUNED_L, L2048, PRETRAINED, SCRATCH, SCRATCH_L, UNCOND_OF

# Conditional cases sample every class for each noise: 128 noises (the default) x 2 classes = 256 samples per
# model on a CPU run.
COND_NOISES = 128
CONDITIONAL = [Case("C4", "Sec. 4, Fig. 6b", "rp_cond", (Run(COND[0]), Run(COND[1])), score_bar(), noises=COND_NOISES)]
CONDITIONAL += [Case("C4", "Sec. 4, Fig. 6c", "rp_between", (Run(UNCOND_OF[c]), Run(c)), score_bar(),
                     noises=COND_NOISES) for c in COND]
# Low-level structure under a label change (Fig. 6a, 20, 21): the 4 x 4 average-pooled colour layout (0-255) of one
# noise under two labels is closer than that of two noises under one label.
LAYOUT = Bar("<", None, "Appendix E, Fig. 20 (i) and (l), Fig. 21: the same noise under different labels keeps its "
                       "low-level structure (layout and colours)")
CONDITIONAL += [Case("C4", "Appendix E, Fig. 20, 21", "layout_mae", (Run(c),), LAYOUT, versus=(Run(c),),
                     params={"pool": 4, "pairing": "same noise, other label",
                             "versus_pairing": "other noise, same label"},
                     noises=COND_NOISES, title=f"{c}[same noise, other label]/dpm3@20",
                     rhs="layout_mae(other noise, same label)") for c in COND]

# Inverse problems: deterministic DPS with DPM-Solver++ (Algorithm 1) on centred square masks.
INVERSE_NOISES = 64  # each noise has its own observation (Appendix F, Fig. 25); 64 on a CPU run
WITHIN, ACROSS = (L2048[0], L2048[1]), (L2048[1], L2048[2])  # UNet vs UNet, UNet vs U-ViT
INVERSE = []
# Fig. 7 and 22 use the easy mask only (Appendix F); Fig. 25 both
INVERSE_SOURCES = {"easy": "Sec. 4, Fig. 7, Appendix F (Fig. 25)", "hard": "Appendix F, Fig. 25 (the hard mask)"}
for mask in ("easy", "hard"):
    INVERSE.append(Case("C4", INVERSE_SOURCES[mask], "rp", tuple(Run(m, "dps", 34) for m in WITHIN),
                        score_bar(), params={"mask": mask}, noises=INVERSE_NOISES))
    INVERSE.append(Case("C4", INVERSE_SOURCES[mask], "rp", tuple(Run(m, "dps", 34) for m in ACROSS),
                        Bar("<", None, "Sec. 4 / Fig. 25: reproducibility of DPS holds within an architecture family, "
                                       "less across families"),
                        versus=tuple(Run(m, "dps", 34) for m in WITHIN), params={"mask": mask}, noises=INVERSE_NOISES))
for pair in (WITHIN, ACROSS):
    INVERSE.append(Case("C4", "Appendix F, Fig. 25", "rp", tuple(Run(m, "dps", 34) for m in pair),
                        Bar("<", None, "Appendix F, Fig. 25: hard inpainting is less reproducible than easy"),
                        versus=tuple(Run(m, "dps", 34) for m in pair),
                        # both sides scored on the easy square, which both masks hide: one region, two masks
                        params={"mask": "hard", "versus_mask": "easy", "score_mask": "easy"},
                        noises=INVERSE_NOISES, rhs="rp([mask=easy])"))
# Fig. 22 (Appendix F): the result depends on the observation; the same noise under another observation (noise i
# with y_(i+1)) gives another image in the unobserved square.
INVERSE += [Case("C4", "Appendix F, Fig. 22", "rp", (Run(m, "dps", 34), Run(m, "dps", 34)),
                 Bar("<", 0.6, "Appendix F, Fig. 22: the same noise with different observations gives different "
                               "images; below the RP bar 0.6"),
                 params={"mask": "hard", "pairing": "other observation"}, noises=INVERSE_NOISES,
                 title=f"{m}~{m}[other observation]/dps@34") for m in WITHIN]

# Fine-tuning: attention-only fine-tune of a model pretrained on 2,048 thumbnails vs the same UNet from scratch,
# both on the same 64 (memorization regime). Fig. 8a: RP between the two strategies is below RP between two
# from-scratch models (Fig. 2a); Fig. 8b: the fine-tuned model generalizes more.
FINETUNE = [Case("C4", "Sec. 4, Fig. 8a", "rp", (Run(FINETUNED), Run(SCRATCH)),
                 Bar("<", None, "Sec. 4, Fig. 8a vs Fig. 2a: partial fine-tuning lowers reproducibility"),
                 versus=(Run(SCRATCH), Run("unet16-edm-m64")), params={"size": 64}),
            Case("C4", "Sec. 4, Fig. 8b", "gl", (Run(SCRATCH),),
                 Bar("<", None, "Sec. 4, Fig. 8b: partial fine-tuning raises generalizability in the memorization "
                                "regime"), versus=(Run(FINETUNED),), params={"size": 64, "dataset": "m64",
                                                                            "versus_dataset": "m64"})]
# Sec. 4 / Fig. 8 in the generalization regime: "partial model fine-tuning has a minor impact on both
# reproducibility and generalization". The fine-tuned model reproduces the one trained from scratch on the same
# 2,048 thumbnails, and both generalize.
MINOR = "Sec. 4, Fig. 8: in the generalization regime partial fine-tuning has a minor impact on reproducibility"
FINETUNE += [Case("C4", "Sec. 4, Fig. 8a", "rp", (Run(FINETUNED_L), Run(SCRATCH_L)), Bar(">=", 0.6, MINOR + "; the "
                                                                                            "RP bar 0.6"),
                  params={"size": 2048}),
             Case("C4", "Sec. 4, Fig. 8b", "gl", (Run(FINETUNED_L),),
                  Bar(">=", 0.6, "Sec. 4, Fig. 8b: in the generalization regime the fine-tuned model generalizes as "
                                 "the one from scratch; the GL bar 0.6 (Fig. 2b)"),
                  params={"size": 2048, "dataset": "l2048"})]
# Appendix G, Fig. 26: models trained on disjoint data (the pretraining's other photos, CIFAR-100 in the paper, and
# the 2,048 thumbnails, CIFAR-10) give "striking similarities" from the same noise, in low-level structure as under
# a label change (Appendix E): the colour layouts of one noise under the two models are closer than of two noises.
DISJOINT = Bar("<", None, "Appendix G, Fig. 26: despite the distinct nature of CIFAR-100 and CIFAR-10, their "
                          "generations from the same initial noise exhibit striking similarities")
FINETUNE += [Case("C4", "Appendix G, Fig. 26", "layout_mae", (Run(PRETRAINED), Run(SCRATCH_L)), DISJOINT,
                  versus=(Run(PRETRAINED), Run(SCRATCH_L)),
                  params={"pool": 4, "pairing": "same noise, other model", "versus_pairing": "other noise, other model"},
                  title=f"{PRETRAINED}~{SCRATCH_L}[same noise, disjoint data]/dpm3@20",
                  rhs="layout_mae(other noise)")]

"""C4: conditional models (Sec. 4, Fig. 6, Appendix E), inverse problems by deterministic DPS (Fig. 7,
Appendix F) and partial fine-tuning (Fig. 8, Appendix G)."""
import pytest
import torch

from cases.catalog import of
from fixtures.measure import IMAGE_SIZE, as_params, sample_extra, worst_pairs
from fixtures.results import Measured
from models.datasets import embedded_photos
from models.inverse import dps_runner, make_mask
from models.scores import MAEScore, RPBetweenScore, RPScore

INVERSE_TRUTH_SEED = 1  # observations come from thumbnails cut with another seed than the training sets (seed 0)


def class_samples(measure, case, run):
    m = measure.model(run.model)
    if not m.num_classes:
        raise ValueError(f"{run.model} is not conditional")
    return [measure.sample(run, measure.n(case), label=c) for c in range(m.num_classes)]



@pytest.mark.parametrize("case", as_params(of("conditional")))
def test_conditional(case, measure, claim):
    if case.metric == "rp_cond":
        a, b = (class_samples(measure, case, r) for r in case.runs)
        metric = RPScore()
        for c, (sa, sb) in enumerate(zip(a, b)):
            labels = torch.full((len(sa.ids),), c)
            metric.update(measure.embed(sa.images), measure.embed(sb.images), torch.from_numpy(sa.ids),
                          torch.from_numpy(sb.ids), labels, labels)
        claim(case, Measured(float(metric.compute()), len(metric.pairs().ids), worst_pairs(metric.pairs()),
                             sample_extra(*a, *b)))
    elif case.metric == "rp_between":
        uncond = measure.sample(case.runs[0], measure.n(case))
        cond = class_samples(measure, case, case.runs[1])
        metric = RPBetweenScore()
        metric.update(measure.embed(uncond.images), torch.from_numpy(uncond.ids),
                      torch.stack([measure.embed(s.images) for s in cond]), torch.from_numpy(cond[0].ids))
        claim(case, Measured(float(metric.compute()), len(uncond.ids), worst_pairs(metric.pairs()),
                             sample_extra(uncond, *cond)))
    else:  # layout_mae: 4 x 4 mean colours, same noise / other label against other noise / same label
        sets = class_samples(measure, case, case.runs[0])
        pool = case.params["pool"]
        layouts = torch.stack([torch.nn.functional.avg_pool2d(
            torch.from_numpy(s.images).permute(0, 3, 1, 2).double(), IMAGE_SIZE // pool).round().to(torch.uint8)
            .permute(0, 2, 3, 1) for s in sets])  # (classes, n, pool, pool, 3)
        classes, n = layouts.shape[:2]
        ids = torch.arange(n)
        same_noise, other_noise = MAEScore(), MAEScore()
        for c in range(classes):
            same_noise.update(layouts[c], layouts[(c + 1) % classes], ids, ids)
            other_noise.update(layouts[c], layouts[c].roll(1, 0), ids, ids)
        a, b = same_noise.pairs().values.mean(), other_noise.pairs().values.mean()
        claim(case, Measured(float(a), classes * n), Measured(float(b), classes * n))


def inpaint(measure, case, run, mask_name):
    m = measure.model(run.model)
    n = measure.n(case)
    truth = embedded_photos(n, size=IMAGE_SIZE, seed=INVERSE_TRUTH_SEED)
    keep = make_mask(mask_name, IMAGE_SIZE)
    run_fn = dps_runner(m.kernel, truth.as_tensor(), keep, steps=run.nfe)
    return measure.sample(run, n, extra={"inverse": {"mask": mask_name, "truth": truth.hash}}, run_fn=run_fn)


@pytest.mark.parametrize("case", as_params(of("inverse")))
def test_inverse(case, measure, claim):
    mask = case.params["mask"]
    measured = measure.rp(*(inpaint(measure, case, r, mask) for r in case.runs))
    measured.extra["mask"] = mask
    versus = None
    if case.versus:
        vmask = case.params.get("versus_mask", mask)
        versus = measure.rp(*(inpaint(measure, case, r, vmask) for r in case.versus))
    claim(case, measured, versus)


@pytest.mark.parametrize("case", as_params(of("finetune")))
def test_finetune(case, measure, claim):
    if case.metric == "rp":
        claim(case, measure.pair(case, case.runs), measure.pair(case, case.versus))
    else:
        size = case.params["size"]
        claim(case, measure.gl(measure.sample(case.runs[0], measure.n(case)), size),
              measure.gl(measure.sample(case.versus[0], measure.n(case)), size))

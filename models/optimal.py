"""The closed-form optimal denoiser of Theorem 1 (paper, Eq. 2 / Appendix D, Eq. 17) in sigma-space.

For training images {y_i}, D*(x; sigma) = sum_i w_i y_i with w = softmax_i(-||x - y_i||^2 / 2 sigma^2).
The logits drop the ||x||^2 term (it cancels in the softmax), so each chunk of the dataset costs
two matrix products: logits = (x . y_i - ||y_i||^2 / 2) / sigma^2, then weights @ y. The softmax is
accumulated over dataset chunks with a running max (log-sum-exp), so the working memory is
batch_size x chunk_size, not batch x N.

The expanded logits are a difference of large numbers (||y||^2 / 2 is about 1,000 for a 32 px image in [-1, 1]):
in float32 a query near the boundary between two training images' regions loses precision as sigma falls
(measured between the two closest of 64 thumbnails, 32 px: D* off the float64 one by 2.5e-4 at sigma 1, 0.018
at 0.1, 0.5 at 0.02, against 4e-6 from float32 distances taken directly). An ODE path has chosen its image long
before such sigmas, away from a boundary, where the float32 error stays within 6e-6; `dtype=torch.float64` is
the reference.
"""
from __future__ import annotations

from typing import Optional

import torch

from models.denoisers import sigma_per_row


class OptimalDenoiser:
    """D* for a dataset tensor (N, ...); with `labels`, D*(x; sigma, c) uses only class c's images.

    `chunk_size` (dataset rows) and `batch_size` (query rows) bound the working memory at about
    batch_size * (chunk_size + d) values beside the dataset itself; `dtype=torch.float64` gives
    the reference precision.

    Unconditional D* gives each row the same bits whatever rows share its call. Conditional D* runs each class's
    rows as one matrix product, whose size then depends on the other rows' classes, and a CPU matrix product's low
    bits depend on its row count (measured: 1-3 rows differ from 16 by about 1e-16 in float64): so `generate`'s
    promise of the same bits for any selection of ids holds for it to rounding only. No case samples a conditional
    D* (the labelled one is a training target).
    """

    def __init__(self, data: torch.Tensor, labels: Optional[torch.Tensor] = None, chunk_size: int = 1024,
                 batch_size: int = 64, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        if data.ndim < 2 or len(data) == 0:
            raise ValueError(f"the optimal denoiser needs a non-empty dataset (N, ...), got shape {tuple(data.shape)}")
        if chunk_size < 1 or batch_size < 1:
            raise ValueError(f"chunk_size and batch_size must be >= 1, got {chunk_size}, {batch_size}")
        self.sample_shape = tuple(data.shape[1:])
        self.chunk_size, self.batch_size, self.dtype = chunk_size, batch_size, dtype
        flat = data.reshape(len(data), -1).to(device=device, dtype=dtype)
        self._sets = {None: _Prepared(flat)}
        if labels is not None:
            labels = torch.as_tensor(labels).reshape(-1)
            if len(labels) != len(data):
                raise ValueError(f"{len(labels)} labels for {len(data)} images")
            if labels.is_floating_point() or labels.is_complex() or int(labels.min()) < 0:
                raise ValueError(f"class labels are integers 0, 1, 2, ..., got {labels[:8].tolist()}")
            self._sets.update({int(c): _Prepared(flat[labels.to(flat.device) == c]) for c in labels.unique()})
        # classes 0..max label, as a network's label embedding counts them: a class between them with no image is
        # still one of them (and D* refuses to sample it), not a gap that shifts every later class
        self.num_classes = None if labels is None else int(labels.max()) + 1
        self._last_groups = None

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, sigma, label: Optional[torch.Tensor] = None) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.sample_shape:  # an NHWC query of the same size was denoised as NCHW
            raise ValueError(f"D* denoises queries of its images' shape (B, {', '.join(map(str, self.sample_shape))}), "
                             f"got {tuple(x.shape)}")
        given = torch.as_tensor(sigma)
        if given.device.type == "cpu":  # a sampler's grid level (the grid stays on the CPU): no wait for a GPU
            bad = torch.isnan(given) | (given < 0)  # NaN came out as a clean training image
            if bool(bad.any()):
                raise ValueError(f"D* takes noise levels sigma >= 0 (inf allowed), got {given[bad][:4].tolist()}")
        sigma = sigma_per_row(sigma, x)
        flat = x.reshape(len(x), -1)
        out = torch.empty_like(flat)
        if label is None:
            groups = [(None, torch.arange(len(x), device=x.device))]
        else:
            groups = self._groups(label, x)
        for c, rows in groups:
            if c not in self._sets:
                present = sorted(k for k in self._sets if k is not None)
                raise ValueError(f"label {c} has no training images; labels present: {present}")
            for start in range(0, len(rows), self.batch_size):
                r = rows[start:start + self.batch_size]
                out[r] = self._denoise(self._sets[c], flat[r], sigma[r]).to(out.dtype)
        return out.reshape(x.shape)

    def _groups(self, label, x: torch.Tensor) -> list:
        """The rows of each class in `label`, as (class, row indices on x's device). Finding them reads the labels on
        the host, a wait for a GPU; a sampler passes one label tensor to every step of a micro-batch, so the grouping
        of the last tensor is kept and found again while that tensor is unchanged (same object, same version counter,
        which every in-place write raises): one wait per micro-batch, not one per step."""
        cached = self._last_groups
        if (isinstance(label, torch.Tensor) and cached is not None and cached[0] is label
                and cached[1] == label._version and cached[2] == (len(x), x.device)):
            return cached[3]
        flat = torch.as_tensor(label, device=x.device).reshape(-1)
        if flat.is_floating_point() or flat.is_complex() or flat.dtype == torch.bool:  # 1.7 and True were class 1
            raise ValueError(f"class labels are integers 0, 1, 2, ..., got {flat[:8].tolist()}")
        flat = flat.expand(len(x))
        groups = [(int(c), (flat == c).nonzero().reshape(-1)) for c in flat.unique()]
        if isinstance(label, torch.Tensor):
            self._last_groups = (label, label._version, (len(x), x.device), groups)  # one assignment: thread-safe
        return groups

    def _denoise(self, ys: "_Prepared", x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = x.to(device=ys.data.device, dtype=self.dtype)
        # 1 / sigma^2 in float64, capped at the dtype's largest number: sigma 0, or one so small that 1 / sigma^2
        # overflows, keeps a finite scale. Each logit's numerator x.y - ||y||^2 / 2 has the running max subtracted
        # before it is scaled, so no logit overflows (inf - inf) and none needs a branch: under the cap every weight
        # but the nearest images' is exp(-inf) = 0, the softmax's limit (Theorem 1; exactly tied images, whose
        # weights are equal at every sigma, give their mean), and a GPU never waits for the host to choose a branch
        inv_var = (1.0 / sigma.to(ys.data.device, torch.float64) ** 2).clamp(max=torch.finfo(self.dtype).max)
        inv_var = inv_var.to(self.dtype)[:, None]
        run_max = run_sum = acc = None
        for start in range(0, len(ys.data), self.chunk_size):
            y = ys.data[start:start + self.chunk_size]
            numerator = torch.addmm(ys.half_sq_norm[start:start + self.chunk_size], x, y.T, beta=-1)
            chunk_max = numerator.amax(1, keepdim=True)
            new_max = chunk_max if run_max is None else torch.maximum(run_max, chunk_max)
            w = _flush_subnormal(numerator.sub_(new_max).mul_(inv_var).exp_())
            if run_max is None:  # the first chunk: nothing to rescale (at sigma = inf, -inf * 0 would be NaN)
                run_sum, acc = w.sum(1, keepdim=True), w @ y
            else:
                rescale = _flush_subnormal((run_max - new_max).mul_(inv_var).exp_())
                run_sum = run_sum.mul_(rescale).add_(w.sum(1, keepdim=True))
                acc = acc.mul_(rescale).addmm_(w, y)
            run_max = new_max
        return acc / run_sum


def _flush_subnormal(w: torch.Tensor) -> torch.Tensor:
    """Weights below the dtype's smallest normal number set to 0, in place. Such a weight is under 2^-126 of the
    chunk's largest (1), far below float32's resolution of the sums it joins, but a subnormal operand slows the CPU's
    matrix products: on an AVX-512 Xeon, D* (N = 50,000, d = 3,072) took 1.4 s a call with them and 0.23 s without,
    with the same bits out."""
    return w.masked_fill_(w < torch.finfo(w.dtype).tiny, 0)


class _Prepared:
    """A dataset (flattened) and its ||y||^2 / 2, computed once."""

    def __init__(self, data: torch.Tensor):
        self.data = data
        self.half_sq_norm = 0.5 * (data * data).sum(1)

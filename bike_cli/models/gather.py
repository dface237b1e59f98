"""Gather a tensor over processes with gradients (the Distributed InfoNCE of the paper's Appendix A.6).

`gather_with_grad(x)` concatenates every rank's `x` along dim 0, in rank order. Its backward sums
the incoming gradient over ranks (all_reduce SUM) and returns this rank's slice: when every rank
computes the same global loss L on the gathered tensor, rank r's gradient for its own `x` is then
world_size * dL/dx_r, and DDP's averaging of parameter gradients over ranks gives exactly dL/dtheta
of one process on the whole batch (parameters used after the gather get dL/dtheta on every rank,
which averaging keeps). Works on any backend with all_gather and all_reduce (gloo, NCCL).

Every rank must pass the same shape (pad the last batch or drop it): a mismatch raises ValueError
on every rank. Tensors without gradient (labels) are gathered the same way.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

_MAX_DIMS = 8  # shapes are exchanged as fixed-size vectors


def distributed_world_size() -> int:
    """The number of processes of the initialised default group, 1 when there is none."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """x [n, ...] on each of W ranks -> [W * n, ...] (rank order); x itself without a process group."""
    world = distributed_world_size()
    if world == 1:
        return x
    _check_same_shape(x, world)
    return _GatherWithGrad.apply(x)


def _check_same_shape(x: torch.Tensor, world: int) -> None:
    if x.ndim > _MAX_DIMS:
        raise ValueError(f"gather_with_grad takes tensors of at most {_MAX_DIMS} dims, not {x.ndim}")
    shape = torch.full((_MAX_DIMS,), -1, dtype=torch.long, device=x.device)  # fixed size on every rank
    shape[:x.ndim] = torch.tensor(x.shape, dtype=torch.long)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    listed = [tuple(d for d in s.tolist() if d >= 0) for s in shapes]
    if len(set(listed)) > 1:
        raise ValueError(f"gather_with_grad needs the same tensor shape on every rank; got {listed} "
                         "(pad or drop the last, smaller batch)")


class _GatherWithGrad(torch.autograd.Function):
    """Forward: all_gather + concatenate. Backward: all_reduce(SUM) of the gradient, own slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, 0)  # [W * n, ...]

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce is in place; the incoming gradient is not ours
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]

"""Gathering across processes with gradient, the one collective the global-batch contrastive losses need.

DiHT's HN-NCE (arXiv 2301.02280) and COSMO's smoothed ITC (arXiv 2312.06112) weight and normalise every anchor
over the negatives of the **global** batch. Each process therefore gathers the embeddings of all processes, keeping
the autograd graph of its own slice, and computes the loss of its own rows against all columns (open_clip's
`local_loss=True, gather_with_grad=True`). The backward of a gather is a sum over processes of the gradients each
one computed for that slice (a reduce-scatter), so that the gradient every process holds for its own embeddings is
that of the sum of all processes' losses, and DistributedDataParallel's mean over processes turns it into exactly
the gradient of the mean loss over the global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_gather_values", "all_gather_with_grad", "is_distributed", "rank_and_world_size"]


def is_distributed() -> bool:
    """True inside an initialised `torch.distributed` process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank_and_world_size() -> tuple[int, int]:
    """`(rank, world_size)` of this process; `(0, 1)` outside a process group."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every process's `(b_r, ...)` tensor along dim 0; backward hands each process its slice of the
    gradient summed over processes. Row counts may differ between processes (a skipped image shortens a batch)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: tuple[int, ...], group) -> torch.Tensor:
        rank = dist.get_rank(group)
        ctx.group, ctx.sizes, ctx.rank = group, sizes, rank
        longest = max(sizes)
        padded = tensor.new_zeros((longest, *tensor.shape[1:]))  # all_gather needs equal shapes
        padded[: tensor.shape[0]] = tensor
        slots = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(slots, padded.contiguous(), group=group)
        return torch.cat([slot[:size] for slot, size in zip(slots, sizes)])  # (sum(sizes), ...)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad = grad_output.contiguous()
        sizes, rank = ctx.sizes, ctx.rank
        if dist.get_backend(ctx.group) == "nccl" and len(set(sizes)) == 1:
            # Equal slices: a reduce-scatter moves half the bytes of an all-reduce.
            mine = grad.new_empty((sizes[rank], *grad.shape[1:]))
            dist.reduce_scatter_tensor(mine, grad, op=dist.ReduceOp.SUM, group=ctx.group)
            return mine, None, None
        # gloo has no reduce-scatter; an all-reduce followed by taking our slice sums the same numbers.
        dist.all_reduce(grad, op=dist.ReduceOp.SUM, group=ctx.group)
        start = sum(sizes[:rank])
        return grad[start : start + sizes[rank]], None, None


def all_gather_with_grad(tensor: torch.Tensor, group=None) -> tuple[torch.Tensor, int]:
    """Gather `tensor` from every process along dim 0, differentiably.

    Works with the gloo and nccl backends; processes may hold different numbers of rows. In a single process (no
    initialised group, or a group of one) it returns `tensor` itself.

    Args:
        tensor: `(b, ...)` local rows, e.g. this process's embeddings.
        group: the process group (default: the world).

    Returns:
        `(gathered, offset)`: the `(B_global, ...)` concatenation in rank order, and the index of this process's
        first row in it (its positives in a contrastive loss sit at `offset + arange(b)`).

    Example:
        >>> gathered, offset = all_gather_with_grad(torch.ones(3, 2))  # one process: a no-op
        >>> gathered.shape, offset
        (torch.Size([3, 2]), 0)
    """
    if not is_distributed():
        return tensor, 0
    world_size = dist.get_world_size(group)
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count, group=group)
    sizes = tuple(int(c.item()) for c in counts)
    rank = dist.get_rank(group)
    return _AllGatherWithGrad.apply(tensor, sizes, group), sum(sizes[:rank])


def all_gather_values(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """Every process's `(b_r, ...)` tensor concatenated in rank order, without gradient (ids, labels, counts).

    Row counts may differ between processes; integers are gathered exactly (no float round trip). In a single
    process it returns `tensor`.

    Example:
        >>> all_gather_values(torch.tensor([3, 1]))  # one process: a no-op
        tensor([3, 1])
    """
    if not is_distributed():
        return tensor
    world_size = dist.get_world_size(group)
    count = torch.tensor([tensor.shape[0]], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world_size)]
    dist.all_gather(counts, count, group=group)
    sizes = [int(c.item()) for c in counts]
    padded = tensor.new_zeros((max(sizes), *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    slots = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(slots, padded.contiguous(), group=group)
    return torch.cat([slot[:size] for slot, size in zip(slots, sizes)])

"""Evaluation under `torch.distributed`: each process encodes a shard of the rows, the results are gathered.

Zero-shot evaluation (CLIP, arXiv 2103.00020, §3.1.4) is dominated by encoding the images (and, for retrieval, the
texts). Inside an initialised process group of W > 1 processes (DDP through accelerate, gloo or nccl), row i of the
evaluation data is encoded by process `i mod W` only: every row once, none twice, for any number of rows, and a
stream is split the same way while it is read (no process holds it). The embeddings are gathered back into row
order, so every process computes the same metrics from the same tensors as one process would, and
`metric_for_best_model` and early stopping decide alike everywhere.

Two kinds of gather: embeddings and rankings go through a padded `all_gather` of tensors (uneven shards padded to
the longest, then cut; no pickling of large float arrays, exact values, on the backend's device), the ragged Python
metadata (row indices, captions, labels, skip counts) through `all_gather_object`. Every process runs the same
number of forwards (a process whose shard is exhausted forwards a blank input and drops it): under DeepSpeed ZeRO-3 a
forward is a collective, and a process that stopped early would leave the others waiting.

Outside a process group (or in a group of one) every function here is the plain single-process computation.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

__all__ = ["any_process", "gather_encoded", "gather_objects", "gather_rows", "gather_strided", "process_shard"]


def process_shard() -> tuple[int, int]:
    """`(shard_index, num_shards)`: this process's rank and the world size; `(0, 1)` outside a process group."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _collective_device() -> torch.device:
    """Where a collective's tensors must live: the current GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_process(flag: bool) -> bool:
    """True when `flag` is true on at least one process (a MAX all-reduce); `flag` itself in one process."""
    if process_shard()[1] == 1:
        return flag
    value = torch.tensor([int(flag)], device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_objects(value: Any) -> list[Any]:
    """Every process's picklable `value`, in rank order; `[value]` in one process."""
    _, world_size = process_shard()
    if world_size == 1:
        return [value]
    values: list[Any] = [None] * world_size
    dist.all_gather_object(values, value)
    return values


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's `(n_r, ...)` tensor concatenated in rank order, `n_r` possibly different (padded gather).

    Returns a tensor on `tensor`'s device; in one process, `tensor` itself.
    """
    _, world_size = process_shard()
    if world_size == 1:
        return tensor
    device = _collective_device()
    local = tensor.to(device)
    sizes = [int(size) for size in gather_objects(tensor.shape[0])]
    padded = local.new_zeros((max(sizes), *local.shape[1:]))  # all_gather needs equal shapes
    padded[: local.shape[0]] = local
    slots = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(slots, padded.contiguous())
    return torch.cat([slot[:size] for slot, size in zip(slots, sizes)]).to(tensor.device)


def gather_strided(tensor: torch.Tensor, num_rows: int) -> torch.Tensor:
    """The `(num_rows, ...)` tensor whose rows `rank::world_size` each process holds (in that order) as `tensor`."""
    rank, world_size = process_shard()
    if world_size == 1:
        return tensor
    gathered = gather_rows(tensor)  # rows 0::W, then 1::W, ...
    positions = torch.cat([torch.arange(r, num_rows, world_size) for r in range(world_size)])
    ordered = torch.empty_like(gathered)
    ordered[positions.to(gathered.device)] = gathered
    return ordered


def gather_encoded(embeddings: torch.Tensor | None, extras: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """The image embeddings and extras of all processes (see `encoding.encode_images`), in dataset row order.

    Args:
        embeddings: this process's `(n_r, P)` embeddings (`None` if it encoded none).
        extras: its `index` (dataset rows), `skipped`, `skipped_large` and kept columns (lists).

    Returns:
        `(embeddings, extras)` of every row of every process, sorted by row; skip counts summed over processes.

    Raises:
        ValueError: no process could decode an image.
    """
    parts = gather_objects({**extras, "dim": None if embeddings is None else tuple(embeddings.shape[1:])})
    index = [row for part in parts for row in part["index"]]
    if not index:  # the same answer on every process: all of them raise
        raise ValueError("no image in the evaluation data could be decoded")
    if embeddings is None:  # a process without images still takes part in the gather
        dim = next(part["dim"] for part in parts if part["dim"] is not None)
        embeddings = torch.zeros((0, *dim), dtype=torch.float32)
    gathered = gather_rows(embeddings)  # (N, P), rank order
    order = sorted(range(len(index)), key=index.__getitem__)  # back to the dataset's row order
    merged: dict[str, Any] = {"index": [index[i] for i in order],
                              "skipped": sum(part["skipped"] for part in parts),
                              "skipped_large": sum(part["skipped_large"] for part in parts)}
    for key in extras:
        if key not in merged:
            values = [value for part in parts for value in part[key]]
            merged[key] = [values[i] for i in order]
    return gathered[torch.tensor(order, device=gathered.device)], merged

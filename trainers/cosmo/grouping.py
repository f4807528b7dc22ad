"""GRIT's grouped mini-batch sampling: batches of similar pairs, built from the embeddings training already computed.

GRIT-VLP (Byun et al., ECCV 2022, https://arxiv.org/abs/2208.04060, grouped mini-batch sampling), which COSMO
(arXiv 2312.06112) trains with. Every training step hands the batch's detached ITC embeddings and dataset indices to
the sampler (the trainer's embedding tap: no extra forward). Whenever `buffer_size` pairs have been collected, the
buffer is shuffled, split into search spaces of `search_space` pairs, and each space is ordered by a greedy chain:
start at a random pair; take the unused pair whose **text** is most similar to the current pair's **image**, then the
unused pair whose **image** is most similar to that pair's text, and so on. Consecutive chunks of the batch size of
that order are mini-batches of mutually similar pairs, whose in-batch negatives are hard. The order built during
epoch t is served in epoch t + 1 after a shuffle of whole mini-batches; epoch 0 is random.

Beyond the official code (which groups on each GPU separately, in float32 index queues, and loses its order on
resume): indices are integers end to end; the pairs a step did not observe (the tail `drop_last` leaves out, rows
the collator skipped) are carried into the next epoch's order instead of being lost; the whole state is saved in
Trainer checkpoints (`state_dict`); and under several processes the grouping may run over the gathered buffer of all
processes (`grouping="global"`), so that a global batch (the one the ITC loss is computed over) is one chunk of the
chain, split between the processes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["GroupedMiniBatchSampler", "greedy_chain"]

# GRIT-VLP's and COSMO's values for a per-GPU batch of 128: a buffer of 48,000 pairs in search spaces of 1,920.
PAPER_BATCH, PAPER_BUFFER, PAPER_SEARCH_SPACE = 128, 48_000, 1_920


def greedy_chain(image_embeds: torch.Tensor, text_embeds: torch.Tensor, start: int) -> list[int]:
    """GRIT's greedy ordering of one search space: image → most similar unused text → its image → ... .

    Args:
        image_embeds: `(M, D)` L2-normalised image embeddings of the space's pairs.
        text_embeds: `(M, D)` L2-normalised text embeddings (row m is the text of pair m).
        start: the pair the chain starts from.

    Returns:
        A permutation of `range(M)`: pair `order[k+1]` is the unused pair whose text (k even) or image (k odd) is the
        most similar to the image (k even) or text (k odd) of pair `order[k]`.

    Example:
        >>> images = torch.eye(3)
        >>> texts = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # text m ~ image (m + 2) % 3
        >>> greedy_chain(images, texts, start=0)   # image 0 ~ text 1; text 1 ~ image 0 (used) -> image 2 ...
        [0, 1, 2]
    """
    count = image_embeds.shape[0]
    if count == 0:
        return []
    similarity = image_embeds.float() @ text_embeds.float().t()  # (M, M): [image m, text n]
    used = torch.zeros(count, dtype=torch.bool)
    order, current, from_image = [start], start, True
    used[start] = True
    for _ in range(count - 1):
        # From an image, choose among the texts (a row of the similarity); from a text, among the images (a column).
        scores = similarity[current] if from_image else similarity[:, current]
        current = int(scores.masked_fill(used, -math.inf).argmax())
        used[current] = True
        order.append(current)
        from_image = not from_image
    return order


def _chunks(order: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [order[i:i + size] for i in range(0, order.numel(), size)]


class GroupedMiniBatchSampler:
    """A batch sampler of GRIT's grouped mini-batches for one process, stateful and resumable.

    Built by the trainer through its `batch_sampler` factory (`trainers.sampling`): `GroupedMiniBatchSampler.factory(
    buffer_size=..., search_space=..., grouping=...)`. Yields this process's batches of dataset indices; `observe`
    is the trainer's embedding tap.

    Args:
        num_rows: the dataset's size N.
        batch_size: pairs per batch of one process (B).
        drop_last: drop an incomplete last batch; its pairs are served first in the next epoch, so none is starved.
        seed: seeds every shuffle (epoch 0's permutation, the buffer shuffles, chain starts, mini-batch shuffles).
        rank, world_size: this process and the number of processes.
        buffer_size: pairs collected before a grouping (GRIT/COSMO: 48,000 per process at B = 128). Default:
            375 · B (the papers' ratio), over all processes with `grouping="global"`.
        search_space: pairs per greedy chain (1,920 at B = 128). Default: 15 · B (· world size when global), at least
            one batch.
        grouping: `"per_process"`: each process groups what it observed, and keeps its pairs (the official code);
            `"global"`: the buffers of all processes are gathered, every process computes the same chain, and each
            chunk of B · world_size consecutive pairs of it is one global batch, split between the processes (the
            batch the global ITC is computed over is then one group of similar pairs).

    Every index is served exactly once per epoch without `drop_last` (at most once with it, the dropped ones first
    in the next epoch; globally, a last chunk smaller than the number of processes is carried over too; per
    process, the last N mod world_size rows are never served); batches are those of a random permutation in
    epoch 0.
    """

    def __init__(self, num_rows: int, batch_size: int, *, drop_last: bool = True, seed: int = 0, rank: int = 0,
                 world_size: int = 1, buffer_size: int | None = None, search_space: int | None = None,
                 grouping: str = "global"):
        if grouping not in ("global", "per_process"):
            raise ValueError(f"grouping must be 'global' or 'per_process', got {grouping!r}")
        if num_rows < 1 or batch_size < 1:
            raise ValueError(f"need at least one row and a positive batch size, got {num_rows} and {batch_size}")
        self.num_rows, self.batch_size, self.drop_last, self.seed = num_rows, batch_size, drop_last, seed
        self.rank, self.world_size, self.grouping = rank, world_size, grouping
        span = world_size if grouping == "global" else 1  # processes one grouping spans
        self.buffer_size = buffer_size or PAPER_BUFFER * batch_size * span // PAPER_BATCH
        self.search_space = max(search_space or PAPER_SEARCH_SPACE * batch_size * span // PAPER_BATCH,
                                batch_size * span)
        # The rows this process is responsible for: all of them (global: the order is built over everything) or its
        # strided share (per process: as a DistributedSampler, fixed for the whole run as in the official code).
        # (Per process, the last N mod world_size rows are left out, as a DistributedSampler without padding does:
        # every process must serve as many batches.)
        owned = torch.arange(num_rows)
        self.owned = owned if grouping == "global" else owned[: num_rows - num_rows % world_size][rank::world_size]
        self.epoch = 0
        self._order: torch.Tensor | None = None  # the order being served, set when an epoch starts
        self._next_groups: list[torch.Tensor] = []  # chains built this epoch, for the next one
        self._groupings = 0
        self._reset_buffer()
        self._served: torch.Tensor = torch.zeros(num_rows, dtype=torch.bool)  # observed this epoch

    @classmethod
    def factory(cls, **options: Any):
        """A `trainers.sampling.BatchSamplerFactory` building this sampler with `options`."""

        def build(dataset, *, batch_size, drop_last, seed, rank, world_size):
            return cls(len(dataset), batch_size, drop_last=drop_last, seed=seed, rank=rank, world_size=world_size,
                       **options)

        return build

    # ---- serving --------------------------------------------------------------------------------------------------

    def _generator(self, *salt: int) -> torch.Generator:
        return torch.Generator().manual_seed(hash((self.seed, *salt)) % (2**63))

    def _global_batch(self) -> int:
        return self.batch_size * (self.world_size if self.grouping == "global" else 1)

    def _first_order(self) -> torch.Tensor:
        permutation = torch.randperm(self.owned.numel(), generator=self._generator(0, -1))
        return self.owned[permutation]

    def _current_order(self) -> torch.Tensor:
        if self._order is None:
            self._order = self._first_order()
        return self._order

    def _batches(self, order: torch.Tensor) -> list[list[int]]:
        """This process's batches of an order of the rows (global: chunks of B · world, split between processes)."""
        size = self._global_batch()
        chunks = _chunks(order, size)
        if chunks and chunks[-1].numel() < size and (self.drop_last or chunks[-1].numel() < self.world_size
                                                     and self.grouping == "global"):
            chunks = chunks[:-1]  # left for the next epoch
        if self.grouping == "per_process":
            return [chunk.tolist() for chunk in chunks]
        mine = []
        for chunk in chunks:
            share = math.ceil(chunk.numel() / self.world_size)
            mine.append(chunk[self.rank * share:(self.rank + 1) * share].tolist())
        return mine

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches(self._current_order()))

    def __len__(self) -> int:
        count, size = self.owned.numel(), self._global_batch()
        return count // size if self.drop_last else math.ceil(count / size) - (
            self.grouping == "global" and 0 < count % size < self.world_size)

    # ---- the epoch boundary ----------------------------------------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch`: group what is left in the buffer and serve the chain built during the epoch before.

        Idempotent for the epoch already started (the Trainer and its data loader both call it)."""
        if epoch == self.epoch and self._order is not None:
            return
        if epoch != self.epoch + 1 or self._order is None:  # a fresh start or a jump: serve what the state allows
            self.epoch = epoch
            self._order = self._order if self._order is not None else self._first_order()
            return
        self._group(final=True)
        chain = torch.cat(self._next_groups) if self._next_groups else torch.zeros(0, dtype=torch.long)
        # Pairs of this epoch's order that were not observed (a dropped tail, skipped rows) go first next time.
        served = self._served
        if self.grouping == "global" and self.world_size > 1 and dist.is_initialized():
            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            counts = served.to(device, torch.int32)
            dist.all_reduce(counts)  # served by any process
            served = counts.cpu() > 0
        unobserved = self._order[~served[self._order]]
        chunks = _chunks(chain, self._global_batch())
        shuffle = torch.randperm(len(chunks), generator=self._generator(epoch, -2)).tolist()
        self._order = torch.cat([unobserved, *[chunks[i] for i in shuffle]]) if chunks else unobserved
        self.epoch, self._next_groups, self._served = epoch, [], torch.zeros(self.num_rows, dtype=torch.bool)

    # ---- the embedding tap and the grouping ------------------------------------------------------------------------

    def _reset_buffer(self) -> None:
        self._indices: list[torch.Tensor] = []
        self._images: list[torch.Tensor] = []
        self._texts: list[torch.Tensor] = []
        self._buffered = 0

    def observe(self, indices: torch.Tensor, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
        """The embedding tap: store a training batch's dataset indices and detached ITC embeddings (float16, CPU)."""
        indices = indices.detach().to("cpu", torch.long)
        self._served[indices] = True
        self._indices.append(indices)
        self._images.append(image_embeds.detach().to("cpu", torch.float16))
        self._texts.append(text_embeds.detach().to("cpu", torch.float16))
        self._buffered += indices.numel() * (self.world_size if self.grouping == "global" else 1)
        if self._buffered >= self.buffer_size:
            self._group(final=False)

    def _gathered_buffer(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mine = (torch.cat(self._indices) if self._indices else torch.zeros(0, dtype=torch.long),
                torch.cat(self._images) if self._images else torch.zeros(0, 0, dtype=torch.float16),
                torch.cat(self._texts) if self._texts else torch.zeros(0, 0, dtype=torch.float16))
        if self.grouping == "per_process" or self.world_size == 1 or not dist.is_initialized():
            return mine
        parts = [None] * self.world_size
        dist.all_gather_object(parts, mine)  # every process holds every process's buffer, in rank order
        return tuple(torch.cat([part[k] for part in parts if part[k].numel()]) for k in range(3))

    def _group(self, *, final: bool) -> None:
        """Chain the buffered pairs (the buffer shuffled, then split into search spaces) and clear the buffer."""
        indices, images, texts = self._gathered_buffer()
        self._reset_buffer()
        if indices.numel() == 0:
            return
        generator = self._generator(self.epoch, self._groupings)
        self._groupings += 1
        shuffle = torch.randperm(indices.numel(), generator=generator)
        indices, images, texts = indices[shuffle], images[shuffle], texts[shuffle]
        for start in range(0, indices.numel(), self.search_space):
            space = slice(start, start + self.search_space)
            first = int(torch.randint(indices[space].numel(), (1,), generator=generator))
            order = greedy_chain(images[space], texts[space], first)
            self._next_groups.append(indices[space][order])

    # ---- checkpoints -------------------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to serve what an uninterrupted one would: tensors and plain values."""
        indices, images, texts = (torch.cat(x) if x else torch.zeros(0) for x in
                                  (self._indices, self._images, self._texts))
        return {
            "epoch": self.epoch, "groupings": self._groupings, "buffered": self._buffered,
            "order": self._current_order(), "served": self._served,
            "next_groups": torch.cat(self._next_groups) if self._next_groups else torch.zeros(0, dtype=torch.long),
            "next_group_sizes": torch.tensor([g.numel() for g in self._next_groups], dtype=torch.long),
            "buffer_indices": indices.long(), "buffer_images": images.half(), "buffer_texts": texts.half(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `state_dict()`'s output."""
        self.epoch, self._groupings = int(state["epoch"]), int(state["groupings"])
        self._order, self._served = state["order"].long(), state["served"].bool()
        self._next_groups = list(torch.split(state["next_groups"].long(), state["next_group_sizes"].tolist()))
        self._reset_buffer()
        if state["buffer_indices"].numel():
            self._indices = [state["buffer_indices"].long()]
            self._images, self._texts = [state["buffer_images"]], [state["buffer_texts"]]
        self._buffered = int(state["buffered"])

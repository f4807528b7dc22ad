"""Hooks for recipes that choose their own batches: a batch-sampler factory, an embedding tap, and sampler state.

GRIT-VLP (arXiv 2208.04060, grouped mini-batch sampling) and COSMO (arXiv 2312.06112) group similar pairs into mini-batches: the
sampler needs the embeddings the forward pass already computed (no extra forward), and its order must survive a
resume. `ContrastiveTrainer(batch_sampler=factory)` builds the sampler with `factory(dataset, batch_size=...,
drop_last=..., seed=..., rank=..., world_size=...)` (as sentence-transformers' trainer takes a `batch_sampler`
argument); the sampler yields **this process's** batches of dataset indices, and may also implement:

- `set_epoch(epoch)`: called at the start of every epoch (also the resumed one);
- `observe(indices, image_embeds, text_embeds)`: the embedding tap, called after every training forward with the
  batch's `index` column and the detached embeddings (`embedding_taps=` adds other observers);
- `state_dict()` / `load_state_dict(state)`: saved into every Trainer checkpoint (one file per process, tensors as
  safetensors, the rest as JSON: no pickle) and restored on `train(resume_from_checkpoint=...)`, so a resumed run
  serves the order an uninterrupted one would have.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors.torch import load_file, save_file

__all__ = ["BatchSamplerFactory", "EmbeddingTap", "TrainBatchSampler", "load_sampler_state", "save_sampler_state",
           "sampler_state_files"]


@runtime_checkable
class TrainBatchSampler(Protocol):
    """A batch sampler of one process: batches of dataset row indices, `len()` of them per epoch."""

    def __iter__(self) -> Iterator[list[int]]: ...

    def __len__(self) -> int: ...


class BatchSamplerFactory(Protocol):
    """Builds the training batch sampler of one process."""

    def __call__(self, dataset: Any, *, batch_size: int, drop_last: bool, seed: int, rank: int,
                 world_size: int) -> TrainBatchSampler: ...


@runtime_checkable
class EmbeddingTap(Protocol):
    """Sees the detached embeddings of every training batch, with the batch's dataset indices."""

    def observe(self, indices: torch.Tensor, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None: ...


def sampler_state_files(folder: str | Path, rank: int) -> tuple[Path, Path]:
    """The two files of one process's sampler state in a checkpoint folder: tensors, then everything else."""
    folder = Path(folder)
    return folder / f"sampler_state-rank{rank}.safetensors", folder / f"sampler_state-rank{rank}.json"


def save_sampler_state(state: dict[str, Any], folder: str | Path, rank: int) -> None:
    """Write a sampler's `state_dict()`: tensor values to safetensors, the rest (JSON-serialisable) to JSON."""
    tensors_file, json_file = sampler_state_files(folder, rank)
    tensors_file.parent.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous() for key, value in state.items() if torch.is_tensor(value)}
    rest = {key: value for key, value in state.items() if not torch.is_tensor(value)}
    save_file(tensors, str(tensors_file))
    json_file.write_text(json.dumps(rest))


def load_sampler_state(folder: str | Path, rank: int) -> dict[str, Any] | None:
    """Read what `save_sampler_state` wrote, or `None` when the checkpoint holds no sampler state for this rank.

    Raises:
        ValueError: the files exist but cannot be read; the message names them.
    """
    tensors_file, json_file = sampler_state_files(folder, rank)
    if not json_file.is_file():
        return None
    try:
        state = json.loads(json_file.read_text())
        state.update(load_file(str(tensors_file)))
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot read the sampler state {json_file} / {tensors_file}: {error}") from error
    return state

"""Embedding a dataset's images and texts for evaluation, robustly and without holding a stream in memory.

Works on any model with CLIP's `get_image_features` / `get_text_features` (DiHT, `CLIPModel`, COSMO, a
`PeftModel` around one) and on any `datasets` source. Images are decoded with `image_text_data.load_image` in
DataLoader workers: an image that cannot be decoded is skipped and counted, never a crash in a worker. Under
`torch.distributed`, `encode_image_shards` and `encode_text_shards` have each process encode its shard (row
`i mod world_size`) and gather the embeddings in row order (see `sharding`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from image_text_data.images import (
    DEFAULT_MAX_RESIZED_PIXELS,
    ImageTooLargeError,
    UndecodableImageError,
    load_image,
    processor_shortest_edge,
    resized_size,
)

from .sharding import any_process, gather_encoded, gather_strided, process_shard

__all__ = ["ImageBatchCollator", "LazyImages", "encode_image_shards", "encode_images", "encode_text_shards",
           "encode_texts", "features", "image_batches"]


def features(output: Any) -> torch.Tensor:
    """The embedding tensor of `get_*_features`: transformers 5 returns a `BaseModelOutputWithPooling` whose
    `pooler_output` holds it; older code and other models return the tensor itself."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _device_and_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


@torch.inference_mode()
def encode_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings.

    Args:
        model: a model with `get_text_features` (DiHT, CLIP, COSMO).
        tokenizer: its tokenizer; texts are padded per batch and truncated to the model's context.
        texts: the texts to encode.
        batch_size: texts per forward.

    Returns:
        `(len(texts), projection_dim)` float32 tensor on the model's device, rows of unit norm.
    """
    device, _ = _device_and_dtype(model)
    chunks = []
    for start in range(0, len(texts), batch_size):
        tokens = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True, return_tensors="pt")
        chunks.append(features(model.get_text_features(**tokens.to(device))).float())
    return F.normalize(torch.cat(chunks), dim=-1)


@dataclass
class ImageBatchCollator:
    """Decodes and preprocesses a batch of dataset rows for evaluation, skipping images that cannot be decoded.

    Returns `{"pixel_values": (b, 3, H, W), "index": (b,), "skipped": int, "skipped_large": int, **extra columns}`,
    where `index` is the position of each kept row in the dataset, `skipped` counts every skipped image and
    `skipped_large` those of them that the processor's shortest-edge resize would make larger than
    `max_resized_pixels` (checked before decoding with the default `decode`, on the decoded size with another).
    Picklable, so it runs in DataLoader workers.
    """

    image_processor: Any
    image_column: str = "image"
    keep_columns: tuple[str, ...] = ()
    decode: Callable[[Any], Any] = field(default=load_image)
    max_resized_pixels: int | None = DEFAULT_MAX_RESIZED_PIXELS

    def _decode(self, cell: Any):
        shortest, longest = processor_shortest_edge(self.image_processor)
        if self.decode is load_image:
            return load_image(cell, shortest_edge=shortest, longest_edge=longest,
                              max_resized_pixels=self.max_resized_pixels)
        image = self.decode(cell)
        if shortest is not None and self.max_resized_pixels is not None:
            width, height = resized_size(*image.size, shortest, longest)
            if width * height > self.max_resized_pixels:
                raise ImageTooLargeError(f"image of {image.width}x{image.height} pixels would be resized to "
                                         f"{width}x{height}, more than {self.max_resized_pixels:,} pixels")
        return image

    def __call__(self, rows: list[tuple[int, dict]]) -> dict[str, Any]:
        images, kept, large = [], [], 0
        for index, row in rows:
            try:
                images.append(self._decode(row[self.image_column]))
            except ImageTooLargeError:
                large += 1
                continue
            except UndecodableImageError:
                continue
            kept.append((index, row))
        batch: dict[str, Any] = {"index": torch.tensor([i for i, _ in kept], dtype=torch.long),
                                 "skipped": len(rows) - len(kept), "skipped_large": large}
        batch["pixel_values"] = (self.image_processor(images, return_tensors="pt")["pixel_values"] if images
                                 else None)
        for column in self.keep_columns:
            batch[column] = [row[column] for _, row in kept]
        return batch


class _IndexedRows(torch.utils.data.Dataset):
    """`(index, row)` pairs of the rows `shard_index::num_shards` of a map-style dataset, so the collator knows
    which rows it kept."""

    def __init__(self, dataset, num_shards: int = 1, shard_index: int = 0):
        self.dataset, self.rows = dataset, range(shard_index, len(dataset), num_shards)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> tuple[int, dict]:
        index = self.rows[position]
        return index, self.dataset[index]


class _IndexedStream(torch.utils.data.IterableDataset):
    """`(position, row)` pairs of the rows of a stream whose position is `shard_index` modulo `num_shards`, read
    lazily: the stream is never held in memory (the other rows are read past, not decoded)."""

    def __init__(self, stream, num_shards: int = 1, shard_index: int = 0):
        self.stream, self.num_shards, self.shard_index = stream, num_shards, shard_index

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        return ((position, row) for position, row in enumerate(self.stream)
                if position % self.num_shards == self.shard_index)


def image_batches(dataset, image_processor, *, image_column: str = "image", keep_columns: Sequence[str] = (),
                  batch_size: int = 64, num_workers: int = 0, num_shards: int = 1, shard_index: int = 0) -> DataLoader:
    """A DataLoader of preprocessed image batches (see `ImageBatchCollator`) over a map-style dataset or a stream
    (a streaming `IterableDataset` yields rows lazily, in one process; their index is their position in it).

    With `num_shards > 1` it covers only the rows whose index is `shard_index` modulo `num_shards` (one process's
    shard, as `datasets.Dataset.shard(..., contiguous=False)`); `index` stays the row's index in the whole data."""
    from datasets import Image as ImageFeature
    from datasets import IterableDataset

    feature = (dataset.features or {}).get(image_column) if hasattr(dataset, "features") else None
    if isinstance(feature, ImageFeature) and feature.decode:  # decode in the collator, where failures are counted
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    collator = ImageBatchCollator(image_processor, image_column, tuple(keep_columns))
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    if isinstance(dataset, IterableDataset):  # one worker: positions in a stream must stay in order
        return DataLoader(_IndexedStream(dataset, num_shards, shard_index), batch_size=batch_size,
                          collate_fn=collator, num_workers=0)
    return DataLoader(_IndexedRows(dataset, num_shards, shard_index), batch_size=batch_size, collate_fn=collator,
                      num_workers=num_workers)


@torch.inference_mode()
def encode_images(model, batches: Iterable[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, Any]]:
    """L2-normalised image embeddings of every decodable image.

    Args:
        model: a model with `get_image_features`.
        batches: batches from `image_batches` (or any iterable of dicts with `pixel_values`).

    Returns:
        `(embeddings, extras)`: embeddings `(N, projection_dim)` float32; extras holds `index` (the dataset row of
        each embedding), `skipped` (images that could not be used), `skipped_large` (those of them too large for
        the processor's resize) and every kept column as a list.

    Raises:
        ValueError: no image could be decoded.
    """
    device, dtype = _device_and_dtype(model)
    chunks, extras = [], {"index": [], "skipped": 0, "skipped_large": 0}
    for batch in batches:
        extras["skipped"] += int(batch.get("skipped", 0))
        extras["skipped_large"] += int(batch.get("skipped_large", 0))
        if batch["pixel_values"] is None:
            continue
        chunks.append(features(model.get_image_features(pixel_values=batch["pixel_values"].to(device, dtype))))
        extras["index"].append(batch.get("index", torch.arange(len(batch["pixel_values"]))))
        for key, value in batch.items():
            if key not in ("pixel_values", "index", "skipped", "skipped_large"):
                extras.setdefault(key, []).extend(value)
    if not chunks:
        raise ValueError("no image in the evaluation data could be decoded")
    extras["index"] = torch.cat(extras["index"]).tolist()
    return F.normalize(torch.cat(chunks).float(), dim=-1), extras


@torch.inference_mode()
def encode_image_shards(model, dataset, image_processor, *, image_column: str = "image",
                        keep_columns: Sequence[str] = (), batch_size: int = 64,
                        num_workers: int = 0) -> tuple[torch.Tensor, dict[str, Any]]:
    """`encode_images(model, image_batches(dataset, ...))`, split between the processes of `torch.distributed`.

    In one process it is exactly that. Under a process group of W processes, each encodes the rows `rank::W`
    (uneven shards when W does not divide N; a stream is split while it is read) and the embeddings and extras of
    all processes are gathered, sorted back into row order, with skip counts summed: every process returns what one
    process would. The processes step together, one forward each per batch, a process without images at a step
    forwarding a blank image (a ZeRO-3 forward is collective).

    Returns:
        `(embeddings, extras)` as `encode_images`, on every process.

    Raises:
        ValueError: no process could decode an image.
    """
    rank, world_size = process_shard()
    options = dict(image_column=image_column, keep_columns=keep_columns, batch_size=batch_size,
                   num_workers=num_workers)
    if world_size == 1:
        return encode_images(model, image_batches(dataset, image_processor, **options))
    batches = iter(image_batches(dataset, image_processor, num_shards=world_size, shard_index=rank, **options))
    device, dtype = _device_and_dtype(model)
    blank = image_processor(Image.new("RGB", (32, 32)), return_tensors="pt")["pixel_values"].to(device, dtype)
    chunks, extras = [], {"index": [], "skipped": 0, "skipped_large": 0, **{column: [] for column in keep_columns}}
    while True:
        batch = next(batches, None)
        if not any_process(batch is not None):  # every process has run out
            break
        pixel_values = None if batch is None else batch["pixel_values"]
        if batch is not None:
            extras["skipped"] += int(batch["skipped"])
            extras["skipped_large"] += int(batch["skipped_large"])
        output = features(model.get_image_features(
            pixel_values=blank if pixel_values is None else pixel_values.to(device, dtype)))  # (b, P)
        if pixel_values is None:
            chunks.append(output[:0])  # a blank step: nothing of it is kept
            continue
        chunks.append(output)
        extras["index"] += batch["index"].tolist()
        for column in keep_columns:
            extras[column].extend(batch[column])
    local = F.normalize(torch.cat(chunks).float(), dim=-1) if chunks else None  # (n_rank, P)
    return gather_encoded(local, extras)


@torch.inference_mode()
def encode_text_shards(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
    """`encode_texts(model, tokenizer, texts)`, split between the processes of `torch.distributed`.

    In one process it is exactly that. Under W processes each encodes the texts `rank::W` and the embeddings are
    gathered back into the order of `texts`. Every process runs as many forwards as the one with the most texts
    (a ZeRO-3 forward is collective): one that has run out forwards the first text again and drops the result.

    Returns:
        `(len(texts), P)` float32 unit rows on the model's device, on every process.
    """
    rank, world_size = process_shard()
    if world_size == 1:
        return encode_texts(model, tokenizer, texts, batch_size=batch_size)
    mine = list(texts[rank::world_size])
    forwards = -(-len(texts[0::world_size]) // batch_size)  # rank 0 holds the most texts: its number of batches
    device, _ = _device_and_dtype(model)
    chunks = []
    for step in range(forwards):
        batch = mine[step * batch_size:(step + 1) * batch_size]
        tokens = tokenizer(batch or list(texts[:1]), padding=True, truncation=True, return_tensors="pt")
        output = features(model.get_text_features(**tokens.to(device))).float()  # (b, P)
        chunks.append(output if batch else output[:0])  # a blank step keeps the processes in step
    return gather_strided(F.normalize(torch.cat(chunks), dim=-1), len(texts))


class LazyImages(Sequence):
    """The images of some dataset rows, decoded only when read: a plot shows a handful of N images, and ITM
    re-ranking decodes only the images of the top-k candidates."""

    def __init__(self, dataset, column: str, rows: Sequence[int]):
        self.dataset, self.column, self.rows = dataset, column, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int):
        return load_image(self.dataset[self.rows[position]][self.column])

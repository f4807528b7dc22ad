"""Embedding a dataset's images and texts for evaluation, robustly and without holding a stream in memory.

Works on any model with CLIP's `get_image_features` / `get_text_features` (DiHT, `CLIPModel`, COSMO, a
`PeftModel` around one) and on any `datasets` source. Images are decoded with `image_text_data.load_image` in
DataLoader workers: an image that cannot be decoded is skipped and counted, never a crash in a worker.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from image_text_data.images import (
    DEFAULT_MAX_RESIZED_PIXELS,
    ImageTooLargeError,
    UndecodableImageError,
    load_image,
    processor_shortest_edge,
    resized_size,
)

__all__ = ["ImageBatchCollator", "LazyImages", "encode_images", "encode_texts", "features", "image_batches"]


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
    """`(index, row)` pairs of a map-style dataset, so the collator knows which rows it kept."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, dict]:
        return index, self.dataset[index]


class _IndexedStream(torch.utils.data.IterableDataset):
    """`(position, row)` pairs of a stream, read lazily: the stream is never held in memory."""

    def __init__(self, stream):
        self.stream = stream

    def __iter__(self) -> Iterator[tuple[int, dict]]:
        return enumerate(self.stream)


def image_batches(dataset, image_processor, *, image_column: str = "image", keep_columns: Sequence[str] = (),
                  batch_size: int = 64, num_workers: int = 0) -> DataLoader:
    """A DataLoader of preprocessed image batches (see `ImageBatchCollator`) over a map-style dataset or a stream
    (a streaming `IterableDataset` yields rows lazily, in one process; their index is their position in it)."""
    from datasets import Image as ImageFeature
    from datasets import IterableDataset

    feature = (dataset.features or {}).get(image_column) if hasattr(dataset, "features") else None
    if isinstance(feature, ImageFeature) and feature.decode:  # decode in the collator, where failures are counted
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    collator = ImageBatchCollator(image_processor, image_column, tuple(keep_columns))
    if isinstance(dataset, IterableDataset):  # one worker: positions in a stream must stay in order
        return DataLoader(_IndexedStream(dataset), batch_size=batch_size, collate_fn=collator, num_workers=0)
    return DataLoader(_IndexedRows(dataset), batch_size=batch_size, collate_fn=collator, num_workers=num_workers)


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


class LazyImages(Sequence):
    """The images of some dataset rows, decoded only when read: a plot shows a handful of N images, and ITM
    re-ranking decodes only the images of the top-k candidates."""

    def __init__(self, dataset, column: str, rows: Sequence[int]):
        self.dataset, self.column, self.rows = dataset, column, list(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int):
        return load_image(self.dataset[self.rows[position]][self.column])

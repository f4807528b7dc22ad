"""Batches of image-text pairs for the contrastive trainers, decoded robustly.

Images are decoded here, in the data-loader workers, not by `datasets` (cast the image column to
`datasets.Image(decode=False)`): a corrupt file then costs one skipped, counted row instead of a dead worker.
Decoding is `image_text_data.load_image`'s (any image cell to RGB, 16-bit rescaled, decompression bombs refused).

A collator declares the counters it writes into every batch (`counters`); the trainer pops them, sums them over
processes and logs them, so a count survives data-loader worker processes. Recipe-specific inputs (DiHT's concept
targets, COSMO's masked tokens) are add-ons: callables `(batch, rows) -> dict` that see the batch built so far and
the kept rows, and return the keys they add.

Broken rows cluster in web data (one dead domain is a run of failed downloads), so a batch may have fewer usable
pairs than a contrastive loss needs with no earlier batch to top it up from, for example at the start of a stream.
Such a batch is not an error: the collator returns a **stand-in batch** (`min_pairs` copies of a blank grey image
with the caption "a", built like any other batch, add-ons included) with `skipped_batches = 1`, and
`ContrastiveTrainer` multiplies its loss by zero. Every process still runs its forward and backward (DDP and
DeepSpeed need every process in every collective), the gradient of every parameter is zero, and the step changes
nothing that a zero gradient does not change (plain SGD: nothing; optimizers with momentum or weight decay and the
learning-rate schedule still move). `STAND_IN_COUNTER` names the key.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from PIL import Image

from image_text_data.captions import captions_of
from image_text_data.images import (
    DEFAULT_MAX_RESIZED_PIXELS,
    ImageTooLargeError,
    UndecodableImageError,
    load_image,
    processor_shortest_edge,
    resized_size,
)

logger = logging.getLogger(__name__)

__all__ = ["BatchAddOn", "ImageLabelCollator", "ImageTextCollator", "STAND_IN_COUNTER"]

STAND_IN_COUNTER = "skipped_batches"  # 1 in a stand-in batch, whose loss the trainer multiplies by zero
STAND_IN_CAPTION = "a"
STAND_IN_SIZE = 32  # pixels; the image processor resizes it like any image


class BatchAddOn(Protocol):
    """Adds recipe-specific inputs to a batch: `add_on(batch, kept_rows) -> {key: value}`."""

    def __call__(self, batch: dict[str, Any], rows: Sequence[dict]) -> dict[str, Any]: ...


class ImageTextCollator:
    """Turn rows `{image, caption, ...}` into a batch of a contrastive image-text model.

    Rows whose image cannot be decoded or whose caption is empty are dropped from the batch and counted
    (`skipped_images`, `skipped_captions`); so are images that the image processor's shortest-edge resize would make
    larger than `max_resized_pixels` (`skipped_large_images`: a 1x60000 spacer resized to 224 px is 3 G pixels). A
    caption cell that holds a list (COCO) becomes pairs by `caption_list` (`image_text_data.captions`: one pair per
    caption by default, the image decoded once); a caption of any other type is a TypeError naming the column. A
    batch is never left with fewer than `min_pairs` pairs (a contrastive batch needs a negative): with `top_up` it is
    then topped up with pairs of the last good batch, counted as `reused_pairs`, and when there is none it becomes a
    stand-in batch of zero weight (`skipped_batches`, module docstring); without `top_up` (a grouped sampler chose
    exactly these rows) it is an error.

    Args:
        tokenizer: a transformers tokenizer; captions are padded to the longest and truncated to its max length.
        image_processor: a transformers image processor (e.g. `CLIPImageProcessor`).
        image_column, caption_column: names of the columns.
        train_transform: optional random callable PIL -> PIL applied before the processor (e.g. DiHT's
            `RandomResizedCrop(scale=(0.9, 1.0))`, `trainers.diht_train_transform`) that draws from Python's `random`
            (as timm's transforms do). Its randomness is drawn from a seed derived from `seed`, the epoch
            (`set_epoch`) and the pair's own bytes, so a pair gets the same crop whatever the process count, worker
            count or batch it lands in, and a resumed run draws what the uninterrupted run drew.
        add_ons: recipe inputs added to every batch (see `BatchAddOn`), e.g. `trainers.ConceptTargets`.
        pass_through: integer columns copied into the batch as `(B,)` tensors when the rows have them (`index`, the
            dataset row a grouped sampler needs; `image_id`, so that pairs of one image are never negatives).
        min_pairs: the smallest batch the loss accepts.
        top_up: complete a short batch from the previous one, or replace it by a stand-in of zero weight when there
            is none (off for samplers that choose every batch: a short batch is then an error).
        seed: base seed of the augmentation (and of `caption_list="random"`).
        max_resized_pixels: the largest image the processor's shortest-edge resize may produce (None: no limit);
            checked before decoding, or on the output of `train_transform` when there is one.
        caption_list: `"explode"`, `"first"`, `"random"` or `"error"` for caption cells that hold lists.
    """

    counters = ("skipped_images", "skipped_captions", "reused_pairs", "skipped_large_images", STAND_IN_COUNTER)
    # Rare events: `ContrastiveTrainer.skipped_counts` lists them only once they happened.
    optional_counters = ("skipped_large_images", STAND_IN_COUNTER)

    def __init__(
        self,
        tokenizer,
        image_processor,
        *,
        image_column: str = "image",
        caption_column: str = "caption",
        train_transform: Callable[[Image.Image], Image.Image] | None = None,
        add_ons: Sequence[BatchAddOn] = (),
        pass_through: Sequence[str] = ("index", "image_id"),
        min_pairs: int = 2,
        top_up: bool = True,
        seed: int = 0,
        max_resized_pixels: int | None = DEFAULT_MAX_RESIZED_PIXELS,
        caption_list: str = "explode",
    ):
        self.tokenizer, self.image_processor = tokenizer, image_processor
        self.image_column, self.caption_column = image_column, caption_column
        self.train_transform, self.add_ons, self.pass_through = train_transform, list(add_ons), tuple(pass_through)
        self.min_pairs, self.top_up, self.seed, self.epoch = min_pairs, top_up, seed, 0
        self.max_resized_pixels, self.caption_list = max_resized_pixels, caption_list
        captions_of(None, caption_list)  # an unknown policy fails here, not in a worker
        self.shortest_edge, self.longest_edge = processor_shortest_edge(image_processor)
        self._last_good: list[tuple] = []

    def set_epoch(self, epoch: int) -> None:
        """Draw new augmentations for a new pass over the data (`ContrastiveTrainer` calls it every epoch)."""
        self.epoch = epoch

    def _augment(self, image: Image.Image, caption: str) -> Image.Image:
        digest = hashlib.blake2b(image.tobytes(), digest_size=8, key=caption.encode()[:64])
        digest.update(f"{self.seed}/{self.epoch}".encode())
        # timm's transforms draw from Python's `random`: seed a private state for this pair, then put it back.
        # (Reseeding torch's global RNG instead costs ~2 ms per call.)
        outer = random.getstate()
        random.seed(int.from_bytes(digest.digest(), "little"))
        try:
            return self.train_transform(image)
        finally:
            random.setstate(outer)

    def _captions(self, row: dict) -> list[str | None]:
        value = row[self.caption_column]
        key = f"{self.epoch}/{value!r:.200}"  # a random pick depends on the captions and the epoch only
        return captions_of(value, self.caption_list, column=self.caption_column, seed=self.seed, key=key)

    def _image(self, row: dict, caption: str) -> Image.Image:
        if self.train_transform is None:  # the processor resizes the decoded image: check before decoding
            return load_image(row[self.image_column], shortest_edge=self.shortest_edge, longest_edge=self.longest_edge,
                              max_resized_pixels=self.max_resized_pixels)
        image = self._augment(load_image(row[self.image_column]), caption)
        if self.shortest_edge is not None and self.max_resized_pixels is not None:
            width, height = resized_size(*image.size, self.shortest_edge, self.longest_edge)
            if width * height > self.max_resized_pixels:
                raise ImageTooLargeError(f"the training transform's {image.width}x{image.height} output would be "
                                         f"resized to {width}x{height}, more than {self.max_resized_pixels:,} pixels")
        return image

    def _decode_row(self, row: dict) -> list[tuple | str]:
        """The row's pairs `(image, caption, row)` (several for a list of captions), or the reasons it gives none."""
        for column in (self.image_column, self.caption_column):
            if column not in row:
                raise KeyError(f"column {column!r} is missing from the batch rows (have {sorted(row)}).")
        captions = [c for c in self._captions(row) if isinstance(c, str) and c.strip()]
        if not captions:
            return ["caption"]
        pairs = []
        for caption in captions:
            try:  # augmentation is seeded per caption: decode per caption only when it is on
                image = self._image(row, caption) if (self.train_transform is not None or not pairs) else pairs[0][0]
            except ImageTooLargeError as error:
                logger.warning("skipping a pair: %s", error)
                return ["large"]
            except UndecodableImageError as error:
                logger.warning("skipping a pair: %s", error)
                return ["image"]
            pairs.append((image, caption, row))
        return pairs

    def _batch(self, good: Sequence[tuple]) -> dict[str, Any]:
        images, captions, kept_rows = zip(*good)
        batch = dict(self.tokenizer(list(captions), padding=True, truncation=True, return_tensors="pt"))
        batch["pixel_values"] = self.image_processor(list(images), return_tensors="pt")["pixel_values"]
        for column in self.pass_through:
            if column in kept_rows[0]:
                batch[column] = torch.tensor([row[column] for row in kept_rows], dtype=torch.long)
        for add_on in self.add_ons:
            batch.update(add_on(batch, kept_rows))
        return batch

    def _stand_in(self, rows: list[dict]) -> list[tuple]:
        """`min_pairs` blank pairs with the other columns of the batch's first row (add-ons read them)."""
        blank = Image.new("RGB", (STAND_IN_SIZE, STAND_IN_SIZE), (128, 128, 128))
        template = {**rows[0], self.caption_column: STAND_IN_CAPTION}
        return [(blank, STAND_IN_CAPTION, template)] * self.min_pairs

    def __call__(self, rows: list[dict]) -> dict[str, Any]:
        decoded = [item for row in rows for item in self._decode_row(row)]
        good = [item for item in decoded if isinstance(item, tuple)]
        reused, stand_in = 0, False
        if len(good) < self.min_pairs:
            if self.top_up:
                reused = min(self.min_pairs - len(good), len(self._last_good))
                good = good + self._last_good[:reused]
            if len(good) < self.min_pairs:
                if not self.top_up:
                    raise ValueError(f"only {len(good)} decodable pairs in a batch of {len(rows)}; the loss needs "
                                     f"{self.min_pairs}.")
                logger.warning("only %d usable pairs in a batch of %d and no earlier batch to top it up: a stand-in "
                               "batch of zero weight takes its place", len(good), len(rows))
                good, reused, stand_in = self._stand_in(rows), 0, True
        else:
            self._last_good = good[: self.min_pairs]

        batch = self._batch(good)
        batch["skipped_images"] = sum(item == "image" for item in decoded)
        batch["skipped_captions"] = sum(item == "caption" for item in decoded)
        batch["reused_pairs"] = reused
        batch["skipped_large_images"] = sum(item == "large" for item in decoded)
        batch[STAND_IN_COUNTER] = int(stand_in)
        return batch


class ImageLabelCollator:
    """Rows `{image, label}` to `{"pixel_values": (B, 3, H, W), "labels": (B,)}` for an image classifier.

    Images are decoded with `image_text_data.load_image`; an undecodable one is an error naming its row position,
    because the rows of a few-shot training set are chosen (and checked) beforehand.
    """

    def __init__(self, image_processor, *, image_column: str = "image", label_column: str = "label"):
        self.image_processor, self.image_column, self.label_column = image_processor, image_column, label_column

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        images = []
        for position, row in enumerate(rows):
            try:
                images.append(load_image(row[self.image_column]))
            except UndecodableImageError as error:
                raise ValueError(f"training image {position} of the batch cannot be decoded: {error}") from error
        return {"pixel_values": self.image_processor(images, return_tensors="pt")["pixel_values"],
                "labels": torch.tensor([row[self.label_column] for row in rows])}

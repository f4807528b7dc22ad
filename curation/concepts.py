"""Concept labelling for DiHT's concept distillation: a frozen teacher predicts concepts for every image, offline.

DiHT (Radenovic et al., CVPR 2023, arXiv 2301.02280, Sec. 3.2) distils a strong, frozen, weakly-supervised image model
into the student: the teacher predicts object and attribute concepts for every training image once, offline, and
linear heads on the student's image tower learn to predict them with a multi-label loss next to the contrastive
loss. The paper's teacher, vocabulary and number of targets are not confirmed (docs/choices.md), so here the
teacher is any timm model (by name) or `nn.Module` classifier, the vocabulary is its class names, and the targets
are its top-k classes (optionally with their probabilities), stored as a `List(ClassLabel(names=vocabulary))`
column so that the vocabulary travels with the dataset (`save_to_disk`, `push_to_hub`) and sizes the DiHT concept
heads (`DiHTConfig(concept_head_sizes={"concepts": len(vocabulary)})`).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import torch
from datasets import ClassLabel, Dataset, Features, Image, IterableDataset, List, Value
from torch import nn

from image_text_data.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    DEFAULT_MAX_RESIZED_PIXELS,
    ImageTooLargeError,
    UndecodableImageError,
    load_image,
)

logger = logging.getLogger(__name__)

CONCEPT_IDS, CONCEPT_SCORES = "concept_ids", "concept_scores"
# Why an image got no concepts (a temporary column, counted into the report, never written out). The report always
# holds `undecodable_image`; the rarer reasons appear once they occur, and all counts add up to `total`.
SKIPPED_BECAUSE = "_concept_skipped_because"
SKIP_REASONS = ("undecodable_image", "image_too_large", "transform_failed", "teacher_failed")


def build_teacher(teacher: str | nn.Module, pretrained: bool = True) -> nn.Module:
    """The frozen teacher: `timm.create_model(teacher, pretrained=pretrained)` for a name, the module itself otherwise.

    Args:
        teacher: a timm model name (`"vit_huge_patch14_clip_224.laion2b_ft_in12k"`, `"resnet50"`, ...) or a module
            mapping `(B, 3, H, W)` images to `(B, num_classes)` logits.
        pretrained: load the name's pretrained weights (from the Hub cache); False gives random weights (tests).

    Returns:
        The teacher in eval mode with gradients off.
    """
    if isinstance(teacher, str):
        import timm

        teacher = timm.create_model(teacher, pretrained=pretrained)
    if not isinstance(teacher, nn.Module):
        raise TypeError(f"teacher must be a timm model name or an nn.Module, got {type(teacher).__name__}")
    return teacher.eval().requires_grad_(False)


def _unique(names: Sequence[str]) -> list[str]:
    """ClassLabel needs unique names: a name that occurs more than once gets its index appended ("crane (134)")."""
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    return [f"{name} ({i})" if seen[name] > 1 else name for i, name in enumerate(names)]


def transform_shortest_edge(transform) -> int | None:
    """The shorter-side size of the first aspect-preserving resize of a (torchvision `Compose`) transform, as timm's
    eval transform has (`Resize(int(size / crop_pct))`); None when it resizes to a fixed size or not at all."""
    from torchvision.transforms import Resize

    for step in getattr(transform, "transforms", [transform]):
        if isinstance(step, Resize):
            size = step.size
            if isinstance(size, int):
                return size
            if isinstance(size, (list, tuple)) and len(size) == 1:
                return int(size[0])
            return None
    return None


def _report(reasons) -> dict:
    """`{"total", "labelled", "undecodable_image", <other reasons that occurred>}` from one reason per row."""
    counts = {reason: 0 for reason in SKIP_REASONS}
    total = 0
    for reason in reasons:
        total += 1
        if reason is not None:
            counts[reason] += 1
    report = {"total": total, "labelled": total - sum(counts.values()), "undecodable_image": counts.pop(
        "undecodable_image")}
    report.update({reason: count for reason, count in counts.items() if count})
    return report


def _num_classes(model: nn.Module, data_config: dict) -> int:
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, int) and num_classes > 0:
        return num_classes
    with torch.inference_mode():  # a module that does not say: one forward on a blank image
        return int(model(torch.zeros(1, *data_config["input_size"])).shape[-1])


def teacher_vocabulary(model: nn.Module, num_classes: int | None = None) -> list[str]:
    """Class names of a classifier: its `pretrained_cfg["label_names"]`, else the ImageNet subset timm infers from
    the model (`timm.data.infer_imagenet_subset`, names from `ImageNetInfo`), else `class_0 ... class_{C-1}`.

    Args:
        model: the teacher.
        num_classes: its number of outputs (read from `model.num_classes` when None).

    Returns:
        `num_classes` unique names.
    """
    from timm.data import ImageNetInfo, infer_imagenet_subset

    num_classes = num_classes or getattr(model, "num_classes", 0)
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if names and len(names) == num_classes:
        return _unique(list(names))
    subset = infer_imagenet_subset(model) if hasattr(model, "pretrained_cfg") else None
    if subset:
        info = ImageNetInfo(subset)
        if info.num_classes() == num_classes:
            return _unique([info.index_to_description(i) for i in range(num_classes)])
    return [f"class_{i}" for i in range(num_classes)]


class ConceptLabeller:
    """Batched `datasets.map` function: decode, preprocess with the teacher's transform, forward, top-k.

    Arguments: see `label_concepts`. With `num_proc > 1` each worker (rank r) runs on `cuda:{r % num_gpus}` when
    the device is CUDA, or with `cpu_count // num_proc` torch threads on CPU. Besides `concept_ids` (and
    `concept_scores`) it returns `_concept_skipped_because` (`SKIPPED_BECAUSE`): None for a labelled image, else the
    reason of `SKIP_REASONS` it got no concepts; `label_concepts` counts it and removes it.
    """

    def __init__(self, model: nn.Module, transform, *, image_column: str, top_k: int, return_scores: bool,
                 device: str, activation: str, max_image_pixels: int | None, threads: int | None = None,
                 report: dict | None = None, max_resized_pixels: int | None = DEFAULT_MAX_RESIZED_PIXELS):
        self.model, self.transform, self.image_column = model, transform, image_column
        self.top_k, self.return_scores, self.device, self.activation = top_k, return_scores, device, activation
        self.max_image_pixels, self.threads, self.report = max_image_pixels, threads, report
        self.max_resized_pixels = max_resized_pixels
        self.shortest_edge = transform_shortest_edge(transform)
        self._placed_on: str | None = None

    def _device(self, rank: int | None) -> torch.device:
        device = torch.device(self.device)
        if device.type == "cuda" and rank is not None and device.index is None:
            device = torch.device("cuda", rank % torch.cuda.device_count())
        if str(device) != self._placed_on:
            if self.threads is not None and device.type == "cpu":
                torch.set_num_threads(self.threads)
            self.model.to(device)
            self._placed_on = str(device)
        return device

    def _pixels(self, cell) -> tuple[torch.Tensor | None, str | None]:
        """`(pixels (3, H, W), None)` or `(None, reason)`: decoded (refusing what the teacher's resize would blow up)
        and transformed."""
        try:
            image = load_image(cell, max_pixels=self.max_image_pixels, shortest_edge=self.shortest_edge,
                               max_resized_pixels=self.max_resized_pixels)
        except ImageTooLargeError as error:
            logger.warning("concept labelling: image skipped: %s", error)
            return None, "image_too_large"
        except UndecodableImageError as error:
            logger.debug("concept labelling: undecodable image skipped: %s", error)
            return None, "undecodable_image"
        try:
            return self.transform(image), None
        except Exception as error:  # a transform that fails on one image must not stop the map
            logger.warning("concept labelling: the teacher's transform failed on an image of %dx%d pixels: %s: %s",
                           image.width, image.height, type(error).__name__, error)
            return None, "transform_failed"

    def _forward(self, pixels: list[torch.Tensor], device: torch.device) -> torch.Tensor:
        inputs = torch.stack(pixels).to(device, non_blocking=True)  # (b, 3, H, W)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=device.type == "cuda"):
            return self.model(inputs).float()  # (b, C)

    def _logits(self, pixels: list[torch.Tensor], device: torch.device) -> list[torch.Tensor | None]:
        """The teacher's logits of each image; when the batch forward fails, image by image, None for those that
        fail on their own (an image, not the batch, is skipped)."""
        try:
            return list(self._forward(pixels, device))
        except Exception as error:
            logger.warning("concept labelling: the teacher failed on a batch of %d (%s: %s); retrying image by image",
                           len(pixels), type(error).__name__, error)
        logits: list[torch.Tensor | None] = []
        for one in pixels:
            try:
                logits.append(self._forward([one], device)[0])
            except Exception as error:
                logger.warning("concept labelling: the teacher failed on an image of shape %s: %s: %s",
                               tuple(one.shape), type(error).__name__, error)
                logits.append(None)
        return logits

    def __call__(self, batch: dict[str, list], rank: int | None = None) -> dict:
        """Label one batch; `rank` is the worker's rank (`Dataset.map(with_rank=True)`)."""
        if self.image_column not in batch:
            raise ValueError(f"column {self.image_column!r} not found in the dataset (columns: {sorted(batch)}); "
                             f"pass image_column= to name yours")
        device = self._device(rank)
        cells = batch[self.image_column]
        ids: list[list[int]] = [[] for _ in cells]
        scores: list[list[float]] = [[] for _ in cells]
        reasons: list[str | None] = [None] * len(cells)
        pixels, rows = [], []
        for i, cell in enumerate(cells):
            values, reasons[i] = self._pixels(cell)
            if values is not None:
                pixels.append(values)  # (3, H, W)
                rows.append(i)
        if rows:
            for row, logits in zip(rows, self._logits(pixels, device)):
                if logits is None:
                    reasons[row] = "teacher_failed"
                    continue
                probs = logits.softmax(-1) if self.activation == "softmax" else logits.sigmoid()  # (C,)
                top = probs.topk(self.top_k)  # sorted, highest first
                ids[row], scores[row] = top.indices.tolist(), top.values.tolist()
        out = {CONCEPT_IDS: ids, SKIPPED_BECAUSE: reasons}
        if self.return_scores:
            out[CONCEPT_SCORES] = scores
        return out

    def label_and_count(self, batch: dict[str, list], indices: list[int]) -> dict:
        """`IterableDataset.map(with_indices=True)` function: label, and count into the live report (a new pass
        over the stream, index 0, restarts the counts)."""
        out = self(batch)
        if indices and indices[0] == 0:
            self.report.clear()
            self.report.update(_report([]))
        for key, count in _report(out.pop(SKIPPED_BECAUSE)).items():
            self.report[key] = self.report.get(key, 0) + count
        return out


def label_concepts(
    dataset: Dataset | IterableDataset,
    teacher: str | nn.Module,
    *,
    image_column: str = "image",
    top_k: int = 5,
    return_scores: bool = False,
    batch_size: int = 64,
    device: str | None = None,
    vocabulary: Sequence[str] | None = None,
    pretrained: bool = True,
    activation: str = "softmax",
    data_config: dict[str, Any] | None = None,
    num_proc: int | None = None,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    max_resized_pixels: int | None = DEFAULT_MAX_RESIZED_PIXELS,
    return_report: bool = False,
) -> Dataset | IterableDataset | tuple[Dataset | IterableDataset, dict]:
    """Add concept targets predicted by a frozen teacher to every image (DiHT concept distillation, arXiv 2301.02280).

    Adds `concept_ids` (the teacher's `top_k` classes, highest score first, as a `List(ClassLabel(names=vocabulary))`
    column) and, with `return_scores`, `concept_scores` (their probabilities, same order). Images are decoded row by
    row; an image that cannot be labelled gets empty lists, is counted under its reason, and never stops the map:
    undecodable, too large for the teacher's resize (`max_resized_pixels`: a 1x60000 spacer resized to 248 px on its
    short side would be 3.7 G pixels), a transform or a teacher forward that fails on it (a failed batch is retried
    image by image, so only the images that fail on their own are skipped). Images are preprocessed with the
    teacher's own eval transform (`timm.data.resolve_data_config` + `create_transform`), run in batches of
    `batch_size`, under bf16 autocast on CUDA. Every image is labelled on its own, so the labels do not depend on
    `batch_size` or `num_proc` (up to float rounding of the scores).

    Args:
        dataset: a `Dataset` or a streaming `IterableDataset` with an image column (`Image()`, `Image(decode=False)`
            dicts, raw bytes or PIL images).
        teacher: a timm model name or a classifier `nn.Module` (see `build_teacher`).
        image_column: name of the image column.
        top_k: classes kept per image.
        return_scores: also add `concept_scores`.
        batch_size: images per forward pass.
        device: `"cpu"`, `"cuda"`, `"cuda:1"`; None: CUDA when available. With CUDA and several GPUs, `num_proc`
            defaults to the number of GPUs and rank r runs on GPU r (one process per GPU; start the program with
            `multiprocess.set_start_method("spawn")` as for any CUDA `datasets.map`).
        vocabulary: class names (default: `teacher_vocabulary(model)`).
        pretrained: for a model name, load its pretrained weights (False: random weights, for tests).
        activation: `"softmax"` for a single-label teacher (ImageNet classifiers), `"sigmoid"` for a multi-label one.
        data_config: override the teacher's data config (keys of `timm.data.resolve_data_config`).
        num_proc: worker processes for `Dataset.map` (in-memory datasets only).
        max_image_pixels: larger images count as undecodable (decompression bombs).
        max_resized_pixels: images that the teacher's shortest-edge resize would make larger than this are skipped
            (`image_too_large`); None: no limit.
        return_report: also return `{"total", "labelled", "undecodable_image"}`, plus `image_too_large`,
            `transform_failed` and `teacher_failed` when some image was skipped for that reason; the counts add up
            to `total` (live for a stream: it fills as the result is iterated in this process).

    Returns:
        The labelled dataset, or `(dataset, report)` with `return_report=True`.
    """
    from timm.data import create_transform, resolve_data_config

    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise TypeError(f"expected a datasets.Dataset or IterableDataset, got {type(dataset).__name__}")
    if dataset.column_names is not None and image_column not in dataset.column_names:
        raise ValueError(f"column {image_column!r} not found in the dataset (columns: {dataset.column_names}); "
                         f"pass image_column= to name yours")
    if activation not in ("softmax", "sigmoid"):
        raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
    streaming = isinstance(dataset, IterableDataset)
    if streaming and num_proc is not None and num_proc > 1:
        raise ValueError("num_proc applies to an in-memory Dataset; a streaming IterableDataset is processed lazily")

    model = build_teacher(teacher, pretrained=pretrained)
    config = resolve_data_config(dict(data_config or {}), model=model)
    num_classes = _num_classes(model, config)
    vocabulary = list(vocabulary) if vocabulary is not None else teacher_vocabulary(model, num_classes)
    if len(vocabulary) != num_classes:
        raise ValueError(f"vocabulary has {len(vocabulary)} names but the teacher predicts {num_classes} classes")
    if not 1 <= top_k <= num_classes:
        raise ValueError(f"top_k must be in [1, {num_classes}], got {top_k}")

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if num_proc is None and not streaming and device == "cuda" and torch.cuda.device_count() > 1:
        num_proc = torch.cuda.device_count()  # one process per GPU
    workers = num_proc if (num_proc or 1) > 1 else 1
    image_feature = (dataset.features or {}).get(image_column)
    if isinstance(image_feature, Image) and image_feature.decode:
        dataset = dataset.cast_column(image_column, Image(decode=False))  # decode ourselves, counting failures

    report = _report([])
    function = ConceptLabeller(
        model, create_transform(**config, is_training=False), image_column=image_column, top_k=top_k,
        return_scores=return_scores, device=device, activation=activation, max_image_pixels=max_image_pixels,
        threads=max(1, (os.cpu_count() or 1) // workers) if workers > 1 else None,
        report=report if streaming else None, max_resized_pixels=max_resized_pixels,
    )
    new = {CONCEPT_IDS: List(ClassLabel(names=vocabulary)), SKIPPED_BECAUSE: Value("string")}
    if return_scores:
        new[CONCEPT_SCORES] = List(Value("float32"))
    features = Features({**dataset.features, **new}) if dataset.features is not None else None
    if streaming:
        if features is not None:
            features = Features({k: v for k, v in features.items() if k != SKIPPED_BECAUSE})
        labelled = dataset.map(function.label_and_count, with_indices=True, batched=True, batch_size=batch_size,
                               features=features)
    else:
        labelled = dataset.map(function, with_rank=workers > 1, batched=True, batch_size=batch_size,
                               features=features, num_proc=num_proc, desc="Concept labels")
        report.update(_report(labelled[SKIPPED_BECAUSE]))
        labelled = labelled.remove_columns(SKIPPED_BECAUSE)
        if report["labelled"] < report["total"]:
            skipped = {k: v for k, v in report.items() if k not in ("total", "labelled") and v}
            logger.warning("concept labelling: %d of %d images got no concepts (%s); their concept_ids are empty",
                           report["total"] - report["labelled"], report["total"], skipped)
    if isinstance(image_feature, Image) and image_feature.decode:
        labelled = labelled.cast_column(image_column, image_feature)
    return (labelled, report) if return_report else labelled


def concept_vocabulary(dataset: Dataset | IterableDataset, column: str = CONCEPT_IDS) -> list[str]:
    """The concept vocabulary recorded by `label_concepts`: the `ClassLabel` names of `column`.

    Args:
        dataset: a dataset labelled by `label_concepts` (also after `save_to_disk`/`load_from_disk`).
        column: the concept column.

    Returns:
        The class names; `len(...)` sizes a DiHT concept head.
    """
    feature = (dataset.features or {}).get(column)
    inner = getattr(feature, "feature", None)
    if not isinstance(inner, ClassLabel):
        raise ValueError(f"column {column!r} is not a list of ClassLabel (found {feature!r}); "
                         f"label the dataset with curation.label_concepts first")
    return list(inner.names)

"""Zero-shot classification and image-text retrieval with the protocols DiHT reports (PAPERS.md §1.6).

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280, evaluate as CLIP does (Radford et al., https://arxiv.org/abs/2103.00020):

- classification: every class name is written into every prompt template; the classifier row of a class is the mean
  of its L2-normalised prompt embeddings, normalised again; logits are `100 · x · Wᵀ`; top-1 and top-5 accuracy;
- retrieval: every image against every caption (several captions per image), recall@1/5/10 in both directions, each
  caption optionally wrapped as "a photo of {}.".

Everything works on any model with CLIP's `get_image_features` / `get_text_features` (DiHT, `CLIPModel`, a
`PeftModel` around either) and on any `datasets` source. Images are decoded with `curation.load_image`: an image
that cannot be decoded is skipped and counted (`skipped_images`), never a crash in a DataLoader worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from curation.images import UndecodableImageError, load_image

from .metrics import load_metric
from .templates import OPENAI_IMAGENET_TEMPLATES

CLASSIFICATION_LOGIT_SCALE = 100.0  # the protocol's fixed logit scale (only matters for the reported scores)


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a BaseModelOutputWithPooling whose pooler_output holds the projected embeddings;
    # older code and other models return the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _device_and_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


@torch.inference_mode()
def encode_texts(model, tokenizer, texts: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings.

    Args:
        model: a model with `get_text_features` (DiHT, CLIP).
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
        chunks.append(_features(model.get_text_features(**tokens.to(device))).float())
    return F.normalize(torch.cat(chunks), dim=-1)


@torch.inference_mode()
def zero_shot_classifier(model, tokenizer, class_names: Sequence[str],
                         templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES, *,
                         batch_size: int = 256) -> torch.Tensor:
    """CLIP's zero-shot classifier: per class, the normalised mean of its normalised prompt embeddings.

    Args:
        model: a model with `get_text_features`.
        tokenizer: its tokenizer.
        class_names: the C class names, written into every template.
        templates: T prompt templates with one `{}` each (default: OpenAI's 80 ImageNet templates).
        batch_size: prompts per forward.

    Returns:
        W of shape `(C, projection_dim)`, float32, unit rows; zero-shot logits are `100 · image_embeds @ W.T`.
    """
    prompts = [template.format(name) for name in class_names for template in templates]  # class-major, (C·T)
    embeddings = encode_texts(model, tokenizer, prompts, batch_size=batch_size)  # (C·T, P)
    per_class = embeddings.view(len(class_names), len(templates), -1).mean(dim=1)  # (C, P)
    return F.normalize(per_class, dim=-1)


@dataclass
class ImageBatchCollator:
    """Decodes and preprocesses a batch of dataset rows for evaluation, skipping images that cannot be decoded.

    Returns `{"pixel_values": (b, 3, H, W), "index": (b,), "skipped": int, **extra columns}`, where `index` is the
    position of each kept row in the dataset. Picklable, so it runs in DataLoader workers.
    """

    image_processor: Any
    image_column: str = "image"
    keep_columns: tuple[str, ...] = ()
    decode: Callable[[Any], Any] = field(default=load_image)

    def __call__(self, rows: list[tuple[int, dict]]) -> dict[str, Any]:
        images, kept = [], []
        for index, row in rows:
            try:
                images.append(self.decode(row[self.image_column]))
            except UndecodableImageError:
                continue
            kept.append((index, row))
        batch: dict[str, Any] = {"index": torch.tensor([i for i, _ in kept], dtype=torch.long),
                                 "skipped": len(rows) - len(kept)}
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


def image_batches(dataset, image_processor, *, image_column: str = "image", keep_columns: Sequence[str] = (),
                  batch_size: int = 64, num_workers: int = 0) -> DataLoader:
    """A DataLoader of preprocessed image batches (see `ImageBatchCollator`) over a map-style dataset or an
    iterable one (a streaming `IterableDataset` yields rows; their index is their position in the stream)."""
    from datasets import Image as ImageFeature
    from datasets import IterableDataset

    feature = (dataset.features or {}).get(image_column) if hasattr(dataset, "features") else None
    if isinstance(feature, ImageFeature) and feature.decode:  # decode in the collator, where failures are counted
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    rows = (enumerate(dataset) if isinstance(dataset, IterableDataset) else _IndexedRows(dataset))
    collator = ImageBatchCollator(image_processor, image_column, tuple(keep_columns))
    if isinstance(dataset, IterableDataset):  # one worker: a stream's positions must stay in order
        return DataLoader(list(rows), batch_size=batch_size, collate_fn=collator, num_workers=0)
    return DataLoader(rows, batch_size=batch_size, collate_fn=collator, num_workers=num_workers)


@torch.inference_mode()
def encode_images(model, batches: Iterable[dict[str, Any]]) -> tuple[torch.Tensor, dict[str, Any]]:
    """L2-normalised image embeddings of every decodable image.

    Args:
        model: a model with `get_image_features`.
        batches: batches from `image_batches` (or any iterable of dicts with `pixel_values`).

    Returns:
        `(embeddings, extras)`: embeddings `(N, projection_dim)` float32; extras holds `index` (the dataset row of
        each embedding), `skipped` (images that could not be decoded) and every kept column as a list.
    """
    device, dtype = _device_and_dtype(model)
    chunks, extras = [], {"index": [], "skipped": 0}
    for batch in batches:
        extras["skipped"] += int(batch.get("skipped", 0))
        if batch["pixel_values"] is None:
            continue
        chunks.append(_features(model.get_image_features(pixel_values=batch["pixel_values"].to(device, dtype))))
        extras["index"].append(batch.get("index", torch.arange(len(batch["pixel_values"]))))
        for key, value in batch.items():
            if key not in ("pixel_values", "index", "skipped"):
                extras.setdefault(key, []).extend(value)
    if not chunks:
        raise ValueError("no image in the evaluation data could be decoded")
    extras["index"] = torch.cat(extras["index"]).tolist()
    return F.normalize(torch.cat(chunks).float(), dim=-1), extras


def ranked(scores: torch.Tensor, k: int, *, chunk_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns of every row of `scores` (computed in row chunks), as `(values, indices)` of shape `(Q, k)`."""
    k = min(k, scores.shape[1])
    values, indices = zip(*(scores[start:start + chunk_size].topk(k, dim=1)
                            for start in range(0, scores.shape[0], chunk_size)))
    return torch.cat(values), torch.cat(indices)


def classification_metrics(image_embeds: torch.Tensor, classifier: torch.Tensor, labels: Sequence[int],
                           ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Top-k accuracies of `100 · image_embeds @ classifier.T` through the `zero_shot_accuracy` metric module.

    Args:
        image_embeds: `(N, P)` unit rows.
        classifier: `(C, P)` unit rows, e.g. from `zero_shot_classifier`.
        labels: the N true class indices.
        ks: the k of each reported top-k accuracy (capped at C).

    Returns:
        `{"top1": ..., "top5": ...}` as fractions.
    """
    logits = CLASSIFICATION_LOGIT_SCALE * image_embeds @ classifier.t()  # (N, C)
    _, predictions = ranked(logits, max(ks))
    metric = load_metric("zero_shot_accuracy")
    return metric.compute(predictions=predictions.cpu().tolist(), references=list(labels), k=list(ks))


def captions_per_image(text_to_image: Sequence[int], num_images: int) -> list[list[int]]:
    """The inverse of `text_to_image`: for every image, the indices of its texts."""
    captions_of: list[list[int]] = [[] for _ in range(num_images)]
    for text, image in enumerate(text_to_image):
        captions_of[image].append(text)
    return captions_of


def retrieval_metrics(image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_to_image: Sequence[int],
                      ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k in both directions through the `retrieval_recall` metric module.

    Image→text: an image is a hit at k when any of its captions is among the k most similar texts. Text→image: a
    caption is a hit at k when its own image is among the k most similar images.

    Args:
        image_embeds: `(N_img, P)` unit rows.
        text_embeds: `(N_txt, P)` unit rows.
        text_to_image: for every text, the row of its image in `image_embeds`.
        ks: the k of each reported recall.

    Returns:
        `{"image_to_text_recall@1": ..., ..., "text_to_image_recall@10": ...}` as fractions.
    """
    captions_of = captions_per_image(text_to_image, len(image_embeds))
    similarity = image_embeds @ text_embeds.t()  # (N_img, N_txt)
    _, image_to_text = ranked(similarity, max(ks))
    _, text_to_image_ranked = ranked(similarity.t(), max(ks))
    metric = load_metric("retrieval_recall")
    results = {}
    for direction, predictions, references in (
        ("image_to_text", image_to_text, captions_of),
        ("text_to_image", text_to_image_ranked, [[image] for image in text_to_image]),
    ):
        recalls = metric.compute(predictions=predictions.cpu().tolist(), references=references, k=list(ks))
        results.update({f"{direction}_{name}": value for name, value in recalls.items()})
    return results


def _class_names(dataset, label_column: str, class_names: Sequence[str] | None) -> list[str]:
    if class_names is not None:
        return list(class_names)
    feature = (getattr(dataset, "features", None) or {}).get(label_column)
    names = getattr(feature, "names", None)
    if not names:
        raise ValueError(f"column {label_column!r} is not a ClassLabel: pass the class names explicitly")
    return list(names)


def _check_columns(dataset, *columns: str) -> None:
    present = getattr(dataset, "column_names", None)
    missing = [c for c in columns if present is not None and c not in present]
    if missing:
        raise KeyError(f"the evaluation data has no column {missing[0]!r} (columns: {present})")


def evaluate_classification(model, tokenizer, image_processor, dataset, *, class_names: Sequence[str] | None = None,
                            templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES, image_column: str = "image",
                            label_column: str = "label", ks: Sequence[int] = (1, 5), batch_size: int = 64,
                            num_workers: int = 0, return_embeddings: bool = False) -> dict[str, Any]:
    """Zero-shot classification of a labelled image dataset with a prompt ensemble (PAPERS.md §1.6).

    Args:
        model, tokenizer, image_processor: a DiHT/CLIP checkpoint's parts.
        dataset: a `datasets` dataset (or anything indexable yielding dicts) with an image and an integer label.
        class_names: the names written into the prompts (default: the label column's `ClassLabel` names).
        templates: prompt templates (default: OpenAI's 80 ImageNet templates).
        image_column, label_column: column names.
        ks: top-k accuracies to report.
        batch_size, num_workers: of the image DataLoader.
        return_embeddings: also return, under `"embeddings"`, `image_embeds`, `classifier`, the kept rows' `index`,
            their `labels` and the `class_names` (for plots).

    Returns:
        A result record: `{"task": "classification", "metrics": {"top1", "top5"}, "protocol", "num_images",
        "num_classes", "skipped_images"}` (+ `"embeddings"` with `return_embeddings`).
    """
    _check_columns(dataset, image_column, label_column)
    names = _class_names(dataset, label_column, class_names)
    model.eval()
    classifier = zero_shot_classifier(model, tokenizer, names, templates)  # (C, P)
    batches = image_batches(dataset, image_processor, image_column=image_column, keep_columns=[label_column],
                            batch_size=batch_size, num_workers=num_workers)
    image_embeds, extras = encode_images(model, batches)  # (N, P)
    labels = extras[label_column]
    record: dict[str, Any] = {
        "task": "classification",
        "metrics": classification_metrics(image_embeds, classifier, labels, [k for k in ks if k <= len(names)]),
        "protocol": {"num_templates": len(templates), "classifier": "mean of normalised prompt embeddings"},
        "num_images": len(labels),
        "num_classes": len(names),
        "skipped_images": extras["skipped"],
    }
    if return_embeddings:
        record["embeddings"] = {"image_embeds": image_embeds, "classifier": classifier, "index": extras["index"],
                                "labels": labels, "class_names": names}
    return record


def _captions(cell: Any, column: str) -> list[str]:
    captions = [cell] if isinstance(cell, str) else list(cell or [])
    if not captions or not all(isinstance(c, str) and c.strip() for c in captions):
        raise ValueError(f"every row needs at least one non-empty caption in {column!r}; got {cell!r}")
    return captions


def evaluate_retrieval(model, tokenizer, image_processor, dataset, *, image_column: str = "image",
                       caption_column: str = "caption", caption_template: str | None = None,
                       ks: Sequence[int] = (1, 5, 10), batch_size: int = 64, num_workers: int = 0,
                       return_embeddings: bool = False) -> dict[str, Any]:
    """Zero-shot image↔text retrieval with one or several captions per image (PAPERS.md §1.6).

    Args:
        model, tokenizer, image_processor: a DiHT/CLIP checkpoint's parts.
        dataset: one row per image; `caption_column` holds a caption or a list of captions (COCO: 5, Flickr30k: 5).
        caption_template: wrap every caption, e.g. `"a photo of {}."` (`templates.DIHT_CAPTION_TEMPLATE`, the DiHT
            protocol); `None` keeps the captions as they are.
        ks: recall@k to report.
        batch_size, num_workers: of the image DataLoader.
        return_embeddings: also return, under `"embeddings"`, `image_embeds`, `text_embeds`, `texts`,
            `text_to_image` and the kept rows' `index`.

    Returns:
        A result record: `{"task": "retrieval", "metrics": {"image_to_text_recall@k", "text_to_image_recall@k"},
        "protocol", "num_images", "num_texts", "skipped_images"}` (+ `"embeddings"` with `return_embeddings`).
    """
    _check_columns(dataset, image_column, caption_column)
    if caption_template is not None and caption_template.count("{}") != 1:
        raise ValueError(f"caption_template needs exactly one '{{}}'; got {caption_template!r}")
    model.eval()
    batches = image_batches(dataset, image_processor, image_column=image_column, keep_columns=[caption_column],
                            batch_size=batch_size, num_workers=num_workers)
    image_embeds, extras = encode_images(model, batches)  # (N_img, P); captions of skipped images are dropped too
    texts, text_to_image = [], []
    for image, cell in enumerate(extras[caption_column]):
        for caption in _captions(cell, caption_column):
            texts.append(caption_template.format(caption) if caption_template else caption)
            text_to_image.append(image)
    text_embeds = encode_texts(model, tokenizer, texts)  # (N_txt, P)
    record: dict[str, Any] = {
        "task": "retrieval",
        "metrics": retrieval_metrics(image_embeds, text_embeds, text_to_image, ks),
        "protocol": {"caption_template": caption_template},
        "num_images": len(image_embeds),
        "num_texts": len(texts),
        "skipped_images": extras["skipped"],
    }
    if return_embeddings:
        record["embeddings"] = {"image_embeds": image_embeds, "text_embeds": text_embeds, "texts": texts,
                                "text_to_image": text_to_image, "index": extras["index"]}
    return record

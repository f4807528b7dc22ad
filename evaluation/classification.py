"""Zero-shot classification with CLIP's prompt-ensemble protocol, and accuracy of a trained image classifier.

DiHT (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280, zero-shot evaluation) evaluates as CLIP does (Radford et al.,
https://arxiv.org/abs/2103.00020, §3.1.4): every class name is written into every prompt template; the classifier
row of a class is the mean of its L2-normalised prompt embeddings, normalised again; logits are `100 · x · Wᵀ`;
top-1 and top-5 accuracy.

Under `torch.distributed` each process encodes its shard of the images (`encoding.encode_image_shards`); the class
prompts are few, every process encodes them all; the metrics are computed on every process from the gathered
embeddings, so they agree everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .encoding import encode_image_shards, encode_texts, image_batches
from .metrics import load_metric
from .records import EvaluationRecord
from .templates import OPENAI_IMAGENET_TEMPLATES

__all__ = ["classification_metrics", "evaluate_classification", "evaluate_image_classifier", "topk",
           "zero_shot_classifier"]

CLASSIFICATION_LOGIT_SCALE = 100.0  # the protocol's fixed logit scale (only matters for the reported scores)


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


def topk(scores: torch.Tensor, k: int, *, chunk_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k columns of every row of `scores` (in row chunks), as `(values, indices)` of shape `(Q, min(k, C))`."""
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
    _, predictions = topk(logits, max(ks))
    metric = load_metric("zero_shot_accuracy")
    return metric.compute(predictions=predictions.cpu().tolist(), references=list(labels), k=list(ks))


def _class_names(dataset, label_column: str, class_names: Sequence[str] | None) -> list[str]:
    if class_names is not None:
        return list(class_names)
    feature = (getattr(dataset, "features", None) or {}).get(label_column)
    names = getattr(feature, "names", None)
    if not names:
        raise ValueError(f"column {label_column!r} is not a ClassLabel: pass the class names explicitly")
    return list(names)


def check_columns(dataset, *columns: str) -> None:
    """Raise a `KeyError` naming the first of `columns` the dataset lacks (streams with unknown features pass)."""
    present = getattr(dataset, "column_names", None)
    missing = [c for c in columns if present is not None and c not in present]
    if missing:
        raise KeyError(f"the evaluation data has no column {missing[0]!r} (columns: {present})")


def evaluate_classification(model, tokenizer, image_processor, dataset, *, class_names: Sequence[str] | None = None,
                            templates: Sequence[str] = OPENAI_IMAGENET_TEMPLATES, image_column: str = "image",
                            label_column: str = "label", ks: Sequence[int] = (1, 5), batch_size: int = 64,
                            num_workers: int = 0, return_embeddings: bool = False) -> EvaluationRecord:
    """Zero-shot classification of a labelled image dataset with a prompt ensemble (DiHT, arXiv 2301.02280).

    Args:
        model, tokenizer, image_processor: a dual encoder's parts (DiHT, CLIP, COSMO).
        dataset: a `datasets` dataset (or anything indexable yielding dicts) with an image and an integer label.
        class_names: the names written into the prompts (default: the label column's `ClassLabel` names).
        templates: prompt templates (default: OpenAI's 80 ImageNet templates).
        image_column, label_column: column names.
        ks: top-k accuracies to report.
        batch_size, num_workers: of the image DataLoader.
        return_embeddings: also keep, in `record.embeddings`, `image_embeds`, `classifier`, the kept rows' `index`,
            their `labels` and the `class_names` (for plots).

    Returns:
        An `EvaluationRecord` with `metrics` `top1`, `top5` (fractions), `num_images`, `num_classes`,
        `skipped_images`; under `torch.distributed` every process encodes only its shard of the images (row `i` on
        process `i mod world_size`) and returns the record of the whole dataset.
    """
    check_columns(dataset, image_column, label_column)
    names = _class_names(dataset, label_column, class_names)
    model.eval()
    classifier = zero_shot_classifier(model, tokenizer, names, templates)  # (C, P)
    image_embeds, extras = encode_image_shards(model, dataset, image_processor, image_column=image_column,
                                               keep_columns=[label_column], batch_size=batch_size,
                                               num_workers=num_workers)  # (N, P), every process the same
    labels = extras[label_column]
    record = EvaluationRecord(
        task="classification",
        metrics=classification_metrics(image_embeds, classifier, labels, [k for k in ks if k <= len(names)]),
        protocol={"num_templates": len(templates), "classifier": "mean of normalised prompt embeddings"},
        num_images=len(labels), num_classes=len(names), skipped_images=extras["skipped"],
    )
    if return_embeddings:
        record.embeddings = {"image_embeds": image_embeds, "classifier": classifier, "index": extras["index"],
                             "labels": labels, "class_names": names}
    return record


@torch.inference_mode()
def evaluate_image_classifier(model, image_processor, dataset, *, image_column: str = "image",
                              label_column: str = "label", ks: Sequence[int] = (1,), batch_size: int = 64,
                              num_workers: int = 0, return_predictions: bool = False) -> EvaluationRecord:
    """Top-k accuracy of an image classifier (`model(pixel_values=...).logits`), e.g. a few-shot
    `DiHTForImageClassification`, on a labelled dataset; undecodable images are skipped and counted.

    Returns:
        An `EvaluationRecord` (task `classification`) with `top1` (and the other `ks`); with `return_predictions`,
        `record.embeddings` holds the `predictions` (top-1 class per kept image), `labels` and `index`.
    """
    check_columns(dataset, image_column, label_column)
    model.eval()
    device = next(model.parameters()).device
    predictions, labels, rows, skipped, num_classes = [], [], [], 0, None
    for batch in image_batches(dataset, image_processor, image_column=image_column, keep_columns=[label_column],
                               batch_size=batch_size, num_workers=num_workers):
        skipped += batch["skipped"]
        if batch["pixel_values"] is None:
            continue
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits  # (b, C)
        num_classes = logits.shape[1]
        predictions.append(logits.topk(min(max(ks), num_classes), dim=1).indices.cpu())
        labels += batch[label_column]
        rows += batch["index"].tolist()
    if not predictions:
        raise ValueError("no image in the evaluation data could be decoded")
    ranked = torch.cat(predictions)  # (N, k)
    metric = load_metric("zero_shot_accuracy")
    record = EvaluationRecord(
        task="classification",
        metrics=metric.compute(predictions=ranked.tolist(), references=labels, k=[k for k in ks if k <= num_classes]),
        protocol={"classifier": type(model).__name__},
        num_images=len(labels), num_classes=num_classes, skipped_images=skipped,
    )
    if return_predictions:
        record.embeddings = {"predictions": ranked[:, 0].tolist(), "labels": labels, "index": rows}
    return record

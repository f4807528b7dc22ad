"""Evaluation records → the Hub's `model-index` (`huggingface_hub.EvalResult`) and the card's table.

The records are `evaluation.EvaluationRecord`s (or their dicts, as `examples/zero_shot.py` writes them to
`results.json`) for the zero-shot protocols of DiHT (Radenovic et al., CVPR 2023, arXiv 2301.02280) and COSMO
(arXiv 2312.06112), one per task and dataset:

    {"task": "classification" | "retrieval",
     "dataset": {"name": "ImageNet-1k", "type": "imagenet-1k", "config": None, "split": "validation",
                 "revision": None, ...},
     "protocol": {"templates": "openai_imagenet_80", ...},            # free-form strings and ints; None: unused
     "metrics": {"top1": 0.68, "top5": 0.91}                         # classification
              | {"image_to_text_recall@1": 0.59, ..., "text_to_image_recall@10": 0.9,    # retrieval
                 "reranked_image_to_text_recall@1": 0.66, ...},                 # re-ranked by ITM
     "num_images": 50000, "skipped_images": 0, ...}                  # optional; also read from "dataset"

Other keys (`name`, `num_classes`, `plot`, ...) are ignored.

Metric values are fractions in [0, 1]; the model-index and the card report them as percentages rounded to 0.01,
the unit of the papers' tables, and every metric name says "(%)".
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult

logger = logging.getLogger(__name__)

__all__ = ["TASK_TYPES", "eval_results_from", "load_results", "result_rows"]

# Task ids of the model-index. The Hub validates the model-index's structure, not the vocabulary of `task.type`
# (MTEB cards publish types such as "Retrieval"); its pipeline taxonomy (huggingface.js `pipelines.ts`) has no
# image-text retrieval id: "image-to-text" is caption *generation*, "text-retrieval" is text-only and
# "visual-document-retrieval" is about document pages. So classification uses the pipeline id this model serves,
# and retrieval the Papers with Code task DiHT's COCO/Flickr results belong to ("Zero-Shot Cross-Modal Retrieval").
TASK_TYPES: dict[str, tuple[str, str]] = {
    "classification": ("zero-shot-image-classification", "Zero-Shot Image Classification"),
    "retrieval": ("zero-shot-cross-modal-retrieval", "Zero-Shot Cross-Modal Retrieval"),
}
_TOP_K = re.compile(r"top(\d+)")
_RECALL = re.compile(r"(reranked_)?(image_to_text|text_to_image)_recall@(\d+)")
_ARROWS = {"image_to_text": "image→text", "text_to_image": "text→image"}
# Columns of the card's table that come from the record's dataset block rather than its metrics.
_DATASET_KEYS = ("name", "type", "config", "split", "revision")


def _metric(task: str, key: str) -> tuple[str, str, int] | None:
    """`(metric_type, metric_name, sort key)` of one metric key, or None for a key of no known kind."""
    if task == "classification" and (match := _TOP_K.fullmatch(key)):
        k = int(match.group(1))
        return ("accuracy" if k == 1 else f"top_{k}_accuracy"), f"top-{k} accuracy (%)", k
    if task == "retrieval" and (match := _RECALL.fullmatch(key)):
        reranked, direction, k = bool(match.group(1)), match.group(2), int(match.group(3))
        # image→text first, then by k; the re-ranked recalls after the similarity-only ones
        order = 2000 * reranked + (0 if direction == "image_to_text" else 1000) + k
        prefix, suffix = ("reranked_", ", re-ranked") if reranked else ("", "")
        return (f"{prefix}{direction}_recall_at_{k}", f"Recall@{k} {_ARROWS[direction]}{suffix} (%)", order)
    return None


def _percent(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"metric {key!r} must be a finite number, got {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(
            f"metric {key!r} is {value!r}: evaluation records hold fractions in [0, 1] (the card converts them to "
            "percentages); pass the fraction, e.g. 0.68 for 68%."
        )
    return round(100.0 * value, 2)


def _as_mapping(record: Any) -> Any:
    return record.to_dict() if callable(getattr(record, "to_dict", None)) else record  # an EvaluationRecord


def _checked(record: Mapping[str, Any], index: int) -> tuple[str, Mapping[str, Any], Mapping[str, Any]]:
    record = _as_mapping(record)
    if not isinstance(record, Mapping):
        raise ValueError(f"result {index} is a {type(record).__name__}, not a dict")
    task, dataset, metrics = record.get("task"), record.get("dataset"), record.get("metrics")
    if task not in TASK_TYPES:
        raise ValueError(f"result {index}: 'task' must be one of {sorted(TASK_TYPES)}, got {task!r}")
    if not isinstance(dataset, Mapping) or not dataset.get("name"):
        raise ValueError(f"result {index}: 'dataset' must be a dict with at least a 'name'")
    if not isinstance(metrics, Mapping) or not metrics:
        raise ValueError(f"result {index}: 'metrics' must be a non-empty dict")
    return task, dataset, metrics


def _metrics_of(task: str, metrics: Mapping[str, Any], index: int) -> list[tuple[str, str, float]]:
    """`(metric_type, metric_name, percent)` of the known metrics, in display order; unknown keys are logged."""
    known = []
    for key, value in metrics.items():
        described = _metric(task, key)
        if described is None:
            logger.warning("result %d: metric %r is not a %s metric this card knows; left out of the card",
                           index, key, task)
            continue
        known.append((described[2], described[0], described[1], _percent(key, value)))
    if not known:
        raise ValueError(f"result {index}: none of the metrics {sorted(metrics)} is a known {task} metric "
                         f"(classification: top1, top5, ...; retrieval: image_to_text_recall@1, ...)")
    return [(metric_type, name, value) for _, metric_type, name, value in sorted(known)]


def eval_results_from(results: Iterable[Mapping[str, Any]]) -> list[EvalResult]:
    """Convert evaluation records into the `huggingface_hub.EvalResult` entries of a card's `model-index`.

    Zero-shot protocols of DiHT (arXiv 2301.02280) and COSMO (arXiv 2312.06112): classification gives
    task type `zero-shot-image-classification` with metric types `accuracy` (top-1) and `top_<k>_accuracy`;
    retrieval gives task type `zero-shot-cross-modal-retrieval` with `image_to_text_recall_at_<k>` and
    `text_to_image_recall_at_<k>` (and `reranked_...` after ITM re-ranking). Values become percentages rounded to
    0.01. The record's `protocol` (prompt templates, caption wrapping, ...) becomes each metric's `args`, the
    re-ranking settings (`rerank_k`, `rescorer`) those of the re-ranked metrics only; the dataset's `config`, `split` and `revision`
    go to the model-index, other dataset keys (`num_images`, ...) only to the card's table.

    Args:
        results: records in the schema of this module's docstring.

    Returns:
        One `EvalResult` per known metric, in the order of the records.

    Raises:
        ValueError: a record without a known `task`, a dataset `name` or a known metric; a value outside [0, 1];
            two records for the same task, dataset, config, split and revision (the model-index holds one).

    Example:
        >>> results = eval_results_from([
        ...     {"task": "classification", "dataset": {"name": "ImageNet-1k", "type": "imagenet-1k"},
        ...      "metrics": {"top1": 0.68, "top5": 0.9134}}])
        >>> results[0].task_type
        'zero-shot-image-classification'
        >>> [(r.metric_type, r.metric_value) for r in results]
        [('accuracy', 68.0), ('top_5_accuracy', 91.34)]
    """
    converted: list[EvalResult] = []
    seen: dict[tuple, int] = {}
    for index, record in enumerate(results):
        task, dataset, metrics = _checked(record, index)
        record = _as_mapping(record)
        task_type, task_name = TASK_TYPES[task]
        protocol = _protocol(record) or None
        entries = [
            EvalResult(
                task_type=task_type,
                task_name=task_name,
                dataset_type=str(dataset.get("type") or dataset["name"]),  # a Hub dataset id when there is one
                dataset_name=str(dataset["name"]),
                dataset_config=dataset.get("config"),
                dataset_split=dataset.get("split"),
                dataset_revision=dataset.get("revision"),
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=value,
                metric_args=_protocol_of(metric_type, protocol),
            )
            for metric_type, metric_name, value in _metrics_of(task, metrics, index)
        ]
        identifier = entries[0].unique_identifier
        if identifier in seen:  # the model-index would merge both records' metrics under one result
            raise ValueError(f"results {seen[identifier]} and {index} are both for {identifier}; the model-index "
                             "holds one result per task, dataset, config, split and revision")
        seen[identifier] = index
        converted.extend(entries)
    return converted


# Protocol keys that describe the ITM re-ranking (ALBEF's, arXiv 2107.07651): they belong to the re-ranked metrics
# only, not to the similarity-only recalls of the same record.
RERANK_PROTOCOL_KEYS = ("rerank_k", "rescorer")


def _protocol_of(metric_type: str, protocol: dict[str, Any] | None) -> dict[str, Any] | None:
    if not protocol or metric_type.startswith("reranked_"):
        return protocol
    return {key: value for key, value in protocol.items() if key not in RERANK_PROTOCOL_KEYS} or None


def _protocol(record: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in (record.get("protocol") or {}).items() if value is not None}


def _images(record: Mapping[str, Any], dataset: Mapping[str, Any]) -> str:
    images = record.get("num_images", dataset.get("num_images"))
    if not isinstance(images, int):
        return "–"
    skipped = record.get("skipped_images", dataset.get("skipped_images")) or 0
    return f"{images:,}" + (f" ({skipped:,} skipped)" if skipped else "")  # unreadable images are counted, not hidden


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")  # a pipe would end a Markdown table cell


def result_rows(results: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row of the card's evaluation table per record: task, dataset, split, images, metrics (%), protocol.

    Args:
        results: records in the schema of this module's docstring (checked as `eval_results_from` checks them).

    Returns:
        Dicts of Markdown-escaped cell strings with keys `task`, `dataset`, `split`, `images`, `metrics`,
        `protocol`.

    Example:
        >>> result_rows([{"task": "retrieval", "dataset": {"name": "COCO", "split": "test"}, "num_images": 5000,
        ...               "protocol": {"caption_template": "a photo of {}."},
        ...               "metrics": {"text_to_image_recall@1": 0.406, "image_to_text_recall@1": 0.593}}])[0]["metrics"]
        'Recall@1 image→text 59.30 · Recall@1 text→image 40.60'
    """
    rows = []
    for index, record in enumerate(results):
        task, dataset, metrics = _checked(record, index)
        record = _as_mapping(record)
        extra = {key: value for key, value in dataset.items()
                 if key not in (*_DATASET_KEYS, "num_images", "skipped_images") and value is not None}
        protocol = {**_protocol(record), **extra}
        name = dataset["name"] if not dataset.get("config") else f"{dataset['name']} ({dataset['config']})"
        rows.append({
            "task": TASK_TYPES[task][1],
            "dataset": _cell(name),
            "split": _cell(dataset.get("split") or "–"),
            "images": _images(record, dataset),
            "metrics": _cell(" · ".join(f"{name.removesuffix(' (%)')} {value:.2f}"
                                        for _, name, value in _metrics_of(task, metrics, index))),
            "protocol": _cell("; ".join(f"{key}: {value}" for key, value in protocol.items()) or "–"),
        })
    return rows


def load_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    """Read evaluation records from JSON files.

    A file may hold one record (a dict with a `task`), a list of records, or a dict whose `results` key holds the
    list (a summary file with other keys next to it).

    Args:
        paths: JSON files.

    Returns:
        The records of all files, in order.

    Raises:
        ValueError: a file that is not valid JSON or holds none of the three shapes.
    """
    records: list[dict[str, Any]] = []
    for path in paths:
        try:
            content = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read evaluation results from {str(path)!r}: {error}") from error
        if isinstance(content, dict) and "task" in content:
            content = [content]
        elif isinstance(content, dict) and isinstance(content.get("results"), list):
            content = content["results"]
        if not isinstance(content, list):
            raise ValueError(f"{str(path)!r} holds neither an evaluation record, a list of them, nor a dict with a "
                             "'results' list")
        records.extend(content)
    return records

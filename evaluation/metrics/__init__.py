"""The evaluation metrics as `evaluate` modules that ship inside this package.

`evaluate.load("accuracy")` fetches its script from the Hub; these modules load from a local path, so evaluation
runs offline. Each folder holds one module script named after it, the layout `evaluate.load(path)` expects.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import evaluate

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("zero_shot_accuracy", "retrieval_recall")


@cache
def load_metric(name: str) -> evaluate.EvaluationModule:
    """`evaluate.load` of a metric module shipped in `evaluation/metrics/` (no network).

    Args:
        name: one of `METRIC_NAMES`.

    Returns:
        The metric, keeping its predictions in memory (no cache files, so concurrent processes never share one).
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; shipped metrics: {list(METRIC_NAMES)}")
    return evaluate.load(str(METRICS_DIR / name), keep_in_memory=True)

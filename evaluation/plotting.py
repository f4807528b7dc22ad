"""A picture of sample retrievals, for a person to look at: every query next to its top-k results with their scores.

Image queries are followed by their k best texts (captions or class prompts); text queries by their k best images.
Correct results are drawn in green, others in red, so a reader sees at a glance what the model confuses.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

CORRECT, WRONG = "#1a7f37", "#cf222e"


@dataclass
class Retrieval:
    """One query and its ranked results.

    Args:
        query: a PIL image or a text.
        results: the top-k results, each a PIL image or a text, best first.
        scores: the similarity of each result to the query.
        correct: whether each result is relevant.
    """

    query: Any
    results: Sequence[Any]
    scores: Sequence[float]
    correct: Sequence[bool]


def sample_retrievals(query_embeds: torch.Tensor, item_embeds: torch.Tensor, queries: Sequence[Any],
                      items: Sequence[Any], relevant: Sequence[Sequence[int]], *, num_queries: int = 4, k: int = 5,
                      seed: int = 0) -> list[Retrieval]:
    """Pick `num_queries` queries at random (seeded) and rank `items` for each by cosine similarity.

    Args:
        query_embeds: `(Q, P)` unit rows; `item_embeds`: `(I, P)` unit rows.
        queries, items: what to draw for each row (PIL images or texts), aligned with the embeddings.
        relevant: for each query, the indices of its relevant items.
        num_queries, k, seed: how many queries, results per query, and the draw.
    """
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(len(queries), generator=generator)[:num_queries].tolist()
    scores, indices = (query_embeds[picked] @ item_embeds.t()).topk(min(k, len(items)), dim=1)  # (q, k)
    return [
        Retrieval(queries[q], [items[i] for i in row], row_scores, [i in set(relevant[q]) for i in row])
        for q, row, row_scores in zip(picked, indices.tolist(), scores.tolist())
    ]


def _draw(axis, content: Any, *, title: str | None = None, color: str | None = None, width: int = 28) -> None:
    axis.set_xticks([])
    axis.set_yticks([])
    if isinstance(content, str):
        axis.text(0.5, 0.5, textwrap.fill(content, width), ha="center", va="center", fontsize=8, wrap=True,
                  color=color or "black")
    else:
        axis.imshow(content)
    if title:
        axis.set_title(title, fontsize=8, color=color or "black")
    for spine in axis.spines.values():
        spine.set_edgecolor(color or "#888888")
        spine.set_linewidth(2.5 if color else 1)


def plot_retrievals(retrievals: Sequence[Retrieval], path: str | Path, *, title: str = "") -> Path:
    """Write a PNG with one row per query: the query, then its results titled with their scores.

    Args:
        retrievals: the rows to draw (e.g. from `sample_retrievals`).
        path: the PNG file to write.
        title: a title over the figure.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on servers
    import matplotlib.pyplot as plt

    if not retrievals:
        raise ValueError("no retrievals to plot")
    columns = 1 + max(len(r.results) for r in retrievals)
    figure, axes = plt.subplots(len(retrievals), columns, figsize=(1.9 * columns, 2.0 * len(retrievals)),
                                squeeze=False)
    for row, retrieval in zip(axes, retrievals):
        _draw(row[0], retrieval.query, title="query")
        for axis, result, score, hit in zip(row[1:], retrieval.results, retrieval.scores, retrieval.correct):
            _draw(axis, result, title=f"{score:.3f}", color=CORRECT if hit else WRONG)
        for axis in row[1 + len(retrieval.results):]:
            axis.axis("off")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path

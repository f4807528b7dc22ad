"""Recall@k of ranked retrieval results with one or several relevant items per query, as an `evaluate` module.

The retrieval metric of CLIP-style evaluation (DiHT, https://arxiv.org/abs/2301.02280): a query
counts as a hit at k when any of its relevant items is among its first k results. Image→text queries on COCO have
five relevant captions; text→image queries have one relevant image.
"""

import datasets
import evaluate

_DESCRIPTION = "Recall@k: the fraction of queries with at least one relevant item among their first k results."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[int]]`): for every query, item indices ranked by decreasing similarity (at least max(k)
        of them, or all items).
    references (`list[list[int]]`): for every query, the indices of its relevant items (at least one).
    k (`list[int]`, defaults to [1, 5, 10]): the k of each reported recall.
Returns:
    `{"recall@1": float, "recall@5": float, ...}`, one fraction per k.
Example:
    >>> from evaluation import load_metric
    >>> metric = load_metric("retrieval_recall")  # this file, loaded by evaluate.load
    >>> metric.compute(predictions=[[3, 1], [0, 2]], references=[[1, 4], [2]], k=[1, 2])
    {'recall@1': 0.0, 'recall@2': 1.0}
"""

_CITATION = """\
@inproceedings{radenovic2023diht,
  title={Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training},
  author={Radenovic, Filip and Dubey, Abhimanyu and Kadian, Abhishek and Mihaylov, Todor and Vandenhende, Simon
          and Patel, Yash and Wen, Yi and Ramanathan, Vignesh and Mahajan, Dhruv},
  booktitle={CVPR},
  year={2023}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RetrievalRecall(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, k=(1, 5, 10)):
        if not references:
            raise ValueError("no queries to score")
        if any(len(relevant) == 0 for relevant in references):
            raise ValueError("every query needs at least one relevant item")
        results = {}
        for top in k:
            if top < 1:
                raise ValueError(f"k must be at least 1; got {top}")
            hits = sum(not set(ranked[:top]).isdisjoint(relevant) for ranked, relevant in zip(predictions, references))
            results[f"recall@{top}"] = hits / len(references)
        return results

"""Top-k accuracy of ranked class predictions, as an `evaluate` metric module.

The zero-shot classification metric of CLIP (https://arxiv.org/abs/2103.00020) and DiHT
(https://arxiv.org/abs/2301.02280): an image counts as correct at k when its true class is among the
k classes with the highest logits.
"""

import datasets
import evaluate

_DESCRIPTION = "Top-k accuracy: the fraction of examples whose reference class is among their first k predictions."

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[int]]`): for every example, class indices ranked by decreasing score (at least max(k)
        of them, or all classes).
    references (`list[int]`): the true class of every example.
    k (`list[int]`, defaults to [1, 5]): the k of each reported accuracy.
Returns:
    `{"top1": float, "top5": float, ...}`, one fraction per k.
Example:
    >>> from evaluation import load_metric
    >>> metric = load_metric("zero_shot_accuracy")  # this file, loaded by evaluate.load
    >>> metric.compute(predictions=[[2, 0], [1, 2]], references=[2, 2], k=[1, 2])
    {'top1': 0.5, 'top2': 1.0}
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
class ZeroShotAccuracy(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions, references, k=(1, 5)):
        if not references:
            raise ValueError("no examples to score")
        results = {}
        for top in k:
            if top < 1:
                raise ValueError(f"k must be at least 1; got {top}")
            hits = sum(reference in ranked[:top] for ranked, reference in zip(predictions, references))
            results[f"top{top}"] = hits / len(references)
        return results

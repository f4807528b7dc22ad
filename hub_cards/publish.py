"""Write the card of a trained or converted model folder, then push the folder to the Hub in one commit.

The one call the training scripts and `python -m hub_cards.push` make:
`publish(folder, repo_id, results=..., cat_report=..., training_args=..., loss_config=..., dry_run=...)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo
from transformers import TrainingArguments

from .card import write_model_card
from .push import push_to_hub

__all__ = ["publish"]


def publish(
    folder: str | Path,
    repo_id: str,
    *,
    results: Sequence[Mapping[str, Any]] | None = None,
    cat_report: Mapping[str, Any] | None = None,
    training_args: TrainingArguments | Mapping[str, Any] | None = None,
    loss_config: Mapping[str, Any] | None = None,
    datasets: Sequence[str] | None = None,
    base_model: str | Sequence[str] | None = None,
    license: str | None = None,
    dry_run: bool = False,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    overwrite_card: bool = False,
) -> list[str] | CommitInfo:
    """Write `<folder>/README.md` with `hub_cards.write_model_card`, then `hub_cards.push_to_hub` the folder.

    The card is written in a dry run too, so it can be read before anything is uploaded. Call it from the main
    process only (`trainer.is_world_process_zero()`), after `save_pretrained` of model, tokenizer and image processor.

    Args:
        folder: the saved model folder.
        repo_id: `namespace/name` of the Hub repository; also the card's model name.
        results: evaluation records (`evaluation.EvaluationRecord`s or their dicts), shown in the table and the
            model-index.
        cat_report: `curation.cat_filter`'s report.
        training_args: the run's `TrainingArguments` (steps, global batch, lr, the recipe's settings ...) or a dict.
        loss_config: the training loss's `get_config_dict()` (e.g. `DiHTTrainer.loss_config()`).
        datasets: Hub dataset ids of the training data (local paths do not belong in the card's metadata).
        base_model: Hub model id(s) the run started from.
        license: Hub license id (default: the recipe's for this folder — `cc-by-nc-4.0` for conversions of the
            official DiHT weights — else `apache-2.0`, for models trained with this library).
        dry_run: write the card and list the files; upload nothing.
        private, token, commit_message, revision: see `push_to_hub`.
        overwrite_card: replace a README.md that hub_cards did not write.

    Returns:
        See `push_to_hub`: the paths (dry run) or the commit.
    """
    write_model_card(folder, overwrite=overwrite_card, results=results, cat_report=cat_report,
                     training=training_args, loss_config=loss_config, datasets=datasets, base_model=base_model,
                     license=license, model_id=repo_id)
    return push_to_hub(folder, repo_id, dry_run=dry_run, private=private, token=token,
                       commit_message=commit_message, revision=revision)

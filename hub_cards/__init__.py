"""Model cards and Hub uploads for the checkpoints of this library (DiHT arXiv 2301.02280; COSMO arXiv 2312.06112).

- `render_model_card`, `write_model_card`: the card (YAML metadata with a `model-index`, model details, usage with
  and without the package, training data with the CAT report, the recipe's training settings, evaluation table,
  BibTeX) from the recipe of the model type (`RECIPES`);
- `eval_results_from`, `load_results`: evaluation records → `huggingface_hub.EvalResult` entries;
- `build_card_data`, `training_from`: the metadata and the training settings on their own;
- `push_to_hub`, `upload_plan`: the folder and its card in one `upload_folder` commit; a dry run lists the files;
- `publish`: write the card, then push — what the training scripts and `python -m hub_cards.push` call;
- `is_generated_card`, `CARD_MARKER`: recognise a card written here;
- `PublishArguments`, `hub_name`: the `--hub_dry_run` and `--license` options of the training scripts; a source that
  is a Hub name (not a local path), for the card's `datasets` and `base_model`.
"""

from .arguments import PublishArguments, hub_name
from .card import CARD_MARKER, DEFAULT_LICENSE, build_card_data, is_generated_card, render_model_card, write_model_card
from .eval_results import TASK_TYPES, eval_results_from, load_results, result_rows
from .publish import publish
from .push import ALLOW_PATTERNS, IGNORE_PATTERNS, UploadPlan, complete_remote_code, push_to_hub, upload_plan
from .recipes import LIBRARY_CITATION, RECIPES, CardRecipe, recipe_for
from .training import training_from

__all__ = [
    "ALLOW_PATTERNS",
    "CARD_MARKER",
    "CardRecipe",
    "DEFAULT_LICENSE",
    "IGNORE_PATTERNS",
    "LIBRARY_CITATION",
    "PublishArguments",
    "RECIPES",
    "TASK_TYPES",
    "UploadPlan",
    "build_card_data",
    "complete_remote_code",
    "eval_results_from",
    "hub_name",
    "is_generated_card",
    "load_results",
    "publish",
    "push_to_hub",
    "recipe_for",
    "render_model_card",
    "result_rows",
    "training_from",
    "upload_plan",
    "write_model_card",
]

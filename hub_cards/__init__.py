"""Model cards and Hub uploads for DiHT checkpoints (Radenovic et al., CVPR 2023, arXiv 2301.02280).

- `render_model_card`, `write_model_card`: the card (YAML metadata with a `model-index`, model details, usage with
  and without the package, training data with the CAT report, HN-NCE/concept-distillation settings, evaluation
  table, BibTeX of DiHT and COSMO/MAFA) from the template of the model type (`TEMPLATES`).
- `eval_results_from`, `load_results`: evaluation records → `huggingface_hub.EvalResult` entries.
- `build_card_data`, `training_from`: the metadata and the training settings on their own.
- `push_to_hub`, `upload_plan`: the folder and its card in one commit; a dry run lists the files.
- `publish`: write the card, then push — what the training and conversion scripts call.
- `is_generated_card`, `CARD_MARKER`: recognise a card written here.
"""

from .card import (
    CARD_MARKER,
    DEFAULT_LICENSE,
    TEMPLATES,
    build_card_data,
    is_generated_card,
    render_model_card,
    template_for,
    write_model_card,
)
from .eval_results import TASK_TYPES, eval_results_from, load_results, result_rows
from .publish import publish
from .push import REMOTE_CODE, UploadPlan, push_to_hub, upload_plan
from .training import training_from

__all__ = [
    "CARD_MARKER",
    "DEFAULT_LICENSE",
    "REMOTE_CODE",
    "TASK_TYPES",
    "TEMPLATES",
    "UploadPlan",
    "build_card_data",
    "eval_results_from",
    "is_generated_card",
    "load_results",
    "publish",
    "push_to_hub",
    "render_model_card",
    "result_rows",
    "template_for",
    "training_from",
    "upload_plan",
    "write_model_card",
]

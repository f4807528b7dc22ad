"""DiHT models for transformers (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

Importing this package registers DiHT with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForZeroShotImageClassification`, and `AutoModelForImageClassification` for the few-shot
`DiHTForImageClassification`) and marks the classes for remote code, so that `save_pretrained` writes an `auto_map`
and copies `configuration_diht.py`, `modeling_diht.py` and `loss_diht.py` next to the weights. A process that never
imported this package then loads the folder with `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForZeroShotImageClassification,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

from .configuration_diht import DIHT_PRESETS, DiHTConfig, DiHTTextConfig, DiHTVisionConfig
from .loss_diht import hn_nce_loss, hn_nce_per_row
from .modeling_diht import (
    DiHTForImageClassification,
    DiHTModel,
    DiHTOutput,
    DiHTPromptInitialisedHead,
    project_onto_ball_,
)

for _config_class in (DiHTConfig, DiHTTextConfig, DiHTVisionConfig):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
AutoModel.register(DiHTConfig, DiHTModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(DiHTConfig, DiHTModel, exist_ok=True)
# The zero-shot pipeline checks the model class against this name table, not against registered models; without
# the entry it logs a spurious "not supported" error for a model it then runs correctly.
MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES.setdefault(DiHTConfig.model_type, DiHTModel.__name__)
# The few-shot model (prompt-initialised head, arXiv 2301.02280 §few-shot) for `pipeline("image-classification")`,
# which checks the same kind of name table.
AutoModelForImageClassification.register(DiHTConfig, DiHTForImageClassification, exist_ok=True)
MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.setdefault(DiHTConfig.model_type, DiHTForImageClassification.__name__)

DiHTConfig.register_for_auto_class()
DiHTModel.register_for_auto_class("AutoModel")
DiHTForImageClassification.register_for_auto_class("AutoModelForImageClassification")

__all__ = [
    "DIHT_PRESETS",
    "DiHTConfig",
    "DiHTForImageClassification",
    "DiHTModel",
    "DiHTOutput",
    "DiHTPromptInitialisedHead",
    "DiHTTextConfig",
    "DiHTVisionConfig",
    "hn_nce_loss",
    "hn_nce_per_row",
    "project_onto_ball_",
]

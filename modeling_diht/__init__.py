"""DiHT models for transformers (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

Importing this package registers DiHT with the Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForZeroShotImageClassification`, and `AutoModelForImageClassification` for the few-shot
`DiHTForImageClassification`) and marks the classes for remote code, so that `save_pretrained` writes an `auto_map`
and copies `configuration_diht.py`, `modeling_diht.py` and `loss_diht.py` next to the weights. A process that never
imported this package then loads the folder with `trust_remote_code=True`.

The towers are registered too, as CLIP's are: `AutoModel` builds `DiHTTextModel` / `DiHTVisionModel` from a
`DiHTTextConfig` / `DiHTVisionConfig` (so `AutoModel.from_config(config.vision_config)` gives DiHT's image encoder),
and `AutoModelForTextEncoding` the text tower. Each tower class, with or without projection, also names itself in the
`auto_map` of a folder it saves, so such a folder loads back as that class with `trust_remote_code=True`.
"""

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForTextEncoding,
    AutoModelForZeroShotImageClassification,
)
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES,
    MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES,
)

from .configuration_diht import DIHT_PRESETS, DiHTConfig, DiHTTextConfig, DiHTVisionConfig
from .loss_diht import hn_nce_local_loss, hn_nce_loss, hn_nce_per_row
from .modeling_diht import AUTO_MAP as DIHT_AUTO_MAP
from .modeling_diht import (
    DiHTForImageClassification,
    DiHTModel,
    DiHTOutput,
    DiHTPromptInitialisedHead,
    DiHTTextModel,
    DiHTTextModelWithProjection,
    DiHTVisionModel,
    DiHTVisionModelWithProjection,
    project_onto_ball_,
)

for _config_class in (DiHTConfig, DiHTTextConfig, DiHTVisionConfig):
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
AutoModel.register(DiHTConfig, DiHTModel, exist_ok=True)
AutoModel.register(DiHTTextConfig, DiHTTextModel, exist_ok=True)
AutoModel.register(DiHTVisionConfig, DiHTVisionModel, exist_ok=True)
AutoModelForTextEncoding.register(DiHTTextConfig, DiHTTextModel, exist_ok=True)
AutoModelForZeroShotImageClassification.register(DiHTConfig, DiHTModel, exist_ok=True)
# The zero-shot pipeline checks the model class against this name table, not against registered models; without
# the entry it logs a spurious "not supported" error for a model it then runs correctly.
MODEL_FOR_ZERO_SHOT_IMAGE_CLASSIFICATION_MAPPING_NAMES.setdefault(DiHTConfig.model_type, DiHTModel.__name__)
# The few-shot model (prompt-initialised head, arXiv 2301.02280 §few-shot) for `pipeline("image-classification")`,
# which checks the same kind of name table.
AutoModelForImageClassification.register(DiHTConfig, DiHTForImageClassification, exist_ok=True)
MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES.setdefault(DiHTConfig.model_type, DiHTForImageClassification.__name__)

for _config_class in (DiHTConfig, DiHTTextConfig, DiHTVisionConfig):
    _config_class.register_for_auto_class()
for _model_class in (DiHTModel, DiHTTextModel, DiHTTextModelWithProjection, DiHTVisionModel,
                     DiHTVisionModelWithProjection):
    _model_class.register_for_auto_class("AutoModel")
DiHTForImageClassification.register_for_auto_class("AutoModelForImageClassification")

# What a dual-encoder folder needs for remote code: the files `save_pretrained` copies (modeling_diht.py and its
# relative imports) and, imported above, the `auto_map` it writes; hub_cards completes a folder saved without them.
DIHT_REMOTE_CODE_FILES = ("configuration_diht.py", "modeling_diht.py", "loss_diht.py")

__all__ = [
    "DIHT_AUTO_MAP",
    "DIHT_PRESETS",
    "DIHT_REMOTE_CODE_FILES",
    "DiHTConfig",
    "DiHTForImageClassification",
    "DiHTModel",
    "DiHTOutput",
    "DiHTPromptInitialisedHead",
    "DiHTTextConfig",
    "DiHTTextModel",
    "DiHTTextModelWithProjection",
    "DiHTVisionConfig",
    "DiHTVisionModel",
    "DiHTVisionModelWithProjection",
    "hn_nce_local_loss",
    "hn_nce_loss",
    "hn_nce_per_row",
    "project_onto_ball_",
]

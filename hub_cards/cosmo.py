"""The model card of COSMO checkpoints (Byun, Kim and Moon, CVPR 2024, https://arxiv.org/abs/2312.06112; MAFA).

An ALBEF-style model (arXiv 2107.07651) trained without momentum encoder and queues, as GRIT-VLP (arXiv 2208.04060):
a ViT image encoder, a BERT text encoder whose last layers fuse the text with the image, the contrastive (ITC),
image-text matching (ITM) and masked-language-modelling heads. This module is COSMO's entry in
`hub_cards.recipes.RECIPES`: the architecture table, the ITC/ITM/MLM settings, and the citations of MAFA, GRIT-VLP
and ALBEF.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .recipes import CardRecipe

__all__ = ["COSMO_CARD", "COSMO_CITATIONS"]

COSMO_CITATIONS = (
    """@inproceedings{byun2024mafa,
  title     = {{MAFA}: Managing False Negatives for Vision-Language Pre-training},
  author    = {Byun, Jaeseok and Kim, Dohoon and Moon, Taesup},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {27314--27324},
  year      = {2024},
  eprint    = {2312.06112},
  archivePrefix = {arXiv}
}""",
    """@inproceedings{byun2022grit,
  title     = {{GRIT-VLP}: Grouped Mini-batch Sampling for Efficient Vision and Language Pre-training},
  author    = {Byun, Jaeseok and Hwang, Taebaek and Fu, Jianlong and Moon, Taesup},
  booktitle = {European Conference on Computer Vision (ECCV)},
  year      = {2022},
  eprint    = {2208.04060},
  archivePrefix = {arXiv}
}""",
    """@inproceedings{li2021align,
  title     = {Align before Fuse: Vision and Language Representation Learning with Momentum Distillation},
  author    = {Li, Junnan and Selvaraju, Ramprasaath R. and Gotmare, Akhilesh Deepak and Joty, Shafiq and
               Xiong, Caiming and Hoi, Steven},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2021},
  eprint    = {2107.07651},
  archivePrefix = {arXiv}
}""",
)

# COSMO's training settings, as the training arguments and the loss's `get_config_dict()` name them.
TRAINING_LABELS = {
    "loss": "training loss",
    "itc_smoothing": "S-ITC smoothing ε",
    "itc_loss": "ITC term",
    "hard_negative_mode": "ITM hard negatives",
    "mlm_probability": "MLM masking probability",
    "itc_scope": "ITC candidates",
    "grouped_batches": "GRIT grouped mini-batches",
    "grit_grouping": "GRIT grouping scope",
    "connection_mining": "connection mining (ECM)",
    "ecm_thresholds": "ECM thresholds on the discriminator's match probability",
}


def _remote_code() -> tuple[tuple[str, ...], Mapping[str, str]]:
    import modeling_cosmo  # registers COSMO with the Auto classes; the package declares its own remote code

    return tuple(modeling_cosmo.COSMO_REMOTE_CODE_FILES), dict(modeling_cosmo.COSMO_AUTO_MAP)


def _details(config: Mapping[str, Any], folder: Path | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The COSMO template's variables: the image encoder, the text/fusion split, the heads and the ITC settings."""
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    layers = text.get("num_hidden_layers", 12)
    fusion = text.get("fusion_layer", 6)
    arch = {
        "vision_layers": vision.get("num_hidden_layers", 12), "vision_width": vision.get("hidden_size", 768),
        "vision_heads": vision.get("num_attention_heads", 12), "image_size": vision.get("image_size", 256),
        "patch_size": vision.get("patch_size", 16), "text_layers": fusion, "fusion_layers": layers - fusion,
        "text_width": text.get("hidden_size", 768), "text_heads": text.get("num_attention_heads", 12),
        "vocab_size": text.get("vocab_size", 30522), "embed_dim": config.get("embed_dim"),
    }
    preset = None
    if (arch["vision_layers"], arch["vision_width"], arch["patch_size"], arch["image_size"], layers, fusion,
            arch["text_width"], arch["embed_dim"]) == (12, 768, 16, 256, 12, 6, 768, 256):
        preset = "cosmo_vitb16_bert_base_256px"
    return {"arch": arch, "preset": preset,
            "itc": {"smoothing": settings.get("itc_smoothing", config.get("itc_smoothing")),
                    "loss": settings.get("itc_loss", config.get("itc_loss", "itc")),
                    "hard_negatives": config.get("hard_negative_mode", "argmax")}}


COSMO_CARD = CardRecipe(
    model_type="cosmo",
    template="cosmo_model_card.md",
    architectures=frozenset({"CosmoModel", "CosmoForImageTextRetrieval", "CosmoForPreTraining"}),
    package="modeling_cosmo",
    remote_code=_remote_code,
    pipeline_tag="zero-shot-image-classification",
    tags=("cosmo", "mafa", "albef", "vision-language", "image-text-retrieval", "image-text-matching",
          "zero-shot-image-classification", "diht-cosmo"),
    citations=COSMO_CITATIONS,
    training_labels=TRAINING_LABELS,
    details=_details,
)

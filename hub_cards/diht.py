"""The model card of DiHT checkpoints (Radenovic et al., CVPR 2023, https://arxiv.org/abs/2301.02280).

A DiHT dual encoder: CLIP's towers trained with HN-NCE and concept distillation on CAT-filtered data. This module
is DiHT's entry in `hub_cards.recipes.RECIPES`: the architecture table, the released preset it matches, the HN-NCE
and concept-distillation blocks, the provenance of converted official weights, and the citation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .recipes import CardRecipe
from .training import format_value

__all__ = ["DIHT_CARD", "DIHT_CITATION"]

DIHT_CITATION = """@inproceedings{radenovic2023filtering,
  title     = {Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training},
  author    = {Radenovic, Filip and Dubey, Abhimanyu and Kadian, Abhishek and Mihaylov, Todor and
               Vandenhende, Simon and Patel, Yash and Wen, Yi and Ramanathan, Vignesh and Mahajan, Dhruv},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  pages     = {6967--6977},
  year      = {2023},
  eprint    = {2301.02280},
  archivePrefix = {arXiv}
}"""

# Official checkpoint names: `<preset>_<sha256 of the file>.ckpt` (github.com/facebookresearch/diht).
_OFFICIAL_FILE = re.compile(r"diht_vit[a-z]\d+_\d+px_[0-9a-f]{64}\.ckpt")
_OPEN_CLIP_NAMES = {"diht_vitb32_224px": "ViT-B-32", "diht_vitb16_224px": "ViT-B-16",
                    "diht_vitl14_224px": "ViT-L-14", "diht_vitl14_336px": "ViT-L-14-336"}
# DiHT's training settings, as the training arguments and `HNNCELoss.get_config_dict()` name them.
TRAINING_LABELS = {
    "loss": "contrastive loss",
    "hn_nce_alpha": "HN-NCE α",
    "hn_nce_beta": "HN-NCE β",
    "hn_nce_detach_weights": "HN-NCE weights detached",
    "hn_nce_chunk_size": "HN-NCE rows per block",
    "concept_loss_weight": "concept-distillation loss weight",
    "concept_teacher": "concept teacher",
    "concept_vocabulary_size": "concept vocabulary size",
    "max_logit_scale": "logit-scale clamp (max 1/τ)",
}


def _remote_code() -> tuple[tuple[str, ...], Mapping[str, str]]:
    import modeling_diht  # registers DiHT with the Auto classes; the package declares its own remote code

    return tuple(modeling_diht.DIHT_REMOTE_CODE_FILES), dict(modeling_diht.DIHT_AUTO_MAP)


def _architecture(config: Mapping[str, Any]) -> dict[str, Any]:
    text, vision = config.get("text_config") or {}, config.get("vision_config") or {}
    return {
        "vision_layers": vision.get("num_hidden_layers"), "vision_width": vision.get("hidden_size"),
        "vision_heads": vision.get("num_attention_heads"), "vision_mlp": vision.get("intermediate_size"),
        "image_size": vision.get("image_size"), "patch_size": vision.get("patch_size"),
        "text_layers": text.get("num_hidden_layers"), "text_width": text.get("hidden_size"),
        "text_heads": text.get("num_attention_heads"), "text_mlp": text.get("intermediate_size"),
        "context_length": text.get("max_position_embeddings"), "vocab_size": text.get("vocab_size"),
        "embed_dim": config.get("projection_dim"),
    }


def _preset_of(config: Mapping[str, Any]) -> str | None:
    """The released architecture (`DIHT_PRESETS`) the config equals in every tower dimension, if any."""
    from modeling_diht import DIHT_PRESETS

    for name, preset in DIHT_PRESETS.items():
        towers = (("text_config", preset["text_config"]), ("vision_config", preset["vision_config"]))
        if config.get("projection_dim") == preset["projection_dim"] and all(
            (config.get(tower) or {}).get(key) == value for tower, values in towers for key, value in values.items()
        ):
            return name
    return None


def _training_blocks(settings: Mapping[str, Any], concept_heads: Mapping[str, int]) -> tuple[dict | None, dict | None]:
    hn_nce = None
    if "hn_nce_alpha" in settings or "hn_nce_beta" in settings:
        alpha, beta = settings.get("hn_nce_alpha", "not given"), settings.get("hn_nce_beta", "not given")
        note = "exactly CLIP's InfoNCE" if (alpha, beta) == (1, 0) else ""
        hn_nce = {"alpha": format_value(alpha), "beta": format_value(beta), "note": note}
    concept = None
    weight = settings.get("concept_loss_weight")
    if weight:  # 0 or absent: the run did not distil concepts
        concept = {"weight": format_value(weight), "heads": dict(concept_heads),
                   "teacher": settings.get("concept_teacher"),
                   "vocabulary_size": settings.get("concept_vocabulary_size", sum(concept_heads.values()) or "?")}
    return hn_nce, concept


def _details(config: Mapping[str, Any], folder: Path | None, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The DiHT template's variables: towers, preset, concept heads, HN-NCE and concept-distillation blocks."""
    concept_heads = {name: size for name, size in (config.get("concept_head_sizes") or {}).items() if size}
    hn_nce, concept = _training_blocks(settings, concept_heads)
    preset = _preset_of(config)
    summary = folder / "conversion_summary.json" if folder is not None else None
    official = summary is not None and summary.is_file() and bool(
        _OFFICIAL_FILE.fullmatch(str(json.loads(summary.read_text(encoding="utf-8")).get("source_file", ""))))
    return {"arch": _architecture(config), "preset": preset, "preset_open_clip": _OPEN_CLIP_NAMES.get(preset),
            "concept_heads": concept_heads, "hn_nce": hn_nce, "concept": concept, "official_conversion": official}


def _tags(context: Mapping[str, Any]) -> list[str]:
    return [tag for tag, on in (("cat-filtering", bool(context.get("cat_rows"))),
                                ("concept-distillation", bool(context.get("concept")))) if on]


def _license(folder: Path | None) -> str | None:
    """A converted checkpoint (`conversion_summary.json`) derives from the official DiHT weights, which Meta released
    under CC BY-NC 4.0: its card carries that license unless the caller says otherwise."""
    return "cc-by-nc-4.0" if folder is not None and (folder / "conversion_summary.json").is_file() else None


DIHT_CARD = CardRecipe(
    model_type="diht",
    template="diht_model_card.md",
    # A few-shot `DiHTForImageClassification` shares the model type but needs a card of its own (not written yet).
    architectures=frozenset({"DiHTModel"}),
    package="modeling_diht",
    remote_code=_remote_code,
    pipeline_tag="zero-shot-image-classification",
    tags=("diht", "clip", "vision-language", "zero-shot-image-classification", "image-text-retrieval", "hn-nce",
          "contrastive-learning", "diht-cosmo"),
    citations=(DIHT_CITATION,),
    training_labels=TRAINING_LABELS,
    details=_details,
    tags_for=_tags,
    license_for=_license,
)

"""Warm start of COSMO from a BERT checkpoint and a ViT / DeiT checkpoint (ALBEF arXiv 2107.07651, §3.1).

ALBEF, GRIT-VLP and COSMO initialise the image encoder from DeiT-B/16 (224 px, position embeddings bicubically
resized to the 256 px grid) and the text and fusion encoders from BERT-base: layers 0-5 become the text encoder,
layers 6-11 the fusion encoder, whose cross-attention starts random. This file maps transformers' `ViTModel` and
`BertForMaskedLM` parameter names onto COSMO's (timm names for the image encoder, BERT names for the text).
"""

from __future__ import annotations

import logging
import re

import torch
from transformers import BertForMaskedLM, ViTModel

from .configuration_cosmo import CosmoConfig

logger = logging.getLogger(__name__)

# transformers' ViT parameter names -> timm's (COSMO's image encoder), for the layout transformers 5.24 writes
# (`layers.{i}.attention.q_proj`) and the older one (`encoder.layer.{i}.attention.attention.query`).
_VIT_LAYER_RULES = [
    (r"layernorm_before\.", "norm1."),
    (r"layernorm_after\.", "norm2."),
    (r"attention\.o_proj\.", "attn.proj."),
    (r"attention\.output\.dense\.", "attn.proj."),
    (r"mlp\.fc1\.", "mlp.fc1."),
    (r"mlp\.fc2\.", "mlp.fc2."),
    (r"intermediate\.dense\.", "mlp.fc1."),
    (r"output\.dense\.", "mlp.fc2."),
]
_VIT_QKV = re.compile(r"attention\.(?:(q|k|v)_proj|attention\.(query|key|value))\.(weight|bias)$")
_VIT_LAYER = re.compile(r"^(?:layers|encoder\.layer)\.(\d+)\.(.+)$")


def vision_state_dict_from_vit(state_dict: dict[str, torch.Tensor], grid_size: int) -> dict[str, torch.Tensor]:
    """Map a transformers `ViTModel` state dict onto `CosmoVisionModel`'s names.

    Args:
        state_dict: `ViTModel.state_dict()` (the pooler, if any, is dropped).
        grid_size: patches per side of the target resolution; the patch position embeddings are bicubically resized
            to it (ALBEF's `interpolate_pos_embed`).

    Returns:
        A state dict for `CosmoVisionModel` (the `qkv` projection is the concatenation of query, key and value).
    """
    from .modeling_cosmo_towers import resize_patch_position_embeddings

    mapped, qkv, unused = {}, {}, []
    for key, value in state_dict.items():
        if key == "embeddings.cls_token":
            mapped["cls_token"] = value
        elif key == "embeddings.position_embeddings":
            patches = value[:, 1:]
            if patches.shape[1] != grid_size**2:
                patches = resize_patch_position_embeddings(patches, grid_size, grid_size)
            mapped["pos_embed"] = torch.cat([value[:, :1], patches], dim=1)
        elif key.startswith("embeddings.patch_embeddings.projection."):
            mapped["patch_embed.proj." + key.rsplit(".", 1)[1]] = value
        elif key.startswith("layernorm."):
            mapped["norm." + key.rsplit(".", 1)[1]] = value
        elif (layer := _VIT_LAYER.match(key)) is not None:
            index, rest = layer.groups()
            if (match := _VIT_QKV.match(rest)) is not None:
                part = "qkv".index((match.group(1) or match.group(2))[0])
                qkv.setdefault((index, match.group(3)), [None] * 3)[part] = value
                continue
            for pattern, target in _VIT_LAYER_RULES:
                if re.match(pattern, rest):
                    mapped[f"blocks.{index}.{re.sub(pattern, target, rest, count=1)}"] = value
                    break
            else:
                unused.append(key)
        elif not key.startswith("pooler."):
            unused.append(key)
    for (index, kind), parts in qkv.items():
        if any(part is None for part in parts):
            raise ValueError(f"ViT layer {index}: query, key and value {kind} are not all in the checkpoint")
        mapped[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat(parts, dim=0)
    if unused:
        raise ValueError(f"ViT checkpoint keys COSMO cannot place (another ViT variant?): {unused[:8]}")
    return mapped


def text_state_dict_from_bert(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a transformers `BertForMaskedLM` state dict onto COSMO's names (`text_model.*`, `mlm_head.*`).

    BERT's layer i becomes COSMO's layer i; for layers from `fusion_layer` on that is the fusion layer's
    self-attention and feed-forward (its cross-attention is not in BERT). BERT's pooler is dropped.
    """
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith("bert.pooler.") or key.endswith((".position_ids", ".token_type_ids")):
            continue
        if key.startswith("bert."):
            mapped["text_model." + key[len("bert."):]] = value
        elif key.startswith("cls.predictions."):
            mapped["mlm_head." + key[len("cls."):]] = value
        else:
            raise ValueError(f"BERT checkpoint key COSMO cannot place: {key}")
    return mapped


def _config_from_checkpoints(bert_config, vit_config, config: CosmoConfig | None) -> CosmoConfig:
    text_fields = {k: v for k, v in bert_config.to_dict().items() if k not in ("model_type", "architectures")}
    vision_fields = {k: v for k, v in vit_config.to_dict().items() if k not in ("model_type", "architectures")}
    if config is None:
        # COSMO's image encoder: 256 px, timm's LayerNorm eps (transformers' DeiT configs say 1e-12).
        vision_fields.update(image_size=256, layer_norm_eps=1e-6)
        text_fields.setdefault("fusion_layer", 6)
        return CosmoConfig(text_config=text_fields, vision_config=vision_fields)
    pairs = (("text", text_fields, config.text_config), ("vision", vision_fields, config.vision_config))
    for name, theirs, ours in pairs:
        for field in ("hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size", "patch_size"):
            if field in theirs and getattr(ours, field, theirs[field]) != theirs[field]:
                raise ValueError(
                    f"the {name} checkpoint has {field}={theirs[field]}, the config {getattr(ours, field)}"
                )
    return config


def load_text_vision_pretrained(cls, text_path: str, vision_path: str, config: CosmoConfig | None = None, **kwargs):
    """Build `cls` (a COSMO model class) from a BERT and a ViT / DeiT checkpoint; see
    `CosmoModel.from_text_vision_pretrained`."""
    bert = BertForMaskedLM.from_pretrained(text_path, **kwargs)
    vit = ViTModel.from_pretrained(vision_path, add_pooling_layer=False, **kwargs)
    config = _config_from_checkpoints(bert.config, vit.config, config)
    model = cls(config)
    grid = config.vision_config.image_size // config.vision_config.patch_size
    state = {f"vision_model.{k}": v for k, v in vision_state_dict_from_vit(vit.state_dict(), grid).items()}
    state.update(text_state_dict_from_bert(bert.state_dict()))
    own = model.state_dict()
    state = {k: v for k, v in state.items() if k in own}  # e.g. the MLM head for a model without one
    missing, unexpected = model.load_state_dict(state, strict=False)
    fresh = ("vision_proj.", "text_proj.", "itm_head.", "temp", "mlm_head.predictions.decoder.")
    not_loaded = [k for k in missing if ".crossattention." not in k and not k.startswith(fresh)]
    if unexpected or not_loaded:
        raise ValueError(f"warm start incomplete: not loaded {not_loaded[:8]}, unexpected {unexpected[:8]}")
    model.tie_weights()
    logger.info("COSMO warm start: %d tensors loaded; initialised fresh: the cross-attention of %d fusion layers, "
                "%s", len(state), config.text_config.num_hidden_layers - config.text_config.fusion_layer,
                sorted({k.split(".")[0] for k in missing if ".crossattention." not in k}))
    return model.train()


__all__ = ["load_text_vision_pretrained", "text_state_dict_from_bert", "vision_state_dict_from_vit"]

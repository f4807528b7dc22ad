"""COSMO's two encoders as transformers models: the ViT image encoder and the BERT text + fusion encoder.

ALBEF (Li et al., arXiv 2107.07651, §3.1), the architecture COSMO (arXiv 2312.06112, §implementation details) trains: a
ViT-B/16 whose output states (class token first) feed a BERT-base split in two, layers `0 .. fusion_layer-1` encoding
the text alone (their class-token state gives the ITC text embedding) and layers `fusion_layer ..` fusing text and image
through cross-attention (their class-token state feeds the ITM head; MLM reads every position).

`CosmoTextModel` exposes the two halves separately (`encode_text`, `fuse`) because ITC, ITM and MLM reuse them:
one text pass serves ITC and every ITM row of that text, and the cross-attention keys/values of an image
(`precompute_cross_attention`) serve all its ITM and MLM rows.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer, BertLMPredictionHead

from .configuration_cosmo import CosmoConfig, CosmoTextConfig, CosmoVisionConfig
from .modeling_cosmo_layers import (
    CosmoCrossAttentionCache,
    CosmoFusionLayer,
    CosmoPatchEmbed,
    CosmoVisionLayer,
    additive_attention_mask,
)


class CosmoPreTrainedModel(PreTrainedModel):
    """Base class of the COSMO models: weight initialisation and capability flags."""

    config_class = CosmoConfig
    config: CosmoConfig
    base_model_prefix = "cosmo"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = False
    _no_split_modules = ["CosmoVisionLayer", "BertLayer", "CosmoFusionLayer", "BertEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # ALBEF's initialisation: timm's truncated normal for the ViT, BERT's normal for the text encoder and heads,
        # both with std 0.02. Warm starts (DeiT, BERT) and conversions overwrite all of it but the cross-attention.
        std = self.config.initializer_range
        if isinstance(module, CosmoVisionModel):
            init.trunc_normal_(module.cls_token, std=std)
            init.trunc_normal_(module.pos_embed, std=std)
        elif isinstance(module, (nn.Linear, nn.Conv2d)):
            if isinstance(self, CosmoVisionModel):
                init.trunc_normal_(module.weight, std=std)
            else:
                init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)
        elif isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        if module is self and isinstance(getattr(self, "temp", None), nn.Parameter):
            init.constant_(self.temp, self.config.temperature_init)


class CosmoVisionModel(CosmoPreTrainedModel):
    r"""COSMO's image encoder: ALBEF's ViT (timm names), returning every token's state after the final LayerNorm.

    `last_hidden_state` `(B, 1 + N, D)` holds the class token first, then the N patches; `pooler_output` is the class
    token's state (the input of `vision_proj`).
    """

    config_class = CosmoVisionConfig
    config: CosmoVisionConfig
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["CosmoVisionLayer"]

    def __init__(self, config: CosmoVisionConfig):
        super().__init__(config)
        image_size, patch_size = config.image_size, config.patch_size
        if not isinstance(image_size, int) or not isinstance(patch_size, int):
            raise ValueError("COSMO's image encoder takes square images and patches: int image_size and patch_size")
        self.grid_size = image_size // patch_size
        self.patch_embed = CosmoPatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size**2 + 1, config.hidden_size))
        self.blocks = nn.ModuleList([CosmoVisionLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.patch_embed

    def _position_embeddings(self, height: int, width: int) -> torch.Tensor:
        """`(1, 1 + h·w, D)` position embeddings, bicubically resized from the trained grid (ALBEF's rule)."""
        grid_h, grid_w = height // self.config.patch_size, width // self.config.patch_size
        if (grid_h, grid_w) == (self.grid_size, self.grid_size):
            return self.pos_embed
        patches = resize_patch_position_embeddings(self.pos_embed[:, 1:], grid_h, grid_w)  # (1, h·w, D)
        return torch.cat([self.pos_embed[:, :1], patches], dim=1)

    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> BaseModelOutputWithPooling:
        r"""Encode images.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(B, 3, image_size, image_size)`): normalised with CLIP's mean
                and standard deviation (see `processing_cosmo.cosmo_image_processor`).
            interpolate_pos_encoding (`bool`): accept another resolution, resizing the position embeddings.

        Returns:
            `BaseModelOutputWithPooling` with `last_hidden_state` `(B, 1 + N, D)` and `pooler_output` `(B, D)`.
        """
        height, width = pixel_values.shape[-2:]
        if not interpolate_pos_encoding and (height, width) != (self.config.image_size,) * 2:
            raise ValueError(
                f"Input image size ({height}*{width}) doesn't match the model ({self.config.image_size}); pass "
                "interpolate_pos_encoding=True to resize the position embeddings."
            )
        dtype = self.patch_embed.proj.weight.dtype
        patches = self.patch_embed(pixel_values.to(dtype))  # (B, N, D)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)  # (B, 1, D)
        hidden_states = torch.cat([cls, patches], dim=1) + self._position_embeddings(height, width)  # (B, 1 + N, D)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPooling(last_hidden_state=hidden_states, pooler_output=hidden_states[:, 0])


def resize_patch_position_embeddings(patch_pos_embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bicubically resize square-grid patch position embeddings `(1, g², D)` -> `(1, height·width, D)`.

    ALBEF's `interpolate_pos_embed` (arXiv 2107.07651, which fine-tunes DeiT's 224 px grid of 14² at 256 px, 16²):
    bicubic, `align_corners=False`, in float32.
    """
    num, dim = patch_pos_embed.shape[1], patch_pos_embed.shape[2]
    grid = int(round(num**0.5))
    if grid * grid != num:
        raise ValueError(f"{num} patch position embeddings do not form a square grid")
    image = patch_pos_embed.reshape(1, grid, grid, dim).permute(0, 3, 1, 2).float()  # (1, D, g, g)
    image = nn.functional.interpolate(image, size=(height, width), mode="bicubic", align_corners=False)
    return image.permute(0, 2, 3, 1).reshape(1, height * width, dim).to(patch_pos_embed.dtype)  # (1, h·w, D)


class CosmoTextEncoder(nn.Module):
    """BERT's layer stack under BERT's name (`encoder.layer.{i}`): text layers, then fusion layers."""

    def __init__(self, config: CosmoTextConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            [BertLayer(config, layer_idx=i) if i < config.fusion_layer else CosmoFusionLayer(config, layer_idx=i)
             for i in range(config.num_hidden_layers)]
        )


class CosmoTextModel(CosmoPreTrainedModel):
    r"""COSMO's text and fusion encoder: BERT whose layers from `fusion_layer` on cross-attend to the image.

    Parameter names are BertModel's without the pooler (`embeddings.*`, `encoder.layer.{i}.*`; the fusion layers add
    `crossattention.*`), so a BERT checkpoint fills everything except the cross-attention.
    """

    config_class = CosmoTextConfig
    config: CosmoTextConfig
    main_input_name = "input_ids"
    input_modalities = ("text",)
    _no_split_modules = ["BertEmbeddings", "BertLayer", "CosmoFusionLayer"]

    def __init__(self, config: CosmoTextConfig):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = CosmoTextEncoder(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    @property
    def text_layers(self) -> nn.ModuleList:
        return self.encoder.layer[: self.config.fusion_layer]

    @property
    def fusion_layers(self) -> nn.ModuleList:
        return self.encoder.layer[self.config.fusion_layer :]

    def encode_text(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Run the embeddings and the unimodal text layers.

        Args:
            input_ids: `(B, L)` BERT WordPiece ids, `[CLS]` first.
            attention_mask: `(B, L)` 1 for tokens, 0 for padding.
            token_type_ids, position_ids: `(B, L)`, optional, as in BERT.

        Returns:
            `(B, L, D)` text states; `[:, 0]` is the input of `text_proj`.
        """
        hidden_states = self.embeddings(input_ids=input_ids, token_type_ids=token_type_ids, position_ids=position_ids)
        mask = additive_attention_mask(attention_mask, hidden_states.dtype)  # (B, 1, 1, L)
        for layer in self.text_layers:
            hidden_states = layer(hidden_states, mask)
        return hidden_states

    def precompute_cross_attention(self, image_states: torch.Tensor) -> CosmoCrossAttentionCache:
        """Cross-attention keys and values of every fusion layer for `(B_img, N, D_img)` image states."""
        return CosmoCrossAttentionCache(
            tuple(layer.cross_attention_key_value(image_states) for layer in self.fusion_layers)
        )

    def fuse(
        self,
        text_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_states: torch.Tensor | None = None,
        image_attention_mask: torch.Tensor | None = None,
        cross_attention_cache: CosmoCrossAttentionCache | None = None,
    ) -> torch.Tensor:
        """Run the fusion layers: text states attend to themselves (bidirectionally) and to the image.

        Give the image either as `image_states` (keys and values computed in every layer, transformers' BERT
        cross-attention) or as a `cross_attention_cache` (precomputed; `B` images, one per row, or one image for all
        rows).

        Args:
            text_states: `(B, L, D)` output of `encode_text`.
            attention_mask: `(B, L)` text padding mask.
            image_states: `(B, N, D_img)` image encoder states (class token included, as in ALBEF).
            image_attention_mask: `(B, N)` image token mask, optional (plain path only; ALBEF attends to all).
            cross_attention_cache: the images' precomputed keys and values.

        Returns:
            `(B, L, D)` fused states; `[:, 0]` feeds the ITM head.
        """
        if (image_states is None) == (cross_attention_cache is None):
            raise ValueError("fuse needs exactly one of image_states and cross_attention_cache")
        if cross_attention_cache is not None and image_attention_mask is not None:
            raise ValueError("the cached path attends to every image token; image_attention_mask is not supported")
        mask = additive_attention_mask(attention_mask, text_states.dtype)  # (B, 1, 1, L)
        image_mask = additive_attention_mask(image_attention_mask, text_states.dtype)  # (B, 1, 1, N)
        hidden_states = text_states
        for i, layer in enumerate(self.fusion_layers):
            if cross_attention_cache is not None:
                key, value = cross_attention_cache.key_values[i]
                hidden_states = layer(hidden_states, mask, None, None, key, value)
            else:
                hidden_states = layer(hidden_states, mask, image_states, image_mask)
        return hidden_states

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        r"""Encode text alone (no `encoder_hidden_states`: the text layers) or with an image (all layers).

        Returns:
            `BaseModelOutputWithPooling` with `last_hidden_state` `(B, L, D)` and `pooler_output` `(B, D)`, the
            `[CLS]` state (BERT's tanh pooler is not part of ALBEF).
        """
        states = self.encode_text(input_ids, attention_mask, token_type_ids, position_ids)
        if encoder_hidden_states is not None:
            states = self.fuse(states, attention_mask, encoder_hidden_states, encoder_attention_mask)
        return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=states[:, 0])


__all__ = ["CosmoPreTrainedModel", "CosmoTextModel", "CosmoVisionModel", "resize_patch_position_embeddings"]

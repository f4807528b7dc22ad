"""Building blocks of COSMO's encoders: the ViT blocks of the image encoder and the fusion layer of the text encoder.

The image encoder is ALBEF's ViT (Li et al., arXiv 2107.07651, §3.1; a timm/DeiT ViT-B/16), written here with
timm's parameter names (`patch_embed.proj`, `blocks.{i}.norm1`, `attn.qkv`, `attn.proj`, `norm2`, `mlp.fc1`,
`mlp.fc2`, `norm`), so the `visual_encoder.*` weights of ALBEF, GRIT-VLP and COSMO/MAFA checkpoints load unchanged.

The fusion layer is ALBEF's BERT layer with cross-attention, built from transformers' BERT modules
(`BertAttention`, `BertIntermediate`, `BertOutput`) with BERT's parameter names. transformers' own `BertLayer`
accepts cross-attention only as a decoder (`is_decoder=True`), whose self-attention is causal; ALBEF's fusion encoder
is bidirectional, so the layer composes the modules itself: a non-causal self-attention, a cross-attention to the
image states, the feed-forward block.

A pair's cross-attention keys and values depend on its image alone. `CosmoFusionLayer.cross_attention_key_value`
computes them once per image and `CosmoFusionLayer.forward` accepts them precomputed, for any number of texts. All
attention goes through transformers' attention interface (`config._attn_implementation`: `"eager"` or `"sdpa"`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import BertAttention, BertIntermediate, BertOutput


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax attention written out, with the contract of transformers' attention interface.

    Args:
        query: `(B, H, L_q, d)`; key, value: `(B, H, L_k, d)`.
        attention_mask: additive, broadcastable to `(B, H, L_q, L_k)`, or `None`.

    Returns:
        `(output (B, L_q, H, d), weights (B, H, L_q, L_k))`.
    """
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling  # (B, H, L_q, L_k)
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()  # (B, L_q, H, d)
    return output, weights


def attention_interface(config) -> Callable:
    """The attention function `config._attn_implementation` names (`eager_attention_forward` for `"eager"`)."""
    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


def additive_attention_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """`(B, L)` 1/0 padding mask -> `(B, 1, 1, L)` additive mask (0 where attended, the dtype's minimum elsewhere).

    Bidirectional: every query attends to every unpadded key. Eager and SDPA attention both take it.
    """
    if attention_mask is None:
        return None
    mask = attention_mask[:, None, None, :].to(dtype)  # (B, 1, 1, L)
    return (1.0 - mask) * torch.finfo(dtype).min


# ----------------------------------------------------------------------------------------------------------------------
# Image encoder blocks (timm names)
# ----------------------------------------------------------------------------------------------------------------------


class CosmoPatchEmbed(nn.Module):
    """Non-overlapping patches of side `patch_size`, linearly embedded by a strided convolution."""

    def __init__(self, config):
        super().__init__()
        self.proj = nn.Conv2d(config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, H/p · W/p, D)`."""
        return self.proj(pixel_values).flatten(2).transpose(1, 2)


class CosmoVisionAttention(nn.Module):
    """Multi-head self-attention with a fused `qkv` projection (timm's layout: rows are q, then k, then v)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = hidden_states.shape
        qkv = self.qkv(hidden_states).view(batch, length, 3, self.num_heads, self.head_dim)  # (B, N, 3, H, d)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, N, d)
        dropout = self.config.attention_probs_dropout_prob if self.training else 0.0
        output, _ = attention_interface(self.config)(
            self, query, key, value, None, dropout=dropout, scaling=self.scaling
        )  # (B, N, H, d)
        return self.proj(output.reshape(batch, length, -1))


class CosmoVisionMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class CosmoVisionLayer(GradientCheckpointingLayer):
    """Pre-LayerNorm transformer block: `x + attn(norm1(x))`, then `x + mlp(norm2(x))`."""

    def __init__(self, config):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = CosmoVisionAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = CosmoVisionMLP(config)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.dropout(self.attn(self.norm1(hidden_states)))
        return hidden_states + self.dropout(self.mlp(self.norm2(hidden_states)))


# ----------------------------------------------------------------------------------------------------------------------
# Fusion layer (BERT modules, BERT names)
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class CosmoCrossAttentionCache:
    r"""The cross-attention keys and values of every fusion layer for a set of images.

    Built by `CosmoModel.precompute_cross_attention(image_states)`; `fuse(..., cross_attention_cache=cache)` uses it
    instead of recomputing them from the image states for every text.

    Args:
        key_values (`tuple[tuple[torch.FloatTensor, torch.FloatTensor], ...]`): for every fusion layer, `(key, value)`
            each of shape `(num_images, num_attention_heads, num_image_tokens, head_dim)`.
    """

    key_values: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def num_images(self) -> int:
        """Number of images the cache holds."""
        return self.key_values[0][0].shape[0] if self.key_values else 0

    def select(self, index: torch.Tensor | slice) -> CosmoCrossAttentionCache:
        """The cache of the images `index` picks (a LongTensor of image rows, repeats allowed, or a slice)."""
        if isinstance(index, slice):
            return CosmoCrossAttentionCache(tuple((k[index], v[index]) for k, v in self.key_values))
        return CosmoCrossAttentionCache(
            tuple((k.index_select(0, index.to(k.device)), v.index_select(0, index.to(v.device)))
                  for k, v in self.key_values)
        )


class CosmoFusionLayer(GradientCheckpointingLayer):
    """ALBEF's fusion layer: bidirectional self-attention, cross-attention to the image, feed-forward (post-LN).

    Parameter names are BERT's (`attention.*`, `crossattention.*`, `intermediate.*`, `output.*`), so BERT layers
    6-11 and ALBEF's `text_encoder.bert.encoder.layer.{6..11}` load unchanged. The cross-attention keys and values
    read `encoder_width`-wide image states (ALBEF's `config_bert.json` field).

    Args:
        config: a `CosmoTextConfig`.
        layer_idx: index of the layer in the text encoder.
    """

    def __init__(self, config, layer_idx: int):
        super().__init__()
        self.attention = BertAttention(config, is_causal=False, layer_idx=layer_idx)
        self.crossattention = BertAttention(config, is_causal=False, layer_idx=layer_idx, is_cross_attention=True)
        encoder_width = config.encoder_width or config.hidden_size
        if encoder_width != config.hidden_size:
            cross = self.crossattention.self
            cross.key = nn.Linear(encoder_width, cross.all_head_size)
            cross.value = nn.Linear(encoder_width, cross.all_head_size)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def cross_attention_key_value(self, image_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of this layer's cross-attention: `(B_img, N, D_img)` -> 2 x `(B_img, H, N, d)`."""
        cross = self.crossattention.self
        shape = (*image_states.shape[:-1], -1, cross.attention_head_size)  # (B_img, N, H, d)
        key = cross.key(image_states).view(shape).transpose(1, 2)
        value = cross.value(image_states).view(shape).transpose(1, 2)
        return key, value

    def _cross_attend_cached(self, hidden_states: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Cross-attention from `(B, L, D)` text states to precomputed keys/values of B images, or of one image.

        One image for all B rows: the rows are folded into the query length, `(1, H, B·L, d)` against `(1, H, N, d)`,
        so the image's keys and values are neither copied nor recomputed (every query row attends independently).
        """
        cross = self.crossattention.self
        batch, length, _ = hidden_states.shape
        query = cross.query(hidden_states).view(batch, length, -1, cross.attention_head_size).transpose(1, 2)
        fold = key.shape[0] == 1 and batch > 1
        if fold:
            heads, head_dim = query.shape[1], query.shape[3]
            query = query.transpose(0, 1).reshape(1, heads, batch * length, head_dim)  # (1, H, B·L, d)
        elif key.shape[0] != batch:
            raise ValueError(f"{batch} text rows against cached keys of {key.shape[0]} images; select() the images")
        output, _ = attention_interface(cross.config)(
            cross, query, key, value, None, dropout=cross.dropout.p if self.training else 0.0, scaling=cross.scaling
        )  # (b, q, H, d)
        output = output.reshape(batch, length, -1)  # (B, L, H·d); folded rows are (b·L + l)
        return self.crossattention.output(output, hidden_states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        cross_key: torch.Tensor | None = None,
        cross_value: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse text states with image states.

        Args:
            hidden_states: `(B, L, D)` text states.
            attention_mask: `(B, 1, 1, L)` additive mask of the text (see `additive_attention_mask`).
            encoder_hidden_states: `(B, N, D_img)` image states (the plain path), or
            cross_key, cross_value: `(B or 1, H, N, d)` precomputed keys and values (the cached path).
            encoder_attention_mask: `(B, 1, 1, N)` additive mask of the image tokens (plain path only).

        Returns:
            `(B, L, D)` fused states.
        """
        hidden_states, _ = self.attention(hidden_states, attention_mask)
        if cross_key is not None:
            hidden_states = self._cross_attend_cached(hidden_states, cross_key, cross_value)
        else:
            hidden_states, _ = self.crossattention(
                hidden_states, None, encoder_hidden_states, encoder_attention_mask
            )
        return self.output(self.intermediate(hidden_states), hidden_states)


__all__ = [
    "CosmoCrossAttentionCache",
    "CosmoFusionLayer",
    "CosmoPatchEmbed",
    "CosmoVisionAttention",
    "CosmoVisionLayer",
    "CosmoVisionMLP",
    "additive_attention_mask",
    "attention_interface",
    "eager_attention_forward",
]

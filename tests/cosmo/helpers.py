"""Tiny COSMO configurations, a BERT WordPiece tokenizer built offline and the torchmultimodal ALBEF peer.

Shared by the tests of `tests/cosmo`; no downloads. Sizes: width 32, 4 heads, 2 text + 2 fusion layers, a 2-layer
ViT on 32 px images in 8 px patches (16 patches + the class token).
"""

from __future__ import annotations

import torch
from PIL import Image
from transformers import BertTokenizer

import modeling_cosmo  # noqa: F401  (registers COSMO with the Auto classes)
from modeling_cosmo import CosmoConfig, cosmo_image_processor

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["a", "an", "the", "photo", "of", "cat", "dog", "bird", "car", "red", "blue", "green", "on", "in", "with",
         "sitting", "running", "grass", "road", "sky", "man", "woman", "small", "big", "##s", "##ing", "and", "is"]
VOCAB = SPECIAL + WORDS
LAYERS = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
IMAGE_SIZE = 32


def tiny_tokenizer() -> BertTokenizer:
    """A BERT WordPiece tokenizer (tokenizers backend) over a 33-token vocabulary, built in memory."""
    return BertTokenizer(vocab={token: i for i, token in enumerate(VOCAB)})


def tiny_config(text: dict | None = None, vision: dict | None = None, **overrides) -> CosmoConfig:
    """A COSMO configuration small enough for CPU tests; no dropout, so train and eval modes compute the same."""
    text_config = {**LAYERS, "num_hidden_layers": 4, "fusion_layer": 2, "vocab_size": len(VOCAB),
                   "max_position_embeddings": 40, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    vision_config = {**LAYERS, "num_hidden_layers": 2, "image_size": IMAGE_SIZE, "patch_size": 8}
    return CosmoConfig(text_config={**text_config, **(text or {})}, vision_config={**vision_config, **(vision or {})},
                       embed_dim=16, **overrides)


def random_batch(batch_size: int = 4, seq_len: int = 7, seed: int = 0) -> dict[str, torch.Tensor]:
    """`[CLS] words [SEP] [PAD]...` rows of different lengths, and random images."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(batch_size, seq_len, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, seq_len, dtype=torch.long)
    for row in range(batch_size):
        length = 3 + row % (seq_len - 2)
        input_ids[row, 0] = VOCAB.index("[CLS]")
        input_ids[row, 1 : length - 1] = torch.randint(len(SPECIAL), len(VOCAB), (length - 2,), generator=generator)
        input_ids[row, length - 1] = VOCAB.index("[SEP]")
        attention_mask[row, :length] = 1
    pixel_values = torch.randn(batch_size, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def random_mlm(input_ids: torch.Tensor, attention_mask: torch.Tensor, seed: int = 1) -> dict[str, torch.Tensor]:
    """Masked copies: every real non-[CLS] token masked with probability 1/2 (labels -100 elsewhere)."""
    generator = torch.Generator().manual_seed(seed)
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.5) & attention_mask.bool()
    chosen[:, 0] = False
    chosen[:, 1] = True  # at least one masked token per row
    mlm_input_ids = input_ids.masked_fill(chosen, VOCAB.index("[MASK]"))
    return {"mlm_input_ids": mlm_input_ids, "mlm_labels": input_ids.masked_fill(~chosen, -100)}


def tiny_image_processor():
    return cosmo_image_processor(IMAGE_SIZE)


def random_images(count: int, seed: int = 0, size: int = 40) -> list[Image.Image]:
    generator = torch.Generator().manual_seed(seed)
    return [Image.fromarray(torch.randint(0, 256, (size, size, 3), generator=generator, dtype=torch.uint8).numpy())
            for _ in range(count)]


# ----------------------------------------------------------------------------------------------------------------------
# The peer: torchmultimodal's ALBEF modules (facebookresearch/multimodal, BSD), loaded with our weights
# ----------------------------------------------------------------------------------------------------------------------


class TorchMultimodalALBEF(torch.nn.Module):
    """ALBEF built from torchmultimodal's modules: `ALBEFVisionEncoder` (torchvision ViT), `bert_text_encoder`,
    `ALBEFMultimodalEncoder`, linear projections and ITM head, FLAVA's `MaskedPredictionHead` for MLM."""

    def __init__(self, config: CosmoConfig):
        super().__init__()
        from torchmultimodal.models.albef.image_encoder import ALBEFVisionEncoder
        from torchmultimodal.models.albef.multimodal_encoder import ALBEFMultimodalEncoder
        from torchmultimodal.modules.encoders.bert_text_encoder import bert_text_encoder
        from torchmultimodal.modules.losses.flava import MaskedPredictionHead

        text, vision = config.text_config, config.vision_config
        self.vision_encoder = ALBEFVisionEncoder(
            image_size=vision.image_size, patch_size=vision.patch_size, num_hidden_layers=vision.num_hidden_layers,
            num_attention_heads=vision.num_attention_heads, hidden_size=vision.hidden_size,
            mlp_dim=vision.intermediate_size, layer_norm_eps=vision.layer_norm_eps)
        self.text_encoder = bert_text_encoder(
            hidden_size=text.hidden_size, num_hidden_layers=text.fusion_layer,
            num_attention_heads=text.num_attention_heads, intermediate_size=text.intermediate_size, dropout=0.0,
            layer_norm_eps=text.layer_norm_eps, vocab_size=text.vocab_size,
            max_position_embeddings=text.max_position_embeddings, type_vocab_size=text.type_vocab_size)
        self.multimodal_encoder = ALBEFMultimodalEncoder(
            hidden_size=text.hidden_size, num_hidden_layers=text.num_hidden_layers - text.fusion_layer,
            num_attention_heads=text.num_attention_heads, intermediate_size=text.intermediate_size,
            layer_norm_eps=text.layer_norm_eps)
        self.vision_proj = torch.nn.Linear(vision.hidden_size, config.embed_dim)
        self.text_proj = torch.nn.Linear(text.hidden_size, config.embed_dim)
        self.itm_head = torch.nn.Linear(text.hidden_size, 2)
        self.mlm_head = MaskedPredictionHead(hidden_size=text.hidden_size, vocab_size=text.vocab_size,
                                             layer_norm_eps=text.layer_norm_eps)

    def image_states(self, pixel_values):
        return self.vision_encoder(pixel_values)

    def text_states(self, input_ids, attention_mask):
        return self.text_encoder(input_ids, attention_mask).last_hidden_state

    def fused(self, text_states, attention_mask, image_states):
        return self.multimodal_encoder(text_states, attention_mask, image_states)


def peer_state_dict(ours: dict[str, torch.Tensor], config: CosmoConfig) -> dict[str, torch.Tensor]:
    """Our weights under torchmultimodal's names (written from the two modules' documented layouts)."""
    fusion, layers = config.text_config.fusion_layer, config.text_config.num_hidden_layers
    peer = {
        "vision_encoder.encoder.class_token": ours["vision_model.cls_token"],
        "vision_encoder.encoder.conv_proj.weight": ours["vision_model.patch_embed.proj.weight"],
        "vision_encoder.encoder.conv_proj.bias": ours["vision_model.patch_embed.proj.bias"],
        "vision_encoder.encoder.encoder.pos_embedding": ours["vision_model.pos_embed"],
        "vision_encoder.encoder.encoder.ln.weight": ours["vision_model.norm.weight"],
        "vision_encoder.encoder.encoder.ln.bias": ours["vision_model.norm.bias"],
    }
    for i in range(config.vision_config.num_hidden_layers):
        src, dst = f"vision_model.blocks.{i}.", f"vision_encoder.encoder.encoder.layers.encoder_layer_{i}."
        for a, b in (("norm1", "ln_1"), ("norm2", "ln_2"), ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3"),
                     ("attn.proj", "self_attention.out_proj")):
            for kind in ("weight", "bias"):
                peer[f"{dst}{b}.{kind}"] = ours[f"{src}{a}.{kind}"]
        peer[f"{dst}self_attention.in_proj_weight"] = ours[f"{src}attn.qkv.weight"]
        peer[f"{dst}self_attention.in_proj_bias"] = ours[f"{src}attn.qkv.bias"]
    for a, b in (("word_embeddings.weight", "word_embeddings.weight"),
                 ("position_embeddings.weight", "position_embeddings.weight"),
                 ("token_type_embeddings.weight", "token_type_embeddings.weight"),
                 ("LayerNorm.weight", "layer_norm.weight"), ("LayerNorm.bias", "layer_norm.bias")):
        peer[f"text_encoder.embeddings.{b}"] = ours[f"text_model.embeddings.{a}"]

    def bert_attention(src: str, dst: str, norm: str) -> None:
        for part in ("query", "key", "value"):
            for kind in ("weight", "bias"):
                peer[f"{dst}.{part}.{kind}"] = ours[f"{src}.self.{part}.{kind}"]
        for kind in ("weight", "bias"):
            peer[f"{dst}.output.{kind}"] = ours[f"{src}.output.dense.{kind}"]
            peer[f"{norm}.{kind}"] = ours[f"{src}.output.LayerNorm.{kind}"]

    def feed_forward(src: str, dst: str) -> None:
        for kind in ("weight", "bias"):
            peer[f"{dst}feedforward.model.0.{kind}"] = ours[f"{src}intermediate.dense.{kind}"]
            peer[f"{dst}feedforward.model.2.{kind}"] = ours[f"{src}output.dense.{kind}"]
            peer[f"{dst}feedforward_layernorm.{kind}"] = ours[f"{src}output.LayerNorm.{kind}"]

    for i in range(layers):
        src = f"text_model.encoder.layer.{i}."
        dst = f"text_encoder.encoder.layer.{i}." if i < fusion else f"multimodal_encoder.layer.{i - fusion}."
        bert_attention(src + "attention", dst + "attention", dst + "attention_layernorm")
        if i >= fusion:
            bert_attention(src + "crossattention", dst + "cross_attention", dst + "cross_attention_layernorm")
        feed_forward(src, dst)
    for name in ("vision_proj", "text_proj", "itm_head"):
        for kind in ("weight", "bias"):
            peer[f"{name}.{kind}"] = ours[f"{name}.{kind}"]
    head = "mlm_head.predictions."
    peer.update({
        "mlm_head.bias": ours[head + "bias"],
        "mlm_head.dense.weight": ours[head + "transform.dense.weight"],
        "mlm_head.dense.bias": ours[head + "transform.dense.bias"],
        "mlm_head.layer_norm.weight": ours[head + "transform.LayerNorm.weight"],
        "mlm_head.layer_norm.bias": ours[head + "transform.LayerNorm.bias"],
        "mlm_head.decoder.weight": ours[head + "decoder.weight"],
        "mlm_head.decoder.bias": ours[head + "bias"],
    })
    return peer

"""Configuration of COSMO models.

COSMO (Byun, Kim and Moon, "Converting and Smoothing False Negatives for Vision-Language Pre-training", CVPR 2024,
https://arxiv.org/abs/2312.06112; renamed MAFA in its v2) trains ALBEF's architecture (Li et al., "Align before
Fuse", https://arxiv.org/abs/2107.07651, §3.1) without the momentum encoder and the queues, as GRIT-VLP does (Byun et
al., https://arxiv.org/abs/2208.04060): a ViT image encoder, a BERT whose first `fusion_layer` layers encode the text
alone and whose last layers fuse it with the image through cross-attention, two projections into a shared space for
the image-text contrastive loss (ITC), an image-text matching head (ITM) and BERT's masked-language-modelling head.

The sub-configurations reuse transformers' field names: a dict written for `ViTConfig` configures the image encoder
and one written for `BertConfig` the text and fusion encoder, which adds ALBEF's two fields `fusion_layer` and
`encoder_width`.
"""

from __future__ import annotations

from transformers import BertConfig, PreTrainedConfig, ViTConfig


class CosmoVisionConfig(ViTConfig):
    r"""Image encoder of COSMO: a pre-LayerNorm ViT with a class token (ALBEF's ViT-B/16, initialised from DeiT-B).

    Accepts every field of [`~transformers.ViTConfig`]; the defaults are ALBEF's (arXiv 2107.07651, §3.1; COSMO
    arXiv 2312.06112, §implementation details): ViT-B/16 at 256 px, LayerNorm eps 1e-6 (timm's, not ViTConfig's
    1e-12), no dropout.
    """

    model_type = "cosmo_vision_model"
    base_config_key = "vision_config"

    image_size: int | list[int] | tuple[int, int] = 256
    patch_size: int | list[int] | tuple[int, int] = 16
    layer_norm_eps: float = 1e-6


class CosmoTextConfig(BertConfig):
    r"""Text and fusion encoder of COSMO: BERT, whose layers from `fusion_layer` on cross-attend to the image.

    Accepts every field of [`~transformers.BertConfig`] (defaults: BERT-base, uncased vocabulary of 30522) and two
    fields of ALBEF's `config_bert.json`:

    Args:
        fusion_layer (`int`, defaults to 6): layers `0 .. fusion_layer-1` are the unimodal text encoder, layers
            `fusion_layer .. num_hidden_layers-1` the fusion encoder (self-attention, cross-attention to the image
            patch states, feed-forward). ALBEF and COSMO split BERT-base 6 + 6.
        encoder_width (`int`, *optional*): width of the image states the cross-attention keys and values are computed
            from. [`CosmoConfig`] sets it to the image encoder's `hidden_size`.

    The fusion encoder is bidirectional (an encoder, not a decoder): `is_decoder` and `add_cross_attention` keep
    BERT's meaning and must stay `False`; the cross-attention of the fusion layers is built in by `fusion_layer`.
    """

    model_type = "cosmo_text_model"
    base_config_key = "text_config"

    fusion_layer: int = 6
    encoder_width: int | None = None

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not 0 <= self.fusion_layer <= self.num_hidden_layers:
            raise ValueError(
                f"fusion_layer must be in [0, num_hidden_layers={self.num_hidden_layers}], got {self.fusion_layer}"
            )
        if self.is_decoder or self.add_cross_attention:
            raise ValueError(
                "COSMO's fusion encoder is bidirectional: is_decoder and add_cross_attention must be False (the "
                "fusion layers from `fusion_layer` on carry their own cross-attention)."
            )


HARD_NEGATIVE_MODES = ("argmax", "sample", "random")
ITC_LOSSES = ("itc", "hn_nce")


class CosmoConfig(PreTrainedConfig):
    r"""Configuration of the COSMO models ([`CosmoModel`], [`CosmoForImageTextRetrieval`], [`CosmoForPreTraining`]).

    Args:
        text_config (`dict` or `CosmoTextConfig`, *optional*): the text and fusion encoder, with BERT's field names.
        vision_config (`dict` or `CosmoVisionConfig`, *optional*): the image encoder, with ViT's field names.
        embed_dim (`int`, defaults to 256): size of the ITC embedding space (ALBEF's `embed_dim`).
        temperature_init (`float`, defaults to 0.07): initial value of the learnable ITC temperature `temp`
            (ALBEF arXiv 2107.07651 §3.2; COSMO §implementation details).
        temperature_min, temperature_max (`float`, defaults to 0.001 and 0.5): the range ALBEF, GRIT-VLP and COSMO clamp
            `temp` to before every step. Models declare it through `clamped_parameters()` for the trainer, and clamp
            the value they use in `forward` as well.
        mlm_probability (`float`, defaults to 0.5): probability that a text token is selected for masked language
            modelling (then 80% `[MASK]`, 10% random, 10% unchanged); COSMO and GRIT-VLP use 0.5, ALBEF 0.15. Read by
            `CosmoDataCollator`; the models only consume the masked ids.
        itc_smoothing (`float`, defaults to 0.5): ε of S-ITC (COSMO arXiv 2312.06112, §S-ITC), the targets are
            `(1 - ε) y + ε / B`. The official code switches it on from the second epoch; `forward(itc_smoothing=0.0)`
            is how a trainer runs the first one.
        itc_loss (`str`, defaults to `"itc"`): `"itc"` is the (smoothed, multi-positive) soft cross-entropy of ALBEF
            and COSMO; `"hn_nce"` replaces it by DiHT's HN-NCE (arXiv 2301.02280, §HN-NCE) with one positive per row.
        hn_nce_alpha, hn_nce_beta (`float`, defaults to 1.0 and 0.5): α and β of HN-NCE when `itc_loss="hn_nce"`.
        itc_detach_other_side (`bool`, defaults to `False`): compute each ITC direction with the anchor side carrying
            gradient and the other side a detached copy, as the official GRIT-VLP and MAFA code does (a remnant of
            ALBEF, whose other side was the gradient-free momentum encoder). The default differentiates the loss the
            papers write down through both sides.
        hard_negative_mode (`str`, defaults to `"argmax"`): how ITM negatives are chosen from the ITC similarities:
            `"argmax"`, the hardest in-batch candidate (GRIT-VLP arXiv 2208.04060, §hard-negative ITM; COSMO), or
            `"sample"`, drawn from their softmax (ALBEF §3.2), or `"random"`, uniform among the valid candidates
            (ours: plain ITM negatives, for training a discriminator whose distinctions are too fine for hard negatives
            from scratch).
        initializer_range (`float`, defaults to 0.02): standard deviation of the initialisation of the heads.

    Example:
        >>> from modeling_cosmo import CosmoConfig
        >>> config = CosmoConfig.from_preset("cosmo_vitb16_bert_base_256px")
        >>> config.text_config.fusion_layer, config.vision_config.image_size, config.embed_dim
        (6, 256, 256)
    """

    model_type = "cosmo"
    sub_configs_defaults = {"text_config": CosmoTextConfig, "vision_config": CosmoVisionConfig}

    text_config: dict | CosmoTextConfig | None = None
    vision_config: dict | CosmoVisionConfig | None = None
    embed_dim: int = 256
    temperature_init: float = 0.07
    temperature_min: float = 0.001
    temperature_max: float = 0.5
    mlm_probability: float = 0.5
    itc_smoothing: float = 0.5
    itc_loss: str = "itc"
    hn_nce_alpha: float = 1.0
    hn_nce_beta: float = 0.5
    itc_detach_other_side: bool = False
    hard_negative_mode: str = "argmax"
    initializer_range: float = 0.02
    tie_word_embeddings: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The cross-attention keys and values are computed from the image states (ALBEF's `encoder_width`).
        self.text_config.encoder_width = self.vision_config.hidden_size
        if not 0 < self.temperature_min <= self.temperature_init <= self.temperature_max:
            raise ValueError(
                "need 0 < temperature_min <= temperature_init <= temperature_max, got "
                f"{self.temperature_min}, {self.temperature_init}, {self.temperature_max}"
            )
        if not 0 <= self.itc_smoothing <= 1:
            raise ValueError(f"itc_smoothing is the ε of S-ITC and must be in [0, 1], got {self.itc_smoothing}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.hard_negative_mode not in HARD_NEGATIVE_MODES:
            raise ValueError(
                f"hard_negative_mode must be one of {HARD_NEGATIVE_MODES}, got {self.hard_negative_mode!r}"
            )
        if self.itc_loss not in ITC_LOSSES:
            raise ValueError(f"itc_loss must be one of {ITC_LOSSES}, got {self.itc_loss!r}")

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> CosmoConfig:
        """`PreTrainedConfig.from_dict`, refusing configurations of other architectures.

        Loading, say, a BERT or CLIP `config.json` as COSMO would silently give a randomly initialised model; warm
        starts from BERT and ViT folders go through `from_text_vision_pretrained` instead.
        """
        model_type = config_dict.get("model_type")
        if model_type not in (None, cls.model_type):
            raise ValueError(
                f"This checkpoint holds a {model_type!r} model, not COSMO. To start COSMO from BERT and ViT/DeiT "
                "checkpoints use `CosmoForPreTraining.from_text_vision_pretrained(text_path, vision_path)`; to "
                "convert an ALBEF / GRIT-VLP / MAFA `.pth` use `modeling_cosmo/convert_albef_original_to_hf.py`."
            )
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> CosmoConfig:
        """Build the configuration of a published architecture.

        Args:
            name: one of `COSMO_PRESETS`; `cosmo_vitb16_bert_base_256px` is the model of COSMO/MAFA, GRIT-VLP and
                ALBEF (ViT-B/16 at 256 px, BERT-base split 6 + 6, 256-d ITC space).
            **kwargs: fields of `CosmoConfig` that override the preset (e.g. `hard_negative_mode="sample"`).

        Returns:
            The configuration.
        """
        if name not in COSMO_PRESETS:
            raise ValueError(f"Unknown COSMO preset {name!r}; choose one of {sorted(COSMO_PRESETS)}")
        preset = COSMO_PRESETS[name]
        return cls(
            text_config=dict(preset["text_config"]),
            vision_config=dict(preset["vision_config"]),
            **{**preset["fields"], **kwargs},
        )


# The published architecture (ALBEF configs/Pretrain.yaml and config_bert.json, as used by GRIT-VLP and MAFA).
COSMO_PRESETS: dict[str, dict] = {
    "cosmo_vitb16_bert_base_256px": {
        "text_config": {"fusion_layer": 6},  # BertConfig's defaults are BERT-base uncased
        "vision_config": {"image_size": 256, "patch_size": 16},  # ViTConfig's defaults are ViT-B
        "fields": {"embed_dim": 256},
    },
}

__all__ = ["COSMO_PRESETS", "CosmoConfig", "CosmoTextConfig", "CosmoVisionConfig"]

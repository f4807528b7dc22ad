"""Configuration of DiHT models.

DiHT (Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280) uses OpenAI CLIP's architecture unchanged, with plain GELU instead of QuickGELU.
The sub-configurations therefore reuse transformers' CLIP field names, so a dict written for `CLIPTextConfig` or
`CLIPVisionConfig` configures DiHT's towers too.
"""

from __future__ import annotations

import math

from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig


class _TowerConfigMixin:
    """`from_dict` that refuses the configuration of another architecture (e.g. a BERT folder given to
    `DiHTVisionModel.from_pretrained`), which would otherwise load as a randomly initialised tower."""

    accepted_model_types: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        model_type = config_dict.get("model_type")
        if model_type not in (None, *cls.accepted_model_types):
            raise ValueError(f"This configuration is a {model_type!r} one, not a {cls.__name__}: it accepts "
                             f"{' and '.join(map(repr, cls.accepted_model_types))} (or a DiHT or CLIP dual encoder's "
                             "folder, whose tower configuration it reads).")
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs) -> tuple[dict, dict]:
        """`PreTrainedConfig.get_config_dict`; read from a dual encoder's folder, the tower takes the joint space
        size of the dual encoder, whose tower entries may lack it (CLIP's `CLIPConfig` does not copy it into them)."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        tower = config_dict.get(cls.base_config_key)
        if isinstance(tower, dict) and config_dict.get("projection_dim") is not None:
            tower = {**tower, "projection_dim": config_dict["projection_dim"]}
            config_dict = {**config_dict, cls.base_config_key: tower}
        return config_dict, kwargs


class DiHTTextConfig(_TowerConfigMixin, CLIPTextConfig):
    r"""Text tower of DiHT: a causal transformer over OpenAI CLIP BPE tokens, pooled at the end-of-text token.

    Accepts every field of [`~transformers.CLIPTextConfig`]; the defaults are those of the released DiHT models
    (12 layers, width 512, 8 heads, context 77, vocabulary 49408, plain GELU, padding with token 0 as OpenAI's
    tokenizer does). `eos_token_id` is the token whose first occurrence is pooled.
    """

    model_type = "diht_text_model"
    base_config_key = "text_config"
    accepted_model_types = ("diht_text_model", "clip_text_model")  # CLIP's text tower loads as a warm start

    hidden_act: str = "gelu"  # DiHT checkpoints use nn.GELU, not CLIP's QuickGELU
    pad_token_id: int | None = 0  # OpenAI's `clip.tokenize` pads with 0
    bos_token_id: int | None = 49406  # <|startoftext|>
    eos_token_id: int | list[int] | None = 49407  # <|endoftext|>


class DiHTVisionConfig(_TowerConfigMixin, CLIPVisionConfig):
    r"""Image tower of DiHT: a pre-LayerNorm ViT with a class token, `ln_pre`, and `ln_post` on the class token.

    Accepts every field of [`~transformers.CLIPVisionConfig`]; the defaults are ViT-B/16 at 224 px with plain GELU.
    """

    model_type = "diht_vision_model"
    base_config_key = "vision_config"
    accepted_model_types = ("diht_vision_model", "clip_vision_model")  # CLIP's image tower loads as a warm start

    patch_size: int | list[int] | tuple[int, int] | None = 16
    hidden_act: str = "gelu"


class DiHTConfig(PreTrainedConfig):
    r"""Configuration of a [`DiHTModel`]: two towers, a shared embedding space, the HN-NCE loss and concept heads.

    Args:
        text_config (`dict` or `DiHTTextConfig`, *optional*): the text tower, with CLIP's field names.
        vision_config (`dict` or `DiHTVisionConfig`, *optional*): the image tower, with CLIP's field names.
        projection_dim (`int`, defaults to 512): size of the joint embedding space.
        logit_scale_init_value (`float`, defaults to ln(1/0.07) ≈ 2.6593): initial value of the *log* of the logit
            scale, as in CLIP (temperature 0.07).
        hn_nce_alpha (`float`, defaults to 1.0): weight α of the positive in the HN-NCE denominator (α=1, β=0 is
            CLIP's InfoNCE; α=0 the decoupled variant). The paper's value (arXiv 2301.02280, Sec. 3.3) is not
            published; 1.0 follows the third-party ports.
        hn_nce_beta (`float`, defaults to 0.5): hardness β of the negative re-weighting, w_ij ∝ exp(β S_ij). Not
            published either; 0.5 follows the third-party ports.
        concept_head_sizes (`dict[str, int]`, *optional*): one linear concept-distillation head per entry, named by
            the key, predicting that many concepts from the pooled image-tower output. Empty, `None` or a size of 0
            means no head; released DiHT checkpoints carry none.
        concept_loss_weight (`float`, defaults to 1.0): weight of the concept-distillation loss (arXiv 2301.02280,
            Sec. 3.2) that [`DiHTModel`] adds to HN-NCE when `forward` gets `concept_targets` with
            `return_loss=True`. The paper does not publish it.
        initializer_factor (`float`, defaults to 1.0): scale of the initialisation, as in CLIP.
        few_shot_delta (`float`, defaults to 0.25): radius δ of the ball that holds the learned residual W of
            [`DiHTForImageClassification`]'s prompt-initialised head (few-shot adaptation with prompt
            initialisation, arXiv 2301.02280), in the Frobenius norm of the whole `(num_labels, projection_dim)`
            matrix. The paper
            grid-searches δ and publishes neither its grid nor its norm; the Frobenius norm is our reading and the
            default is a middle value of the grid `examples/few_shot.py` searches, not a published one. 0 keeps the
            zero-shot classifier W₀.
        few_shot_bias_delta (`float`, defaults to 0.1): radius δ_b of the Euclidean ball that holds the learned bias
            residual b. Same caveats as `few_shot_delta`.
        few_shot_logit_scale (`float`, *optional*): the multiplier of the head's logits, `s · (x (W₀ + W)ᵀ + b)`.
            The paper's objective has no temperature, but with unit-norm x and W₀ the cross-entropy needs one.
            `None` (default) uses the checkpoint's own `exp(logit_scale)`, frozen, so that step-0 logits are exactly
            the zero-shot logits of [`DiHTModel`]; a number fixes it instead (e.g. 100, the evaluation protocol's).
            Not confirmed by the paper.
        few_shot_train_image_tower (`bool`, defaults to `False`): also train the image tower and its projection when
            fine-tuning a [`DiHTForImageClassification`]. By default they are frozen and only the residuals W, b
            train (the paper's formulation); the logit scale is always frozen.

    Example:
        >>> from modeling_diht import DiHTConfig, DiHTModel
        >>> config = DiHTConfig.from_preset("diht_vitb32_224px")
        >>> model = DiHTModel(config)  # randomly initialised DiHT B/32
    """

    model_type = "diht"
    sub_configs_defaults = {"text_config": DiHTTextConfig, "vision_config": DiHTVisionConfig}

    text_config: dict | DiHTTextConfig | None = None
    vision_config: dict | DiHTVisionConfig | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = math.log(1 / 0.07)  # CLIP's temperature 0.07
    hn_nce_alpha: float = 1.0
    hn_nce_beta: float = 0.5
    concept_head_sizes: dict[str, int] | None = None
    concept_loss_weight: float = 1.0
    initializer_factor: float = 1.0
    few_shot_delta: float = 0.25
    few_shot_bias_delta: float = 0.1
    few_shot_logit_scale: float | None = None
    few_shot_train_image_tower: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        # The towers' own projection size is the joint space's, so that `DiHTVisionModelWithProjection` built from
        # `config.vision_config` (or loaded from this checkpoint) has the shape of this model's projection.
        for sub_config in (self.text_config, self.vision_config):
            if sub_config is not None:
                sub_config.projection_dim = self.projection_dim
        if self.concept_loss_weight < 0:
            raise ValueError(f"concept_loss_weight must be >= 0, got {self.concept_loss_weight}")
        for name in ("few_shot_delta", "few_shot_bias_delta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} is the radius of a ball and must be >= 0, got {getattr(self, name)}")
        if self.few_shot_logit_scale is not None and self.few_shot_logit_scale <= 0:
            raise ValueError(f"few_shot_logit_scale must be positive, got {self.few_shot_logit_scale}")
        if self.concept_head_sizes:
            for name, size in self.concept_head_sizes.items():
                if not isinstance(size, int) or size < 0:
                    raise ValueError(f"concept_head_sizes[{name!r}] must be a non-negative int, got {size!r}")

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> DiHTConfig:
        """`PreTrainedConfig.from_dict`, refusing configurations of other architectures.

        DiHT checkpoints and, for warm starts, CLIP checkpoints (same parameter names, their own activation) load;
        anything else would silently give a randomly initialised model, so it raises instead.
        """
        model_type = config_dict.get("model_type")
        if model_type not in (None, *WARM_START_MODEL_TYPES):
            raise ValueError(
                f"This checkpoint holds a {model_type!r} model, not DiHT: DiHTConfig loads only "
                f"{' and '.join(map(repr, WARM_START_MODEL_TYPES))} checkpoints (CLIP ones as warm starts)."
            )
        return super().from_dict(config_dict, **kwargs)

    @property
    def concept_heads(self) -> dict[str, int]:
        """The concept heads that exist: the entries of `concept_head_sizes` with a positive size."""
        return {name: size for name, size in (self.concept_head_sizes or {}).items() if size > 0}

    @classmethod
    def from_preset(cls, name: str, **kwargs) -> DiHTConfig:
        """Build the configuration of one of the four released DiHT architectures.

        Args:
            name: one of `DIHT_PRESETS` (`diht_vitb32_224px`, `diht_vitb16_224px`, `diht_vitl14_224px`,
                `diht_vitl14_336px`), the names of the official checkpoints.
            **kwargs: fields of `DiHTConfig` that override the preset (e.g. `concept_head_sizes`).

        Returns:
            The configuration, with OpenAI CLIP's token ids and plain GELU.
        """
        if name not in DIHT_PRESETS:
            raise ValueError(f"Unknown DiHT preset {name!r}; choose one of {sorted(DIHT_PRESETS)}")
        preset = DIHT_PRESETS[name]
        return cls(
            text_config=dict(preset["text_config"]),
            vision_config=dict(preset["vision_config"]),
            projection_dim=preset["projection_dim"],
            **kwargs,
        )


def _text(width: int, heads: int) -> dict:
    return {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": 12, "num_attention_heads": heads}


def _vision(width: int, layers: int, heads: int, image_size: int, patch_size: int) -> dict:
    return {
        "hidden_size": width,
        "intermediate_size": 4 * width,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "image_size": image_size,
        "patch_size": patch_size,
    }


# Model types whose checkpoints DiHTModel loads: its own, and transformers' CLIP (same parameter names).
WARM_START_MODEL_TYPES = ("diht", "clip")

# The released architectures, identical to open_clip's ViT-B-32, ViT-B-16, ViT-L-14 and ViT-L-14-336
# (facebookresearch/diht configs).
DIHT_PRESETS: dict[str, dict] = {
    "diht_vitb32_224px": {"text_config": _text(512, 8), "vision_config": _vision(768, 12, 12, 224, 32), "projection_dim": 512},
    "diht_vitb16_224px": {"text_config": _text(512, 8), "vision_config": _vision(768, 12, 12, 224, 16), "projection_dim": 512},
    "diht_vitl14_224px": {"text_config": _text(768, 12), "vision_config": _vision(1024, 24, 16, 224, 14), "projection_dim": 768},
    "diht_vitl14_336px": {"text_config": _text(768, 12), "vision_config": _vision(1024, 24, 16, 336, 14), "projection_dim": 768},
}

__all__ = ["DIHT_PRESETS", "DiHTConfig", "DiHTTextConfig", "DiHTVisionConfig"]

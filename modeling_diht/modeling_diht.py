"""DiHT: CLIP-architecture dual encoder trained with HN-NCE and concept distillation.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280.

The towers are OpenAI CLIP's (the released checkpoints load into open_clip's non-QuickGELU `ViT-*` configs), so this
file reuses transformers' CLIP modules and only adds what DiHT changes: the HN-NCE loss (`loss_diht.py`) for
`return_loss=True`, and optional linear concept-distillation heads on the pooled image-tower output. Parameter names
are those of `transformers.CLIPModel`, so a CLIP checkpoint warm-starts a DiHT model key for key.

`DiHTForImageClassification` is the paper's few-shot model: the image tower of a dual encoder with a classifier that
starts as the zero-shot classifier of the class prompts and learns residuals inside small balls (arXiv 2301.02280,
few-shot adaptation with prompt initialisation).

The towers on their own (`DiHTTextModel`, `DiHTVisionModel` and the `...WithProjection` variants) are transformers'
CLIP towers under DiHT's configurations, so `AutoModel.from_config(config.vision_config)` builds DiHT's image encoder
(e.g. inside a vision-language model) and CLIP tower checkpoints load into them.

The model computes the loss of its local batch only; gathering across processes lives in the trainer.
This file imports only torch, transformers' public API and its siblings, so it travels with a checkpoint as
remote code.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from transformers import (
    CLIPModel,
    CLIPPreTrainedModel,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput
from transformers.models.clip.modeling_clip import CLIPOutput
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, logging

from .configuration_diht import DiHTConfig, DiHTTextConfig, DiHTVisionConfig
from .loss_diht import concept_distillation_loss, hn_nce_loss

logger = logging.get_logger(__name__)


# The `auto_map` of a saved dual-encoder folder, for `trust_remote_code=True`: the one source that `save_pretrained`,
# the package's registration and the Hub upload (hub_cards) read.
AUTO_MAP = {
    "AutoConfig": "configuration_diht.DiHTConfig",
    "AutoModel": "modeling_diht.DiHTModel",
    "AutoModelForZeroShotImageClassification": "modeling_diht.DiHTModel",
}


class _SavesOwnParameterNames:
    """`save_pretrained` writes the weights under the model's own parameter names (`save_original_format=False`).

    transformers 5 re-applies, when saving, the reverse of the key renamings it recorded while loading. It gives
    CLIP's towers a renaming scoped to them (a tower checkpoint's `text_model.` prefix is dropped on load, so the
    reverse adds `text_model.` to every key of the `text_model` sub-module). Loading normally, it records only the
    renamings that matched a key; loading under DeepSpeed ZeRO-3 (`_load_state_dict_into_zero3_model`), it records
    all of them, matched or not, so a warm-started model saved `text_model.text_model.encoder...` and
    `vision_model.vision_model....`. A DiHT folder is always written in DiHT's (CLIP's) own names, which load
    key for key whatever the loader recorded; a folder saved under the doubled names still loads (the renaming
    matches it), and is written back in the model's names.
    """

    def save_pretrained(self, save_directory, *args, **kwargs):
        kwargs.setdefault("save_original_format", False)
        return super().save_pretrained(save_directory, *args, **kwargs)


@dataclass
class DiHTOutput(CLIPOutput):
    r"""Output of [`DiHTModel`]: CLIP's fields, plus the concept-head logits and the named loss terms.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            the training loss of the local batch: `contrastive_loss + config.concept_loss_weight * concept_loss`
            (the second term when `concept_targets` are given).
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            `logit_scale.exp()` times the cosine similarity of every image with every text.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The transpose of `logits_per_image`.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`):
            L2-normalised projected text embeddings.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`):
            L2-normalised projected image embeddings.
        concept_logits (`dict[str, torch.FloatTensor]`, *optional*, when the config has concept heads):
            for every head, logits of shape `(image_batch_size, num_concepts)`.
        logit_scale (`torch.FloatTensor` of shape `()`):
            `logit_scale.exp()`, the 1/tau that multiplies the cosine similarities; with gradient, so that a loss
            computed outside the model (e.g. over the global batch, in the trainer) trains it. Read it here rather
            than from the parameter: under DeepSpeed ZeRO-3 the parameter is only whole inside `forward`.
        text_model_output, vision_model_output (`BaseModelOutputWithPooling`):
            the towers' outputs, `pooler_output` before projection.
        contrastive_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            HN-NCE loss of the local batch (mean of the image→text and text→image terms).
        concept_loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `concept_targets` are given):
            the concept-distillation term: for every head with targets, the binary cross-entropy with logits
            averaged over its concepts and images; summed over those heads.
    """

    concept_logits: dict[str, torch.FloatTensor] | None = None
    logit_scale: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    concept_loss: torch.FloatTensor | None = None


class DiHTModel(_SavesOwnParameterNames, CLIPModel):
    r"""DiHT dual encoder (arXiv 2301.02280): CLIP's towers, HN-NCE as the training loss, optional concept heads.

    Outputs follow transformers' CLIP (`logits_per_image`, `logits_per_text`, `text_embeds`, `image_embeds`, `loss`),
    so the model works in `pipeline("zero-shot-image-classification")` and in code written for `CLIPModel`.
    `get_image_features` and `get_text_features` are inherited: they return a `BaseModelOutputWithPooling` whose
    `pooler_output` holds the projected, not normalised, embeddings (transformers 5 convention).

    Example:
        >>> import torch
        >>> from modeling_diht import DiHTConfig, DiHTModel
        >>> config = DiHTConfig(
        ...     text_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        ...     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
        ...                    "num_attention_heads": 4, "image_size": 30, "patch_size": 2},
        ...     projection_dim=16,
        ... )
        >>> model = DiHTModel(config)
        >>> out = model(input_ids=torch.tensor([[49406, 320, 49407], [49406, 321, 49407]]),
        ...             pixel_values=torch.randn(2, 3, 30, 30), return_loss=True)
        >>> out.logits_per_image.shape
        torch.Size([2, 2])
    """

    config_class = DiHTConfig
    config: DiHTConfig
    base_model_prefix = "diht"
    # The loss is a mean over the batch's pairs, not a sum to be divided by a token count: the Trainer must scale it
    # for gradient accumulation itself and never pass `num_items_in_batch` (which `**kwargs` would otherwise invite).
    accepts_loss_kwargs = False

    def __init__(self, config: DiHTConfig):
        super().__init__(config)
        # One multi-label head per concept vocabulary, on the pooled (post-LayerNorm CLS) image-tower output.
        # The paper (arXiv 2301.02280, Sec. 3.2) trains linear heads on the image tower; where exactly is not published.
        self.concept_heads = nn.ModuleDict(
            {name: nn.Linear(self.vision_embed_dim, size) for name, size in config.concept_heads.items()}
        )
        self.post_init()

    def clamped_parameters(self) -> dict[str, tuple[float, float]]:
        """Parameters a trainer must clamp after every optimizer step, as `{name in named_parameters(): (min, max)}`.

        `logit_scale` is the log of the inverse temperature; CLIP (Radford et al., arXiv 2103.00020, Sec. 2.5) clips
        the temperature so that the logits are scaled by at most 100, i.e. `logit_scale` stays in [0, ln 100].

        Returns:
            `{"logit_scale": (0.0, math.log(100.0))}`.
        """
        return {"logit_scale": (0.0, math.log(100.0))}

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; with remote code on, the `auto_map` is `AUTO_MAP`, which also names
        this class for the zero-shot pipeline's Auto class, so `pipeline(..., trust_remote_code=True)` loads the
        folder."""
        if self._auto_class is not None:
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
        return super().save_pretrained(save_directory, *args, **kwargs)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Concept heads get the projections' scale, vision_width^-0.5: logits of order 1 on the LayerNormed CLS.
        # They must be caught before the generic Linear rule (std = initializer_factor = 1), because transformers'
        # `init` functions skip tensors that an earlier rule already initialised.
        heads = getattr(self, "concept_heads", None)  # absent during CLIPModel.__init__'s own post_init()
        if heads is not None and any(module is head for head in heads.values()):
            init.normal_(module.weight, std=self.vision_embed_dim**-0.5 * self.config.initializer_factor)
            init.zeros_(module.bias)
            return
        super()._init_weights(module)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        concept_targets: dict[str, torch.Tensor] | torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> DiHTOutput | tuple:
        r"""Encode a batch of images and texts and score every image against every text.

        Args:
            input_ids (`torch.LongTensor` of shape `(text_batch_size, sequence_length)`): OpenAI CLIP BPE ids, each
                row containing `eos_token_id` (pooled at its first occurrence).
            pixel_values (`torch.FloatTensor` of shape `(image_batch_size, 3, image_size, image_size)`).
            attention_mask (`torch.Tensor` of shape `(text_batch_size, sequence_length)`, *optional*).
            position_ids (`torch.LongTensor`, *optional*).
            return_loss (`bool`, *optional*): compute the training loss of this batch, pairing image i with text i:
                HN-NCE with `config.hn_nce_alpha` and `config.hn_nce_beta` (a batch of one pair gives
                log(alpha), 0 by default, as CLIP's loss does), plus `config.concept_loss_weight` times the
                concept-distillation loss when `concept_targets` are given. Concept heads that get no targets are
                kept in the graph with a zero term (data-parallel training needs a gradient for every parameter)
                and a warning says they are not trained.
            interpolate_pos_encoding (`bool`): interpolate the image position embeddings for other resolutions.
            return_dict (`bool`, *optional*): return a tuple instead of a [`DiHTOutput`] when `False`.
            concept_targets (`dict[str, torch.Tensor]` or `torch.Tensor`, *optional*): the teacher's concepts of
                each image for the concept heads, `(image_batch_size, num_concepts)` in [0, 1] (hard or soft), keyed
                by head name; a tensor alone is for a model with exactly one head. Their loss (`concept_loss` in
                the output) is computed whenever targets are given.
            **kwargs: passed to both towers (`output_attentions`, `output_hidden_states`).

        Returns:
            [`DiHTOutput`].
        """
        vision_outputs: BaseModelOutputWithPooling = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        text_outputs: BaseModelOutputWithPooling = self.text_model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, **kwargs
        )

        image_pooled = vision_outputs.pooler_output  # (B_img, vision_hidden)
        image_embeds = nn.functional.normalize(self.visual_projection(image_pooled), dim=-1)  # (B_img, P)
        text_embeds = nn.functional.normalize(self.text_projection(text_outputs.pooler_output), dim=-1)  # (B_txt, P)

        logit_scale = self.logit_scale.exp()
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()  # (B_txt, B_img)
        logits_per_image = logits_per_text.t()

        concept_logits = {name: head(image_pooled) for name, head in self.concept_heads.items()} or None

        targets = self._concept_targets_by_head(concept_targets)
        concept_loss = None
        if targets:  # the same loss as the trainers' concept distillation, arXiv 2301.02280 Sec. 3.2
            concept_loss = sum(concept_distillation_loss(concept_logits[name], target)
                               for name, target in targets.items())

        loss = contrastive_loss = None
        if return_loss:
            contrastive_loss = hn_nce_loss(
                image_embeds,
                text_embeds,
                logit_scale,
                alpha=self.config.hn_nce_alpha,
                beta=self.config.hn_nce_beta,
            )
            loss = contrastive_loss
            if concept_loss is not None:
                loss = loss + self.config.concept_loss_weight * concept_loss
            idle = [name for name in self.concept_heads if name not in targets]
            if idle:
                logger.warning_once(
                    f"DiHTModel: concept heads {idle} get no `concept_targets`, so return_loss=True does not train "
                    "them (they stay in the graph with a zero term)."
                )
                loss = loss + sum(0.0 * concept_logits[name].sum() for name in idle)

        output = DiHTOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
            concept_logits=concept_logits,
            logit_scale=logit_scale,
            contrastive_loss=contrastive_loss,
            concept_loss=concept_loss,
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()

    def _concept_targets_by_head(
        self, concept_targets: dict[str, torch.Tensor] | torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """`concept_targets` as `{head name: targets}`, checked against the model's heads."""
        if concept_targets is None:
            return {}
        heads = sorted(self.concept_heads)
        if not heads:
            raise ValueError("concept_targets were given, but this DiHTModel has no concept heads "
                             "(set `concept_head_sizes` in its config).")
        if isinstance(concept_targets, Mapping):
            unknown = sorted(set(concept_targets) - set(heads))
            if unknown:
                raise ValueError(f"concept_targets for unknown heads {unknown}; the model's heads are {heads}.")
            return {name: target for name, target in concept_targets.items() if target is not None}
        if len(heads) != 1:
            raise ValueError(f"a concept_targets tensor is ambiguous for a model with the heads {heads}: pass a dict "
                             "{head name: targets}.")
        return {heads[0]: concept_targets}


class DiHTTextModel(CLIPTextModel):
    r"""DiHT's text tower alone (a causal transformer pooled at the end-of-text token), without projection.

    transformers' [`~transformers.CLIPTextModel`] under a [`DiHTTextConfig`], so that the Auto classes build it from
    DiHT's `text_config`. Parameter names are CLIP's; `base_model_prefix = "text_model"` lets it load the text tower
    of a DiHT or CLIP dual-encoder checkpoint (`text_model.*`) as well as a tower checkpoint of either.
    """

    config_class = DiHTTextConfig
    config: DiHTTextConfig
    base_model_prefix = "text_model"
    # A dual-encoder checkpoint also holds the image tower, the projections and the concept heads.
    _keys_to_ignore_on_load_unexpected = [r"^vision_model\.", r"^(text|visual)_projection\.", r"^logit_scale$",
                                          r"^concept_heads\."]


class DiHTTextModelWithProjection(_SavesOwnParameterNames, CLIPTextModelWithProjection):
    r"""DiHT's text tower and its projection into the joint space ([`~transformers.CLIPTextModelWithProjection`]
    under a [`DiHTTextConfig`]; `text_embeds` are projected, not normalised). Loads the `text_model.*` and
    `text_projection` weights of a DiHT or CLIP dual-encoder checkpoint."""

    config_class = DiHTTextConfig
    config: DiHTTextConfig
    _keys_to_ignore_on_load_unexpected = [r"^vision_model\.", r"^visual_projection\.", r"^logit_scale$",
                                          r"^concept_heads\."]


class DiHTVisionModel(CLIPVisionModel):
    r"""DiHT's image tower alone (a pre-LayerNorm ViT pooled at the class token, `ln_post` applied), without
    projection.

    transformers' [`~transformers.CLIPVisionModel`] under a [`DiHTVisionConfig`]: `AutoModel.from_config(
    diht_config.vision_config)` builds it, e.g. as the vision encoder of a vision-language model. Parameter names are
    CLIP's; `base_model_prefix = "vision_model"` lets it load the image tower of a DiHT or CLIP dual-encoder
    checkpoint (`vision_model.*`) as well as a tower checkpoint of either.
    """

    config_class = DiHTVisionConfig
    config: DiHTVisionConfig
    base_model_prefix = "vision_model"
    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^(text|visual)_projection\.", r"^logit_scale$",
                                          r"^concept_heads\."]


class DiHTVisionModelWithProjection(_SavesOwnParameterNames, CLIPVisionModelWithProjection):
    r"""DiHT's image tower and its projection into the joint space ([`~transformers.CLIPVisionModelWithProjection`]
    under a [`DiHTVisionConfig`]; `image_embeds` are projected, not normalised). Loads the `vision_model.*` and
    `visual_projection` weights of a DiHT or CLIP dual-encoder checkpoint."""

    config_class = DiHTVisionConfig
    config: DiHTVisionConfig
    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^text_projection\.", r"^logit_scale$",
                                          r"^concept_heads\."]


@torch.no_grad()
def project_onto_ball_(tensor: torch.Tensor, radius: float) -> torch.Tensor:
    """Rescale `tensor` in place onto the ball {‖t‖ ≤ radius} (Frobenius / Euclidean norm of the whole tensor).

    The Euclidean projection onto a ball centred at 0: a tensor inside is left untouched, one outside keeps its
    direction and gets norm `radius`; radius 0 gives zeros.
    """
    norm = torch.linalg.vector_norm(tensor.detach().float())
    if norm > radius:
        tensor.mul_(radius / norm if radius > 0 else 0.0)
    return tensor


class DiHTPromptInitialisedHead(nn.Module):
    r"""Linear classifier `x (W₀ + W)ᵀ + b` on unit-norm image embeddings, W₀ fixed, W and b learned residuals.

    DiHT's few-shot adaptation (arXiv 2301.02280, few-shot linear probing) starts from the zero-shot classifier W₀
    (class prompt embeddings) and learns only residuals kept inside balls, ‖W‖ ≤ δ and ‖b‖ ≤ δ_b, by projected
    gradient descent: with W = b = 0 the head *is* the zero-shot classifier, and δ = δ_b = 0 keeps it so.

    Args:
        num_labels: C, the number of classes.
        embed_dim: P, the size of the joint embedding space.

    Buffers and parameters:
        zero_shot_weight (`(C, P)` persistent buffer): W₀, saved with the model, never trained.
        residual_weight (`(C, P)` parameter): W, initialised to zero.
        residual_bias (`(C,)` parameter): b, initialised to zero.
    """

    def __init__(self, num_labels: int, embed_dim: int):
        super().__init__()
        self.register_buffer("zero_shot_weight", torch.zeros(num_labels, embed_dim), persistent=True)
        self.residual_weight = nn.Parameter(torch.zeros(num_labels, embed_dim))
        self.residual_bias = nn.Parameter(torch.zeros(num_labels))

    def forward(self, image_embeds: torch.Tensor, scale: torch.Tensor | float) -> torch.Tensor:
        """`scale · (x (W₀ + W)ᵀ + b)` for unit-norm `image_embeds` x of shape `(B, P)`; returns `(B, C)` logits."""
        weight = self.zero_shot_weight + self.residual_weight  # (C, P)
        return scale * (image_embeds @ weight.t() + self.residual_bias)  # (B, C)

    @torch.no_grad()
    def project_(self, delta: float, bias_delta: float) -> None:
        """The projection step of projected gradient descent: W onto the Frobenius δ-ball, b onto the δ_b-ball."""
        project_onto_ball_(self.residual_weight, delta)
        project_onto_ball_(self.residual_bias, bias_delta)


class DiHTForImageClassification(_SavesOwnParameterNames, CLIPPreTrainedModel):
    r"""DiHT's image tower with a prompt-initialised classifier for few-shot adaptation (arXiv 2301.02280, §few-shot).

    Solves the paper's problem (arXiv 2301.02280, few-shot adaptation with prompt initialisation)

        min_{‖W‖ ≤ δ, ‖b‖ ≤ δ_b}  Σ_i CE(y_i, s · (x_iᵀ (W + W₀) + b))

    with x_i the L2-normalised image embedding, W₀ the zero-shot classifier built from class prompts
    (`zero_shot_weight`, fixed), W, b learned residuals that start at zero, and δ, δ_b = `config.few_shot_delta`,
    `config.few_shot_bias_delta`. Training is projected gradient descent: an optimizer step, then
    `project_residuals_()` (the Trainer does it through `trainers.DeltaBallProjectionCallback`).

    Choices the paper leaves open (configurable, *not confirmed*): ‖W‖ is the Frobenius norm of the whole matrix and
    ‖b‖ the Euclidean norm; the logits carry a scale s (`config.few_shot_logit_scale`, by default the checkpoint's
    `exp(logit_scale)`, frozen) that multiplies the bias too, so δ and δ_b are both in units of cosine similarity;
    the loss is the mean, not the sum, of the cross-entropies (a rescaled learning rate). The image tower and its
    projection are frozen unless `config.few_shot_train_image_tower` (or adapters, e.g. LoRA through `peft`, are
    added); `logit_scale` is always frozen.

    Parameter names are those of [`DiHTModel`] (`vision_model.*`, `visual_projection.weight`, `logit_scale`), so
    `from_pretrained` on a dual-encoder checkpoint loads the image tower and ignores the text tower; the head's W₀ is
    then zero until `set_zero_shot_weights` fills it. `from_dual_encoder` does both at once. At step 0 (W = b = 0)
    the logits are exactly the zero-shot logits `exp(logit_scale) · x W₀ᵀ` of the dual encoder.

    Example:
        >>> import torch
        >>> from modeling_diht import DiHTConfig, DiHTForImageClassification, DiHTModel
        >>> tower = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
        >>> dual = DiHTModel(DiHTConfig(text_config=tower, vision_config={**tower, "image_size": 30, "patch_size": 2},
        ...                             projection_dim=16))
        >>> zero_shot = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)  # (C, P) class prompt embeddings
        >>> model = DiHTForImageClassification.from_dual_encoder(dual, zero_shot, ["cat", "dog", "bird"])
        >>> model(pixel_values=torch.randn(2, 3, 30, 30), labels=torch.tensor([0, 2])).logits.shape
        torch.Size([2, 3])
    """

    config_class = DiHTConfig
    config: DiHTConfig
    base_model_prefix = "diht"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    # A dual-encoder checkpoint carries a text tower (and maybe concept heads) that this model does not use.
    _keys_to_ignore_on_load_unexpected = [r"^text_model\.", r"^text_projection\.", r"^concept_heads\."]
    # The loss is a mean over the batch; the Trainer must not pass `num_items_in_batch` through `**kwargs`.
    accepts_loss_kwargs = False

    def __init__(self, config: DiHTConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vision_embed_dim = config.vision_config.hidden_size
        self.vision_model = CLIPVisionModel._from_config(config.vision_config)
        self.visual_projection = nn.Linear(self.vision_embed_dim, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.classifier = DiHTPromptInitialisedHead(config.num_labels, config.projection_dim)
        self.post_init()
        self._freeze()

    def _freeze(self) -> None:
        self.logit_scale.requires_grad_(False)  # the temperature of the zero-shot classifier stays fixed
        if not self.config.few_shot_train_image_tower:
            self.vision_model.requires_grad_(False)
            self.visual_projection.requires_grad_(False)

    @classmethod
    def from_pretrained(cls, *args, **kwargs) -> "DiHTForImageClassification":
        """`PreTrainedModel.from_pretrained`, then the frozen parts frozen again (loading replaces the parameters,
        and with them their `requires_grad`)."""
        loaded = super().from_pretrained(*args, **kwargs)
        (loaded[0] if isinstance(loaded, tuple) else loaded)._freeze()  # a tuple with `output_loading_info=True`
        return loaded

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # Caught before the generic rules (transformers' `init` functions skip tensors already initialised).
        if module is self:
            init.constant_(self.logit_scale, self.config.logit_scale_init_value)
        elif module is getattr(self, "visual_projection", None):  # CLIPModel's rule for the projection
            init.normal_(module.weight, std=self.vision_embed_dim**-0.5 * self.config.initializer_factor)
            return
        elif isinstance(module, DiHTPromptInitialisedHead):  # W₀ = 0 until set; residuals start at zero
            init.zeros_(module.zero_shot_weight)
            init.zeros_(module.residual_weight)
            init.zeros_(module.residual_bias)
            return
        super()._init_weights(module)

    @classmethod
    def from_dual_encoder(
        cls,
        model: DiHTModel,
        zero_shot_weights: torch.Tensor,
        id2label: dict[int, str] | list[str] | None = None,
        **config_overrides,
    ) -> "DiHTForImageClassification":
        """Build the few-shot model from a dual encoder and its zero-shot classifier.

        Args:
            model: a [`DiHTModel`] (or a `CLIPModel`); its image tower, projection and logit scale
                are copied.
            zero_shot_weights: W₀ of shape `(C, projection_dim)`, e.g. `evaluation.zero_shot_classifier(...)`: per
                class, the normalised mean of its normalised prompt embeddings.
            id2label: the class names, as a list or `{index: name}` (default `LABEL_0`, …).
            **config_overrides: fields of the config to change, e.g. `few_shot_delta=0.5`.

        Returns:
            A `DiHTForImageClassification` on the dual encoder's device and dtype whose step-0 predictions are the
            zero-shot predictions.
        """
        num_labels, embed_dim = zero_shot_weights.shape
        if isinstance(id2label, (list, tuple)):
            id2label = dict(enumerate(id2label))
        id2label = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
        if len(id2label) != num_labels:
            raise ValueError(f"{len(id2label)} class names for a zero-shot classifier of {num_labels} classes.")
        config = DiHTConfig.from_dict(model.config.to_dict())  # a copy (a CLIP config becomes DiHT's)
        for key, value in config_overrides.items():
            if not hasattr(config, key):
                raise ValueError(f"{type(config).__name__} has no field {key!r}")
            setattr(config, key, value)
        config.id2label = {int(i): name for i, name in id2label.items()}
        config.label2id = {name: i for i, name in config.id2label.items()}
        config.auto_map = None  # the dual encoder's entries do not describe this model
        config._attn_implementation = model.config._attn_implementation
        classifier = cls(config)
        tower = {k: v for k, v in model.state_dict().items()
                 if k.startswith(("vision_model.", "visual_projection.")) or k == "logit_scale"}
        missing, unexpected = classifier.load_state_dict(tower, strict=False)
        missing = [k for k in missing if not k.startswith("classifier.")]
        if missing or unexpected:
            raise ValueError(f"the dual encoder does not match: missing {missing}, unexpected {unexpected}")
        parameter = next(model.parameters())
        classifier.to(device=parameter.device, dtype=parameter.dtype)
        classifier.set_zero_shot_weights(zero_shot_weights)
        return classifier

    @torch.no_grad()
    def set_zero_shot_weights(self, zero_shot_weights: torch.Tensor) -> None:
        """Set W₀ (shape `(num_labels, projection_dim)`) and reset the residuals W, b to zero."""
        head = self.classifier
        if zero_shot_weights.shape != head.zero_shot_weight.shape:
            raise ValueError(f"zero-shot weights of shape {tuple(zero_shot_weights.shape)}; this model needs "
                             f"{tuple(head.zero_shot_weight.shape)} (num_labels, projection_dim)")
        head.zero_shot_weight.copy_(zero_shot_weights)
        head.residual_weight.zero_()
        head.residual_bias.zero_()

    def project_residuals_(self) -> None:
        """Project W onto the Frobenius `config.few_shot_delta`-ball and b onto the `config.few_shot_bias_delta`-ball.

        Call after every optimizer step (`trainers.DeltaBallProjectionCallback`). Every prompt-initialised head inside
        the model is projected, so it also works on the trainable copy that `peft`'s `modules_to_save` makes.
        """
        for module in self.modules():
            if isinstance(module, DiHTPromptInitialisedHead):
                module.project_(self.config.few_shot_delta, self.config.few_shot_bias_delta)

    def classifier_scale(self) -> torch.Tensor:
        """s, the multiplier of the logits: `config.few_shot_logit_scale`, or the checkpoint's `exp(logit_scale)`."""
        if self.config.few_shot_logit_scale is not None:
            return self.logit_scale.new_tensor(self.config.few_shot_logit_scale)
        return self.logit_scale.exp()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; a config read from a dual-encoder folder loses that folder's `auto_map`
        entries, which name the dual encoder, so only this model's (`AutoModelForImageClassification`) remains."""
        if getattr(self.config, "auto_map", None):
            self.config.auto_map = {key: value for key, value in self.config.auto_map.items()
                                    if key not in ("AutoModel", "AutoModelForZeroShotImageClassification")}
        return super().save_pretrained(save_directory, *args, **kwargs)

    def classification_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of `logits` `(B, num_labels)` against `labels`, by `config.problem_type` as in transformers'
        classification models (inferred and stored in the config on the first call when unset): mean squared
        error, cross-entropy or binary cross-entropy with logits, computed in float32."""
        config, num_labels = self.config, self.config.num_labels
        if config.problem_type is None:
            if num_labels == 1:
                config.problem_type = "regression"
            elif labels.dtype in (torch.long, torch.int):
                config.problem_type = "single_label_classification"
            else:
                config.problem_type = "multi_label_classification"
        logits, labels = logits.float(), labels.to(logits.device)
        if config.problem_type == "regression":
            if num_labels == 1:
                return nn.functional.mse_loss(logits.squeeze(-1), labels.float().reshape(logits.shape[:1]))
            return nn.functional.mse_loss(logits, labels.float())
        if config.problem_type == "single_label_classification":
            return nn.functional.cross_entropy(logits.view(-1, num_labels), labels.long().view(-1))
        if config.problem_type == "multi_label_classification":
            return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
        raise ValueError(f"Unknown problem_type {config.problem_type!r}: use 'regression', "
                         "'single_label_classification' or 'multi_label_classification'.")

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput | tuple:
        r"""Classify a batch of images with the prompt-initialised head.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`).
            labels (`torch.Tensor`, *optional*): the targets, read as transformers' classification models read
                them (`config.problem_type`, inferred when unset: "regression" for `num_labels == 1`,
                "single_label_classification" for integer labels, else "multi_label_classification"). Class
                indices `(batch_size,)` give the mean cross-entropy (the paper's objective); float multi-hot
                `(batch_size, num_labels)` targets the mean binary cross-entropy with logits; regression targets
                the mean squared error.
            interpolate_pos_encoding (`bool`): interpolate the image position embeddings for other resolutions.
            return_dict (`bool`, *optional*): return a tuple instead of an `ImageClassifierOutput` when `False`.
            **kwargs: passed to the image tower (e.g. `output_hidden_states=True`).

        Returns:
            `ImageClassifierOutput` with `logits` of shape `(batch_size, num_labels)`, `s · (x (W₀ + W)ᵀ + b)`, and
            `loss` when `labels` are given.
        """
        vision_outputs: BaseModelOutputWithPooling = self.vision_model(
            pixel_values=pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )
        image_embeds = nn.functional.normalize(self.visual_projection(vision_outputs.pooler_output), dim=-1)  # (B, P)
        logits = self.classifier(image_embeds, self.classifier_scale())  # (B, C)
        loss = None
        if labels is not None:
            loss = self.classification_loss(logits, labels)
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=vision_outputs.hidden_states, attentions=vision_outputs.attentions
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


__all__ = [
    "DiHTForImageClassification",
    "DiHTModel",
    "DiHTOutput",
    "DiHTPromptInitialisedHead",
    "DiHTTextModel",
    "DiHTTextModelWithProjection",
    "DiHTVisionModel",
    "DiHTVisionModelWithProjection",
    "project_onto_ball_",
]

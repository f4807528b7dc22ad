"""DiHT: CLIP-architecture dual encoder trained with HN-NCE and concept distillation.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280.

The towers are OpenAI CLIP's (the released checkpoints load into open_clip's non-QuickGELU `ViT-*` configs), so this
file reuses transformers' CLIP modules and only adds what DiHT changes: the HN-NCE loss (`loss_diht.py`) for
`return_loss=True`, and optional linear concept-distillation heads on the pooled image-tower output. Parameter names
are those of `transformers.CLIPModel`, so a CLIP checkpoint warm-starts a DiHT model key for key.

The model computes the loss of its local batch only; gathering across processes lives in the trainer.
This file imports only torch, transformers' public API and its siblings, so it travels with a checkpoint as
remote code.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers import CLIPModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPOutput

from .configuration_diht import DiHTConfig
from .loss_diht import hn_nce_loss


@dataclass
class DiHTOutput(CLIPOutput):
    r"""Output of [`DiHTModel`]: CLIP's fields, plus the concept-head logits.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            HN-NCE loss of the local batch (mean of the image→text and text→image terms).
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
    """

    concept_logits: dict[str, torch.FloatTensor] | None = None
    logit_scale: torch.FloatTensor | None = None


class DiHTModel(CLIPModel):
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
        # PAPERS.md §1.4: the paper trains linear heads on the image tower; where exactly is not published.
        self.concept_heads = nn.ModuleDict(
            {name: nn.Linear(self.vision_embed_dim, size) for name, size in config.concept_heads.items()}
        )
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; with remote code on, the `auto_map` also names this class for the
        zero-shot pipeline's Auto class, so `pipeline(..., trust_remote_code=True)` loads the folder."""
        if self._auto_class is not None:
            module = type(self).__module__.rsplit(".", 1)[-1]
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModelForZeroShotImageClassification": f"{module}.{type(self).__name__}",
            }
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
        **kwargs,
    ) -> DiHTOutput | tuple:
        r"""Encode a batch of images and texts and score every image against every text.

        Args:
            input_ids (`torch.LongTensor` of shape `(text_batch_size, sequence_length)`): OpenAI CLIP BPE ids, each
                row containing `eos_token_id` (pooled at its first occurrence).
            pixel_values (`torch.FloatTensor` of shape `(image_batch_size, 3, image_size, image_size)`).
            attention_mask (`torch.Tensor` of shape `(text_batch_size, sequence_length)`, *optional*).
            position_ids (`torch.LongTensor`, *optional*).
            return_loss (`bool`, *optional*): compute the HN-NCE loss of this batch, pairing image i with text i,
                with `config.hn_nce_alpha` and `config.hn_nce_beta`.
            interpolate_pos_encoding (`bool`): interpolate the image position embeddings for other resolutions.
            return_dict (`bool`, *optional*): return a tuple instead of a [`DiHTOutput`] when `False`.

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

        loss = None
        if return_loss:
            loss = hn_nce_loss(
                image_embeds,
                text_embeds,
                logit_scale,
                alpha=self.config.hn_nce_alpha,
                beta=self.config.hn_nce_beta,
            )

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
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


__all__ = ["DiHTModel", "DiHTOutput"]

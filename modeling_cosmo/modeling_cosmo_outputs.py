"""Output types of the COSMO models, with transformers' field names (CLIP's ITC fields, BLIP's `itm_score`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput


@dataclass
class CosmoOutput(ModelOutput):
    r"""Output of [`CosmoModel`]: the ITC embeddings and similarities.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            ITC loss of the local batch (`config.itc_loss`, smoothed by `config.itc_smoothing`).
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            `logit_scale` times the cosine similarity of every image with every text.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`):
            The text-anchored similarities (the transpose of `logits_per_image` unless `itc_detach_other_side`).
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, embed_dim)`):
            L2-normalised `text_proj` of the `[CLS]` state of the text layers.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, embed_dim)`):
            L2-normalised `vision_proj` of the image class-token state.
        logit_scale (`torch.FloatTensor` of shape `()`):
            `1 / temp`, the temperature clamped to its range, with gradient, so that a loss computed outside the model
            (over the global batch, in the trainer) trains the temperature. Read it here rather than from the
            parameter: under DeepSpeed ZeRO-3 the parameter is only whole inside `forward`.
        text_model_output (`BaseModelOutputWithPooling`):
            `last_hidden_state` `(text_batch_size, L, D)`: the states of the unimodal text layers.
        vision_model_output (`BaseModelOutputWithPooling`):
            `last_hidden_state` `(image_batch_size, 1 + N, D_img)`: the image encoder states.
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    logit_scale: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return tuple(
            v.to_tuple() if isinstance(v, ModelOutput) else v for v in (self[k] for k in self.keys())
        )


@dataclass
class CosmoImageTextRetrievalOutput(CosmoOutput):
    r"""Output of [`CosmoForImageTextRetrieval`]: [`CosmoOutput`]'s fields and the ITM logits of the pairs.

    Args:
        itm_score (`torch.FloatTensor` of shape `(num_pairs, 2)`):
            ITM head logits of each (image, text) pair, class 1 = "match" (BLIP's field name and layout). Pair r is
            text r with image r, or with the single image when one image is given. ALBEF and COSMO re-rank retrieval
            candidates by `itm_score[:, 1]`.
    """

    itm_score: torch.FloatTensor | None = None


@dataclass
class CosmoForPreTrainingOutput(CosmoOutput):
    r"""Output of [`CosmoForPreTraining`]: the local loss, its named terms and what the ITM step chose.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss=True`):
            `itc_loss + itm_loss + mlm_loss` (the MLM term when `mlm_input_ids` are given), over the local batch.
        itc_loss (`torch.FloatTensor` of shape `()`, *optional*): S-ITC (or HN-NCE), mean of both directions.
        itm_loss (`torch.FloatTensor` of shape `()`, *optional*): one cross-entropy over all ITM rows.
        mlm_loss (`torch.FloatTensor` of shape `()`, *optional*): token mean over the masked positions of all rows.
        itm_logits (`torch.FloatTensor` of shape `(num_itm_rows, 2)`, *optional*): ITM logits of the rows.
        itm_labels (`torch.LongTensor` of shape `(num_itm_rows,)`, *optional*): their labels (1 = match).
        itm_pairs (`torch.LongTensor` of shape `(num_itm_rows, 2)`, *optional*): `(image row, text row)` of each ITM
            row: the B positives, then the hard negative image of every text, the hard negative text of every image,
            then the extra rows.
    """

    itc_loss: torch.FloatTensor | None = None
    itm_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    itm_logits: torch.FloatTensor | None = None
    itm_labels: torch.LongTensor | None = None
    itm_pairs: torch.LongTensor | None = None


__all__ = ["CosmoForPreTrainingOutput", "CosmoImageTextRetrievalOutput", "CosmoOutput"]

"""COSMO: ALBEF-style image-text model trained with S-ITC, hard-negative ITM and image-conditioned MLM.

Byun, Kim and Moon, "Converting and Smoothing False Negatives for Vision-Language Pre-training", CVPR 2024,
https://arxiv.org/abs/2312.06112 (v2 renamed MAFA). The architecture is ALBEF's (Li et al., "Align before Fuse",
https://arxiv.org/abs/2107.07651, §3.1) without the momentum encoder and the queues, as in GRIT-VLP (Byun et al.,
https://arxiv.org/abs/2208.04060): a ViT image encoder, a BERT text encoder (layers `0 .. fusion_layer-1`) and fusion
encoder (the remaining layers, with cross-attention to the image states), `vision_proj` / `text_proj` into the ITC
space, `itm_head` and BERT's MLM head, and a learnable temperature `temp` clamped to [0.001, 0.5].

Three models share the parameter names, so any COSMO checkpoint loads into each:

* [`CosmoModel`]: ITC embeddings and similarities (zero-shot classification, first-stage retrieval);
* [`CosmoForImageTextRetrieval`]: adds ITM scores through the fusion encoder, with per-image cross-attention caching
  for re-ranking many texts against one image;
* [`CosmoForPreTraining`]: adds the MLM head and computes the local pre-training loss `itc + itm + mlm`
  (`modeling_cosmo_pretraining.py` holds its training step).

Models compute the loss of their local batch only; gathering across processes lives in the trainer. This folder
imports only torch, transformers' public API and its siblings, so it travels with a checkpoint as remote code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from .configuration_cosmo import CosmoConfig
from .loss_cosmo import hn_nce_itc_loss, itc_logits, smoothed_itc_loss
from .modeling_cosmo_layers import CosmoCrossAttentionCache
from .modeling_cosmo_outputs import CosmoForPreTrainingOutput, CosmoImageTextRetrievalOutput, CosmoOutput
from .modeling_cosmo_pretraining import pretraining_step
from .modeling_cosmo_towers import CosmoPreTrainedModel, CosmoTextModel, CosmoVisionModel
from .warm_start_cosmo import load_text_vision_pretrained

# `auto_map` entries every saved COSMO folder carries, whichever class saved it (they share the weights): the one
# source that `save_pretrained`, the package's registration and the Hub upload (hub_cards) read.
AUTO_MAP = {
    "AutoConfig": "configuration_cosmo.CosmoConfig",
    "AutoModel": "modeling_cosmo.CosmoModel",
    "AutoModelForZeroShotImageClassification": "modeling_cosmo.CosmoModel",
    "AutoModelForPreTraining": "modeling_cosmo.CosmoForPreTraining",
}


class CosmoModel(CosmoPreTrainedModel):
    r"""COSMO's encoders and ITC head (arXiv 2312.06112; ALBEF arXiv 2107.07651, §3.1-3.2).

    Outputs follow transformers' CLIP (`logits_per_image`, `logits_per_text`, `image_embeds`, `text_embeds`, `loss`),
    so the model runs in `pipeline("zero-shot-image-classification")`. `get_image_features` / `get_text_features`
    return a `BaseModelOutputWithPooling` (transformers 5's convention) whose `pooler_output` holds the projected,
    L2-normalised ITC embeddings and whose `last_hidden_state` holds the encoder states that ITM and MLM fuse.

    The pieces a trainer composes are public: `encode_image`, `encode_text`, `project_image`, `project_text`,
    `precompute_cross_attention`, `fuse`, `get_logit_scale`.

    Example:
        >>> import torch
        >>> from modeling_cosmo import CosmoConfig, CosmoModel
        >>> layers = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4}
        >>> config = CosmoConfig(text_config={**layers, "num_hidden_layers": 4, "fusion_layer": 2, "vocab_size": 99},
        ...                      vision_config={**layers, "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
        ...                      embed_dim=16)
        >>> model = CosmoModel(config).eval()
        >>> out = model(input_ids=torch.tensor([[2, 7, 3], [2, 9, 3]]), pixel_values=torch.randn(1, 3, 32, 32))
        >>> out.logits_per_image.shape
        torch.Size([1, 2])
    """

    main_input_name = "input_ids"
    input_modalities = ("image", "text")
    # A pre-training or retrieval checkpoint carries heads this model does not use.
    _keys_to_ignore_on_load_unexpected = [r"^itm_head\.", r"^mlm_head\."]
    # The loss is a mean over the batch, not a sum to be divided by a token count: the Trainer must scale it for
    # gradient accumulation itself and never pass `num_items_in_batch`.
    accepts_loss_kwargs = False

    def __init__(self, config: CosmoConfig):
        super().__init__(config)
        self.vision_model = CosmoVisionModel(config.vision_config)
        self.text_model = CosmoTextModel(config.text_config)
        self.vision_proj = nn.Linear(config.vision_config.hidden_size, config.embed_dim)
        self.text_proj = nn.Linear(config.text_config.hidden_size, config.embed_dim)
        # ALBEF's `temp`; one element rather than 0-dim (deepspeed 0.19.8 crashes on 0-dim parameters).
        self.temp = nn.Parameter(torch.full((1,), config.temperature_init))
        self._build_heads(config)
        self.post_init()

    def _build_heads(self, config: CosmoConfig) -> None:
        """Add the task heads of a subclass (before `post_init`, which initialises and ties them)."""

    # -- capabilities ------------------------------------------------------------------------------------------------

    def clamped_parameters(self) -> dict[str, tuple[float, float]]:
        """Parameters the trainer clamps after every optimizer step, as `{name in named_parameters(): (low, high)}`.

        The temperature, to `[config.temperature_min, config.temperature_max]` (ALBEF, GRIT-VLP and COSMO clamp it to
        [0.001, 0.5] before every step).
        """
        return {"temp": (self.config.temperature_min, self.config.temperature_max)}

    def get_logit_scale(self) -> torch.Tensor:
        """`1 / temp` as a 0-dim tensor with gradient, the temperature clamped to its range first."""
        return 1.0 / self.temp.clamp(self.config.temperature_min, self.config.temperature_max).squeeze(0)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.text_model.set_input_embeddings(value)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """`PreTrainedModel.save_pretrained`; with remote code on, the `auto_map` names all three COSMO classes, whose
        weights are the same, so `AutoModel`, `AutoModelForZeroShotImageClassification` and `AutoModelForPreTraining`
        load the folder with `trust_remote_code=True` whichever class saved it.

        The weights are written under the model's own parameter names (`save_original_format=False`): transformers 5
        re-applies, when saving, the reverse of the key renamings it recorded while loading (BERT's legacy
        `LayerNorm.gamma`/`beta` → `weight`/`bias`); loading under DeepSpeed ZeRO-3 it records every renaming, matched
        or not, so the reverse would write `gamma`/`beta` keys that a plain save never writes."""
        kwargs.setdefault("save_original_format", False)
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self._auto_class is not None and kwargs.get("is_main_process", True):
            # transformers wrote `auto_map[<this class's Auto class>] = <this class>`; name the canonical classes.
            self.config.auto_map = {**(getattr(self.config, "auto_map", None) or {}), **AUTO_MAP}
            self.config.save_pretrained(save_directory)
        return result

    @classmethod
    def from_text_vision_pretrained(
        cls,
        text_model_name_or_path: str,
        vision_model_name_or_path: str,
        config: CosmoConfig | None = None,
        **kwargs,
    ) -> CosmoModel:
        """Warm-start from a BERT checkpoint and a ViT / DeiT checkpoint (ALBEF's and COSMO's initialisation).

        BERT layers `0 .. fusion_layer-1` become the text encoder and the following layers the fusion encoder, whose
        cross-attention is initialised fresh; the MLM head comes from the BERT checkpoint's (when it has one); the ViT
        position embeddings are bicubically resized to the configured resolution (DeiT's 224 px to 256 px).
        `vision_proj`, `text_proj`, `itm_head` and `temp` are initialised fresh.

        Args:
            text_model_name_or_path: a folder (or Hub id) `transformers.BertForMaskedLM.from_pretrained` reads.
            vision_model_name_or_path: a folder (or Hub id) `transformers.ViTModel.from_pretrained` reads (ViT, or DeiT
                without distillation token, e.g. `facebook/deit-base-patch16-224`).
            config: the COSMO configuration; by default the checkpoints' own dimensions with `fusion_layer=6`,
                256 px images, LayerNorm eps 1e-6 and the COSMO defaults.
            **kwargs: passed to both `from_pretrained` calls (e.g. `local_files_only=True`).

        Returns:
            The model, in training mode.
        """
        return load_text_vision_pretrained(cls, text_model_name_or_path, vision_model_name_or_path, config, **kwargs)

    # -- pieces ------------------------------------------------------------------------------------------------------

    def encode_image(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """`(B, 3, H, W)` images -> `(B, 1 + N, D_img)` image encoder states (class token first)."""
        return self.vision_model(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state

    def encode_text(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """`(B, L)` token ids -> `(B, L, D)` states of the unimodal text layers."""
        return self.text_model.encode_text(input_ids, attention_mask, token_type_ids, position_ids)

    def project_image(self, image_states: torch.Tensor) -> torch.Tensor:
        """`(B, 1 + N, D_img)` image states -> `(B, embed_dim)` L2-normalised ITC embeddings."""
        return nn.functional.normalize(self.vision_proj(image_states[:, 0]), dim=-1)

    def project_text(self, text_states: torch.Tensor) -> torch.Tensor:
        """`(B, L, D)` text states -> `(B, embed_dim)` L2-normalised ITC embeddings."""
        return nn.functional.normalize(self.text_proj(text_states[:, 0]), dim=-1)

    def precompute_cross_attention(self, image_states: torch.Tensor) -> CosmoCrossAttentionCache:
        """The cross-attention keys and values of every fusion layer for `(B_img, 1 + N, D_img)` image states.

        They depend on the image alone: compute them once per image and pass the cache to `fuse` for all its texts.
        """
        return self.text_model.precompute_cross_attention(image_states)

    def fuse(
        self,
        text_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_states: torch.Tensor | None = None,
        *,
        image_attention_mask: torch.Tensor | None = None,
        cross_attention_cache: CosmoCrossAttentionCache | None = None,
        image_index: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """Run the fusion encoder on text states conditioned on images.

        Args:
            text_states: `(R, L, D)` from `encode_text` (rows may repeat texts).
            attention_mask: `(R, L)` text padding mask.
            image_states: `(R, 1 + N, D_img)` image states, one per row (the plain path), or
            cross_attention_cache: precomputed keys and values (the cached path) of R images, of one image for all rows,
                or of any images, `image_index` `(R,)` picking each row's.
            image_attention_mask: `(R, 1 + N)`, plain path only.

        Returns:
            `(R, L, D)` fused states.
        """
        if image_index is not None:
            if cross_attention_cache is None:
                raise ValueError("image_index selects rows of a cross_attention_cache")
            cross_attention_cache = cross_attention_cache.select(image_index)
        return self.text_model.fuse(text_states, attention_mask, image_states, image_attention_mask,
                                    cross_attention_cache)

    # -- features and forward ----------------------------------------------------------------------------------------

    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs
    ) -> BaseModelOutputWithPooling:
        r"""Image ITC embeddings.

        Returns:
            `BaseModelOutputWithPooling`: `pooler_output` `(B, embed_dim)` the L2-normalised embeddings,
            `last_hidden_state` `(B, 1 + N, D_img)` the image encoder states.
        """
        states = self.encode_image(pixel_values, interpolate_pos_encoding)
        return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=self.project_image(states))

    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        r"""Text ITC embeddings.

        Returns:
            `BaseModelOutputWithPooling`: `pooler_output` `(B, embed_dim)` the L2-normalised embeddings,
            `last_hidden_state` `(B, L, D)` the states of the text layers.
        """
        states = self.encode_text(input_ids, attention_mask, token_type_ids, position_ids)
        return BaseModelOutputWithPooling(last_hidden_state=states, pooler_output=self.project_text(states))

    def _contrastive(self, input_ids, pixel_values, attention_mask, token_type_ids, position_ids,
                     interpolate_pos_encoding) -> dict:
        image_states = self.encode_image(pixel_values, interpolate_pos_encoding)  # (B_i, 1 + N, D_img)
        text_states = self.encode_text(input_ids, attention_mask, token_type_ids, position_ids)  # (B_t, L, D)
        image_embeds, text_embeds = self.project_image(image_states), self.project_text(text_states)
        logit_scale = self.get_logit_scale()
        logits_per_image, logits_per_text = itc_logits(
            image_embeds, text_embeds, logit_scale, self.config.itc_detach_other_side
        )
        return {
            "logits_per_image": logits_per_image,
            "logits_per_text": logits_per_text,
            "text_embeds": text_embeds,
            "image_embeds": image_embeds,
            "logit_scale": logit_scale,
            "text_model_output": BaseModelOutputWithPooling(last_hidden_state=text_states,
                                                            pooler_output=text_states[:, 0]),
            "vision_model_output": BaseModelOutputWithPooling(last_hidden_state=image_states,
                                                              pooler_output=image_states[:, 0]),
        }

    def _itc_loss(self, outputs: dict, targets_i2t=None, targets_t2i=None, smoothing: float | None = None):
        smoothing = self.config.itc_smoothing if smoothing is None else smoothing
        if self.config.itc_loss == "hn_nce":
            if targets_i2t is not None or targets_t2i is not None:
                raise ValueError("itc_loss='hn_nce' has one positive per row: soft or multi-positive targets "
                                 "need itc_loss='itc'")
            return hn_nce_itc_loss(outputs["logits_per_image"], outputs["logits_per_text"],
                                   self.config.hn_nce_alpha, self.config.hn_nce_beta)
        return smoothed_itc_loss(outputs["logits_per_image"], outputs["logits_per_text"], targets_i2t, targets_t2i,
                                 smoothing)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> CosmoOutput | tuple:
        r"""Encode images and texts and score every image against every text (ITC).

        Args:
            input_ids (`torch.LongTensor` of shape `(text_batch_size, L)`): BERT WordPiece ids.
            pixel_values (`torch.FloatTensor` of shape `(image_batch_size, 3, image_size, image_size)`).
            attention_mask, token_type_ids, position_ids (`torch.LongTensor` of shape `(text_batch_size, L)`).
            return_loss (`bool`, *optional*): compute the ITC loss of the batch, pairing image i with text i (S-ITC
                with `config.itc_smoothing`, or HN-NCE when `config.itc_loss="hn_nce"`).
            interpolate_pos_encoding (`bool`): accept another image resolution.
            return_dict (`bool`, *optional*): return a tuple instead of a [`CosmoOutput`] when `False`.

        Returns:
            [`CosmoOutput`].
        """
        outputs = self._contrastive(input_ids, pixel_values, attention_mask, token_type_ids, position_ids,
                                    interpolate_pos_encoding)
        loss = self._itc_loss(outputs) if return_loss else None
        output = CosmoOutput(loss=loss, **outputs)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


class CosmoForImageTextRetrieval(CosmoModel):
    r"""COSMO with its ITM head: match scores of (image, text) pairs through the fusion encoder, and ITC.

    Retrieval as in ALBEF and COSMO ranks all candidates by ITC, then re-ranks the top k by `itm_score[:, 1]`
    (k = 256 on COCO, 128 on Flickr30K). An image's cross-attention keys and values are the same for every text, so
    for re-ranking encode each image once (`encode_image`), each text once (`encode_text`), precompute the image's
    keys and values once (`precompute_cross_attention`) and run only the fusion layers for its k texts
    (`itm_logits(..., cross_attention_cache=cache)`): at k = 256 that is about 3.5x fewer FLOPs than running the
    fusion encoder on k (image, text) pairs. `evaluation.itm_rerank.ITMRescorer` does this for a list of pairs.
    """

    _keys_to_ignore_on_load_unexpected = [r"^mlm_head\."]

    def _build_heads(self, config: CosmoConfig) -> None:
        super()._build_heads(config)
        self.itm_head = nn.Linear(config.text_config.hidden_size, 2)

    def itm_logits(
        self,
        text_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_states: torch.Tensor | None = None,
        *,
        pairs: torch.LongTensor | None = None,
        cross_attention_cache: CosmoCrossAttentionCache | None = None,
    ) -> torch.Tensor:
        """ITM logits of (image, text) pairs.

        Args:
            text_states: `(T, L, D)` from `encode_text`.
            attention_mask: `(T, L)` their padding mask.
            image_states: `(I, 1 + N, D_img)` from `encode_image` (the plain path: keys and values recomputed for every
                pair), or
            cross_attention_cache: the images' precomputed keys and values (the cached path).
            pairs: `(R, 2)` `(image row, text row)` of each pair. Without it, text row r pairs with image row r, or
                with the single image when one is given.

        Returns:
            `(R, 2)` logits; class 1 = "match".
        """
        image_index = None
        if pairs is not None:
            image_index, text_index = pairs[:, 0], pairs[:, 1]
            text_states = text_states.index_select(0, text_index)  # (R, L, D)
            attention_mask = None if attention_mask is None else attention_mask.index_select(0, text_index)
            if image_states is not None:
                image_states = image_states.index_select(0, image_index)  # (R, 1 + N, D_img)
                image_index = None
        elif image_states is not None and image_states.shape[0] == 1 and text_states.shape[0] > 1:
            image_states = image_states.expand(text_states.shape[0], -1, -1)  # one image for all texts
        fused = self.fuse(text_states, attention_mask, image_states, cross_attention_cache=cross_attention_cache,
                          image_index=image_index)  # (R, L, D)
        return self.itm_head(fused[:, 0])

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        position_ids: torch.LongTensor | None = None,
        use_cache: bool = True,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> CosmoImageTextRetrievalOutput | tuple:
        r"""ITM logits of the pairs (image r, text r), or of one image with every text, and the ITC similarities.

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`), attention_mask, token_type_ids, position_ids.
            pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)` or `(1, 3, H, W)`).
            use_cache (`bool`, defaults to `True`): compute each image's cross-attention keys and values once
                (`False`: transformers' BERT cross-attention, recomputing them for every pair; same scores).
            interpolate_pos_encoding (`bool`): accept another image resolution.
            return_dict (`bool`, *optional*): return a tuple when `False`.

        Returns:
            [`CosmoImageTextRetrievalOutput`] with `itm_score` `(B, 2)`.
        """
        outputs = self._contrastive(input_ids, pixel_values, attention_mask, token_type_ids, position_ids,
                                    interpolate_pos_encoding)
        image_states = outputs["vision_model_output"].last_hidden_state
        text_states = outputs["text_model_output"].last_hidden_state
        if image_states.shape[0] not in (1, text_states.shape[0]):
            raise ValueError(f"{image_states.shape[0]} images for {text_states.shape[0]} texts: give one image per "
                             "text or a single image")
        if use_cache:
            cache = self.precompute_cross_attention(image_states)
            itm_score = self.itm_logits(text_states, attention_mask, cross_attention_cache=cache)
        else:
            itm_score = self.itm_logits(text_states, attention_mask, image_states)
        output = CosmoImageTextRetrievalOutput(itm_score=itm_score, **outputs)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


class CosmoForPreTraining(CosmoForImageTextRetrieval):
    r"""COSMO for pre-training: ITC, ITM with in-batch hard negatives and image-conditioned MLM (arXiv 2312.06112).

    `forward(..., return_loss=True)` computes the local loss `itc_loss + itm_loss + mlm_loss`
    (`modeling_cosmo_pretraining.pretraining_step` documents every term). The MLM inputs come from
    `transformers.DataCollatorForLanguageModeling` with `mlm_probability=0.5` (see
    `processing_cosmo.CosmoDataCollator`), as `mlm_input_ids` / `mlm_labels` (not `labels`, which transformers' Trainer
    treats specially).

    The MLM decoder is tied to the word embeddings (BERT, ALBEF). Beyond [`CosmoForImageTextRetrieval`]'s pieces it
    exposes `mlm_logits`.
    """

    _keys_to_ignore_on_load_unexpected = None
    _tied_weights_keys = {
        "mlm_head.predictions.decoder.weight": "text_model.embeddings.word_embeddings.weight",
        "mlm_head.predictions.decoder.bias": "mlm_head.predictions.bias",
    }

    def _build_heads(self, config: CosmoConfig) -> None:
        super()._build_heads(config)
        self.mlm_head = BertOnlyMLMHead(config.text_config)

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear) -> None:
        self.mlm_head.predictions.decoder = new_embeddings
        self.mlm_head.predictions.bias = new_embeddings.bias

    def mlm_logits(
        self,
        mlm_input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        image_states: torch.Tensor | None = None,
        *,
        cross_attention_cache: CosmoCrossAttentionCache | None = None,
        image_index: torch.LongTensor | None = None,
        positions: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
    ) -> torch.Tensor:
        """MLM logits of masked texts conditioned on images, through all text and fusion layers.

        Args:
            mlm_input_ids: `(R, L)` masked token ids.
            attention_mask: `(R, L)` padding mask.
            image_states: `(R, 1 + N, D_img)`, one image per row, or
            cross_attention_cache: precomputed keys and values, with `image_index` `(R,)` picking each row's image.
            positions: `(R, L)` boolean mask of the positions to predict (e.g. `mlm_labels != -100`); all positions
                when omitted.
            token_type_ids: `(R, L)`, optional.

        Returns:
            `(R, L, vocab_size)` logits, or `(num_positions, vocab_size)` at `positions`.
        """
        text_states = self.encode_text(mlm_input_ids, attention_mask, token_type_ids)
        fused = self.fuse(text_states, attention_mask, image_states, cross_attention_cache=cross_attention_cache,
                          image_index=image_index)  # (R, L, D)
        if positions is not None:
            fused = fused[positions]  # (M, D)
        return self.mlm_head(fused)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        image_id: torch.LongTensor | None = None,
        itc_targets: torch.FloatTensor | None = None,
        itc_targets_t2i: torch.FloatTensor | None = None,
        itc_smoothing: float | None = None,
        mlm_input_ids: torch.LongTensor | None = None,
        mlm_labels: torch.LongTensor | None = None,
        mlm_attention_mask: torch.Tensor | None = None,
        mlm_image_index: torch.LongTensor | None = None,
        itm_negative_pairs: torch.LongTensor | None = None,
        extra_itm_pairs: torch.LongTensor | None = None,
        extra_itm_labels: torch.LongTensor | None = None,
        itm_pair_selector: Callable[[dict], dict] | None = None,
        return_loss: bool = True,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> CosmoForPreTrainingOutput | tuple:
        r"""The local pre-training loss of a batch of B pairs (image i, text i).

        Args:
            input_ids (`torch.LongTensor` of shape `(B, L)`), attention_mask, token_type_ids: the unmasked texts,
                for ITC and ITM.
            pixel_values (`torch.FloatTensor` of shape `(B, 3, H, W)`).
            image_id (`torch.LongTensor` of shape `(B,)`, *optional*): pairs sharing an id are ITC positives of each
                other (unless `itc_targets` are given) and never ITM negatives.
            itc_targets (`torch.FloatTensor` of shape `(B, B)`, *optional*): soft multi-positive targets of the image
                anchors (rows sum to 1), e.g. with COSMO's converted false negatives.
            itc_targets_t2i (`torch.FloatTensor` of shape `(B, B)`, *optional*): the text anchors' targets; by default
                the row-normalised transpose of `itc_targets`.
            itc_smoothing (`float`, *optional*): S-ITC's ε for this step (`config.itc_smoothing` by default; COSMO's
                first epoch uses 0).
            mlm_input_ids, mlm_labels (`torch.LongTensor` of shape `(R_mlm, L)`, *optional*): masked texts and targets
                (-100 at unmasked positions). Rows beyond B (COSMO's extra rows of converted pairs) need
                `mlm_image_index` and `mlm_attention_mask`.
            mlm_attention_mask (`(R_mlm, L)`, *optional*): defaults to `attention_mask`.
            mlm_image_index (`torch.LongTensor` of shape `(R_mlm,)`, *optional*): the image of each MLM row; row r is
                conditioned on image r by default.
            itm_negative_pairs (`torch.LongTensor` of shape `(N, 2)`, *optional*): `(image row, text row)` of the ITM
                negatives, replacing the in-batch hard negatives (`config.hard_negative_mode`).
            extra_itm_pairs (`torch.LongTensor` of shape `(E, 2)`, *optional*): extra ITM rows, e.g. mined false
                negatives converted to positives, with
            extra_itm_labels (`torch.LongTensor` of shape `(E,)`, *optional*): their labels (1 by default).
            itm_pair_selector (`Callable[[dict], dict]`, *optional*): a trainer's miner, called with this forward's ITC
                outputs (`logits_per_image`, `logits_per_text`, `image_embeds`, `text_embeds`, ...) before the fusion
                passes; the arguments it returns (any of `itm_negative_pairs`, `extra_itm_pairs`, `extra_itm_labels`,
                `itc_targets`, `itc_targets_t2i`, `mlm_input_ids`, `mlm_labels`, `mlm_attention_mask`,
                `mlm_image_index`) replace the given ones. COSMO's connection mining chooses the ITM pairs from the
                similarities of the same forward this way, in the one forward a data-parallel wrapper sees.
            return_loss (`bool`, defaults to `True`): compute ITM, MLM and the loss; `False` returns the ITC outputs.
            interpolate_pos_encoding (`bool`): accept another image resolution.
            return_dict (`bool`, *optional*): return a tuple when `False`.

        Returns:
            [`CosmoForPreTrainingOutput`].
        """
        outputs = self._contrastive(input_ids, pixel_values, attention_mask, token_type_ids, None,
                                    interpolate_pos_encoding)
        terms = {}
        if return_loss:
            mining = dict(itc_targets=itc_targets, itc_targets_t2i=itc_targets_t2i, mlm_input_ids=mlm_input_ids,
                          mlm_labels=mlm_labels, mlm_attention_mask=mlm_attention_mask,
                          mlm_image_index=mlm_image_index, itm_negative_pairs=itm_negative_pairs,
                          extra_itm_pairs=extra_itm_pairs, extra_itm_labels=extra_itm_labels)
            if itm_pair_selector is not None:
                chosen = itm_pair_selector(outputs)
                unknown = set(chosen) - set(mining)
                if unknown:
                    raise ValueError(f"itm_pair_selector returned unknown arguments {sorted(unknown)}")
                mining.update(chosen)
            terms = pretraining_step(self, outputs, attention_mask=attention_mask, image_id=image_id,
                                     itc_smoothing=itc_smoothing, **mining)
        output = CosmoForPreTrainingOutput(**outputs, **terms)
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        return output if return_dict else output.to_tuple()


__all__ = ["CosmoForImageTextRetrieval", "CosmoForPreTraining", "CosmoModel"]

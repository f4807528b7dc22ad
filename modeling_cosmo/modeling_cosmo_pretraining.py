"""The local pre-training step of COSMO: `loss = itc + itm + mlm` over one batch (arXiv 2312.06112; ALBEF §3.2).

* ITC (COSMO §S-ITC): soft cross-entropy of both directions over the in-batch similarities, targets
  `(1 - ε) y + ε / B` with y the row-normalised multi-positive targets (the identity, pairs sharing an `image_id`,
  or the trainer's `itc_targets`, e.g. with COSMO's converted false negatives).
* ITM (GRIT-VLP arXiv 2208.04060 §hard-negative ITM, as COSMO): the B positives (image i, text i), for every text the
  hardest in-batch image and for every image the hardest text (`select_hard_negatives` on the ITC similarities: diagonal
  and same-`image_id` candidates excluded; `argmax`, or ALBEF's `sample`), and any extra rows; one cross-entropy over
  all rows.
* MLM (BERT's, conditioned on the image through all layers): token mean at the masked positions of `mlm_input_ids`,
  the masking done outside the model by `transformers.DataCollatorForLanguageModeling`.

Every image-conditioned pass (the positive and negative ITM rows, the MLM rows) attends to the same B images: their
cross-attention keys and values are computed once per image and gathered per row, instead of once per row as in the
official code (about 14% of a ViT-B/16 + BERT-base training forward).
"""

from __future__ import annotations

import torch

from .loss_cosmo import itc_targets_from_ids, itm_loss, mlm_loss, select_hard_negatives


def hard_negative_pairs(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    image_id: torch.Tensor | None = None,
    mode: str = "argmax",
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """The 2B in-batch ITM hard negatives as `(image row, text row)` pairs (GRIT-VLP §hard-negative ITM, ALBEF §3.2).

    Args:
        logits_per_image: `(B, B)` image-anchored ITC similarities.
        logits_per_text: `(B, B)` text-anchored ITC similarities.
        image_id: `(B,)` image ids; candidates sharing the anchor's id are never negatives.
        mode: `"argmax"` (the hardest) or `"sample"` (from the softmax).
        generator: random generator for `"sample"`.

    Returns:
        `(N, 2)` pairs, N <= 2B: first the hardest image of every text, then the hardest text of every image; anchors
        without any valid candidate (e.g. all rows of one image) contribute no row.
    """
    batch = logits_per_text.shape[0]
    rows = torch.arange(batch, device=logits_per_text.device)
    image_for_text = select_hard_negatives(logits_per_text, image_id, mode=mode, generator=generator)[:, 0]  # (B,)
    text_for_image = select_hard_negatives(logits_per_image, image_id, mode=mode, generator=generator)[:, 0]  # (B,)
    pairs = torch.cat([torch.stack([image_for_text, rows], 1), torch.stack([rows, text_for_image], 1)])  # (2B, 2)
    return pairs[(pairs >= 0).all(1)]


def pretraining_step(
    model,
    outputs: dict,
    *,
    attention_mask: torch.Tensor | None,
    image_id: torch.Tensor | None = None,
    itc_targets: torch.Tensor | None = None,
    itc_targets_t2i: torch.Tensor | None = None,
    itc_smoothing: float | None = None,
    mlm_input_ids: torch.Tensor | None = None,
    mlm_labels: torch.Tensor | None = None,
    mlm_attention_mask: torch.Tensor | None = None,
    mlm_image_index: torch.Tensor | None = None,
    itm_negative_pairs: torch.Tensor | None = None,
    extra_itm_pairs: torch.Tensor | None = None,
    extra_itm_labels: torch.Tensor | None = None,
) -> dict:
    """ITC, ITM and MLM of one batch, from the encoder outputs of `CosmoForPreTraining._contrastive`.

    Args:
        model: the `CosmoForPreTraining`.
        outputs: its ITC outputs (embeddings, similarities, encoder states) for B pairs.
        attention_mask: `(B, L)` padding mask of the texts.
        Other arguments: as in `CosmoForPreTraining.forward`.

    Returns:
        A dict of `CosmoForPreTrainingOutput` fields: `loss`, `itc_loss`, `itm_loss`, `mlm_loss` (`None` without
        MLM inputs), `itm_logits`, `itm_labels`, `itm_pairs`.
    """
    image_states = outputs["vision_model_output"].last_hidden_state  # (B, 1 + N, D_img)
    text_states = outputs["text_model_output"].last_hidden_state  # (B, L, D)
    batch = text_states.shape[0]
    if image_states.shape[0] != batch:
        raise ValueError(f"pre-training pairs image i with text i: got {image_states.shape[0]} images, {batch} texts")
    device = text_states.device

    # ITC --------------------------------------------------------------------------------------------------------------
    if itc_targets is None and itc_targets_t2i is None and image_id is not None and model.config.itc_loss != "hn_nce":
        itc_targets = itc_targets_from_ids(image_id.to(device))  # same-image pairs are positives (ALBEF's idx rule)
    # HN-NCE has one positive per row: `image_id` still keeps same-image pairs out of the ITM negatives below.
    itc = model._itc_loss(outputs, itc_targets, itc_targets_t2i, itc_smoothing)

    # ITM --------------------------------------------------------------------------------------------------------------
    rows = torch.arange(batch, device=device)
    if itm_negative_pairs is None:
        itm_negative_pairs = hard_negative_pairs(
            outputs["logits_per_image"], outputs["logits_per_text"],
            None if image_id is None else image_id.to(device), model.config.hard_negative_mode,
        )
    pair_groups = [torch.stack([rows, rows], 1), itm_negative_pairs.to(device).long()]
    label_groups = [torch.ones(batch, dtype=torch.long, device=device),
                    torch.zeros(itm_negative_pairs.shape[0], dtype=torch.long, device=device)]
    if extra_itm_pairs is not None:
        pair_groups.append(extra_itm_pairs.to(device).long())
        label_groups.append(torch.ones(extra_itm_pairs.shape[0], dtype=torch.long, device=device)
                            if extra_itm_labels is None else extra_itm_labels.to(device).long())
    itm_pairs = torch.cat(pair_groups)  # (R, 2) (image row, text row)
    itm_labels = torch.cat(label_groups)  # (R,)
    cache = model.precompute_cross_attention(image_states)  # once per image, shared by ITM and MLM rows
    itm_logits = model.itm_logits(text_states, attention_mask, pairs=itm_pairs, cross_attention_cache=cache)
    itm = itm_loss(itm_logits, itm_labels)

    # MLM --------------------------------------------------------------------------------------------------------------
    mlm = None
    if mlm_input_ids is not None:
        if mlm_labels is None:
            raise ValueError("mlm_input_ids without mlm_labels")
        num_rows = mlm_input_ids.shape[0]
        if num_rows != batch and (mlm_image_index is None or mlm_attention_mask is None):
            raise ValueError(f"{num_rows} MLM rows for {batch} pairs: pass mlm_image_index and mlm_attention_mask")
        mlm_image_index = rows if mlm_image_index is None else mlm_image_index.to(device).long()
        mlm_attention_mask = attention_mask if mlm_attention_mask is None else mlm_attention_mask
        mlm_labels = mlm_labels.to(device)
        positions = mlm_labels != -100  # (R_mlm, L); the vocabulary projection runs at these positions only
        logits = model.mlm_logits(mlm_input_ids, mlm_attention_mask, cross_attention_cache=cache,
                                  image_index=mlm_image_index, positions=positions)  # (M, V)
        mlm = mlm_loss(logits, mlm_labels[positions])

    loss = itc + itm + (mlm if mlm is not None else 0.0)
    return {
        "loss": loss,
        "itc_loss": itc,
        "itm_loss": itm,
        "mlm_loss": mlm,
        "itm_logits": itm_logits,
        "itm_labels": itm_labels,
        "itm_pairs": itm_pairs,
    }


__all__ = ["hard_negative_pairs", "pretraining_step"]

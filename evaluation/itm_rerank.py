"""ITM re-ranking of retrieval candidates for ALBEF-family models (COSMO, arXiv 2312.06112; ALBEF arXiv 2107.07651).

ALBEF-style retrieval ranks every candidate by the contrastive (ITC) similarity, then re-scores the top k of each
query (k = 256 on COCO, 128 on Flickr30K) with the image-text matching head on the fusion encoder, whose input is an
(image, text) pair. Scored naively, every pair runs the fusion encoder on its own and recomputes the image's
cross-attention keys and values. `ITMRescorer` scores a list of pairs with each needed image processed and encoded
once, each needed text tokenised and encoded once (the text layers are unimodal), the pairs grouped by image and each
image's cross-attention keys and values computed once for all its texts.

The model is duck-typed: it needs `encode_image(pixel_values)`, `encode_text(input_ids, attention_mask)`,
`precompute_cross_attention(image_states)` and `itm_logits(text_states, attention_mask, image_states,
cross_attention_cache=...)`, as `modeling_cosmo.CosmoForImageTextRetrieval` (and `CosmoForPreTraining`) provide.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image


class ITMRescorer:
    """ITM match scores of (image, text) pairs, each image and text encoded once, keys/values cached per image.

    Args:
        model: a COSMO retrieval model (see the module docstring), in eval mode on its device.
        tokenizer: the model's BERT tokenizer.
        image_processor: the model's image processor (`pixel_values` out).
        batch_size: images per image-encoder batch, texts per text-encoder batch, and texts (or pairs) per fusion
            batch.
        use_cache: group pairs by image and reuse each image's cross-attention keys/values (default). `False` runs the
            plain fusion forward per batch of pairs (transformers' BERT cross-attention, keys and values recomputed
            for every pair), for benchmarking and checking; the scores are the same.
        max_length: text truncation length (ALBEF's retrieval evaluation: 30 tokens).
        score: `"logit"` returns the ITM head's match logit, `itm_logits[:, 1]` (what ALBEF and COSMO re-rank by);
            `"probability"` returns `softmax(itm_logits)[:, 1]`.

    Memory: the encoded texts are kept for the whole call (`num_texts x L x D`); images are encoded in batches of
    `batch_size` and dropped after their pairs are scored.

    Example (`model` a `CosmoForImageTextRetrieval`, `images` PIL images, `captions` strings)::

        rescorer = ITMRescorer(model, tokenizer, image_processor, batch_size=64)
        scores = rescorer(images, captions, torch.tensor([[0, 3], [0, 5], [2, 3]]))  # (3,) ITM logits
    """

    def __init__(
        self,
        model,
        tokenizer,
        image_processor,
        *,
        batch_size: int = 64,
        use_cache: bool = True,
        max_length: int | None = 30,
        score: str = "logit",
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if score not in ("logit", "probability"):
            raise ValueError(f"score must be 'logit' or 'probability', got {score!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.max_length = max_length
        self.score = score

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """All texts tokenised to one common length and encoded once: `(T, L, D)` states, `(T, L)` mask."""
        tokens = self.tokenizer(texts, padding="longest", truncation=self.max_length is not None,
                                max_length=self.max_length, return_tensors="pt")
        input_ids, attention_mask = tokens["input_ids"].to(self._device), tokens["attention_mask"].to(self._device)
        states = [self.model.encode_text(input_ids[i : i + self.batch_size], attention_mask[i : i + self.batch_size])
                  for i in range(0, len(texts), self.batch_size)]
        return torch.cat(states), attention_mask

    def _encode_images(self, images: list[Image.Image]) -> torch.Tensor:
        """`(I, 1 + N, D_img)` image encoder states of a batch of images (each processed once)."""
        pixel_values = self.image_processor(images=[image.convert("RGB") for image in images],
                                            return_tensors="pt")["pixel_values"]
        return self.model.encode_image(pixel_values.to(self._device, self._dtype))

    def _match_scores(self, itm_logits: torch.Tensor) -> torch.Tensor:
        itm_logits = itm_logits.float()
        return itm_logits[:, 1] if self.score == "logit" else itm_logits.softmax(-1)[:, 1]

    @torch.no_grad()
    def __call__(self, images: Sequence[Image.Image], texts: Sequence[str], pairs: torch.LongTensor) -> torch.Tensor:
        """Score pairs.

        Args:
            images: the images (indexed by the first column of `pairs`; only the needed ones are read, once each).
            texts: the texts (indexed by the second column).
            pairs: `(P, 2)` LongTensor of `(image position, text position)`; repeats allowed.

        Returns:
            `(P,)` float32 ITM match scores (on the CPU), in the order of `pairs`.
        """
        pairs = torch.as_tensor(pairs, dtype=torch.long).cpu()
        if pairs.dim() != 2 or pairs.shape[1] != 2:
            raise ValueError(f"pairs must have shape (P, 2), got {tuple(pairs.shape)}")
        scores = torch.empty(pairs.shape[0], dtype=torch.float32)
        if pairs.shape[0] == 0:
            return scores
        for column, items, name in ((0, images, "image"), (1, texts, "text")):
            low, high = int(pairs[:, column].min()), int(pairs[:, column].max())
            if low < 0 or high >= len(items):
                raise IndexError(f"{name} positions must be in [0, {len(items)}), got [{low}, {high}]")

        text_positions, text_rows = pairs[:, 1].unique(return_inverse=True)  # (T,), (P,) row of each pair's text
        text_states, text_mask = self._encode_texts([texts[int(i)] for i in text_positions])
        image_positions, image_rows = pairs[:, 0].unique(return_inverse=True)  # (I,), (P,)
        order = torch.argsort(image_rows, stable=True)  # pairs grouped by image
        counts = torch.bincount(image_rows, minlength=len(image_positions)).tolist()
        starts = [0]
        for count in counts:
            starts.append(starts[-1] + count)

        for first in range(0, len(image_positions), self.batch_size):
            block = range(first, min(first + self.batch_size, len(image_positions)))
            image_states = self._encode_images([images[int(image_positions[i])] for i in block])  # (b, 1 + N, D_img)
            cache = self.model.precompute_cross_attention(image_states) if self.use_cache else None
            if self.use_cache:
                for offset, image in enumerate(block):
                    own = cache.select(slice(offset, offset + 1))  # this image's keys and values, for all its texts
                    members = order[starts[image] : starts[image + 1]]  # pair indices of this image
                    for chunk in members.split(self.batch_size):
                        rows = text_rows[chunk].to(self._device)
                        logits = self.model.itm_logits(text_states[rows], text_mask[rows], cross_attention_cache=own)
                        scores[chunk] = self._match_scores(logits).cpu()
            else:
                members = order[starts[block.start] : starts[block.stop]]
                for chunk in members.split(self.batch_size):
                    rows = text_rows[chunk].to(self._device)
                    local = (image_rows[chunk] - block.start).to(self._device)  # image row within this block
                    logits = self.model.itm_logits(text_states[rows], text_mask[rows], image_states[local])
                    scores[chunk] = self._match_scores(logits).cpu()
        return scores


__all__ = ["ITMRescorer"]

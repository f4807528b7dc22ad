"""Inputs of the COSMO models: the image processor and a collator that adds the MLM inputs.

* Images: ALBEF's evaluation transform (arXiv 2107.07651; COSMO arXiv 2312.06112, §implementation details, keeps it): a
  bicubic resize of the whole image to 256 x 256 (no crop), then normalisation with OpenAI CLIP's mean and standard
  deviation. `cosmo_image_processor` returns a transformers `ViTImageProcessor` doing exactly that; training
  augmentations (random resized crop, flip, RandAugment) belong to the data pipeline.
* Texts: BERT's uncased WordPiece tokenizer; pre-training captions are truncated to 25 tokens
  (`CosmoDataCollator(max_length=25)`).
* MLM: `CosmoDataCollator` masks a copy of every text with `transformers.DataCollatorForLanguageModeling`
  (`mlm_probability=0.5` as in GRIT-VLP and COSMO; of the selected tokens 80% become `[MASK]`, 10% a random token,
  10% stay), and names the result `mlm_input_ids` / `mlm_labels`, the unmasked `input_ids` staying for ITC and ITM.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling, PreTrainedTokenizerBase, ViTImageProcessor
from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling


def cosmo_image_processor(image_size: int = 256) -> ViTImageProcessor:
    """The image processor of COSMO / ALBEF evaluation: bicubic resize to `image_size`², rescale, CLIP normalisation.

    Args:
        image_size: side of the square input (256 for pre-training; ALBEF fine-tunes retrieval at 384).

    Returns:
        A `ViTImageProcessor` (saved with `save_pretrained`, loaded by `AutoImageProcessor`).
    """
    return ViTImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BICUBIC,
        do_rescale=True,
        do_normalize=True,
        image_mean=list(OPENAI_CLIP_MEAN),
        image_std=list(OPENAI_CLIP_STD),
    )


class CosmoDataCollator:
    """Batch COSMO pre-training examples: pad the texts, stack the images, add masked copies for MLM.

    Args:
        tokenizer: a BERT tokenizer (`[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`).
        mlm_probability: share of the tokens selected for MLM (special tokens and padding are never selected).
        max_length: truncation length when examples carry raw `text` (COSMO's pre-training captions: 25).
        seed: seed of the masking generator (`DataCollatorForLanguageModeling`'s; per-worker seeds are derived).

    Examples are dicts with either `input_ids` (and optionally `attention_mask`) or `text`, and optionally
    `pixel_values` (`(3, H, W)` tensors) and `image_id` (ints). The batch holds `input_ids`, `attention_mask`,
    `mlm_input_ids`, `mlm_labels` (-100 where not masked) and, when present, `pixel_values` and `image_id`.

    Example:
        >>> from transformers import BertTokenizer
        >>> vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "dog", "on", "mat"]
        >>> tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
        >>> collator = CosmoDataCollator(tokenizer, seed=0)
        >>> batch = collator([{"text": "a cat on a mat"}, {"text": "a dog"}])
        >>> sorted(batch), tuple(batch["mlm_labels"].shape)
        (['attention_mask', 'input_ids', 'mlm_input_ids', 'mlm_labels'], (2, 7))
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mlm_probability: float = 0.5,
        max_length: int | None = 25,
        seed: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability, seed=seed)

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("CosmoDataCollator got an empty list of examples")
        if "text" in examples[0]:
            texts = [example["text"] for example in examples]
            bad = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
            if bad:
                raise ValueError(f"examples {bad[:10]} have an empty or non-string `text`")
            text = self.tokenizer(texts, padding=True, truncation=self.max_length is not None,
                                  max_length=self.max_length, return_tensors="pt")
        else:
            keys = ("input_ids", "attention_mask")
            features = [{k: example[k] for k in keys if k in example} for example in examples]
            text = self.tokenizer.pad(features, padding=True, return_tensors="pt")
        batch = {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]}
        masked = self.masker([{"input_ids": row} for row in batch["input_ids"].tolist()])
        batch["mlm_input_ids"], batch["mlm_labels"] = masked["input_ids"], masked["labels"]
        if "pixel_values" in examples[0]:
            batch["pixel_values"] = torch.stack([torch.as_tensor(example["pixel_values"]) for example in examples])
        if "image_id" in examples[0]:
            batch["image_id"] = torch.tensor([int(example["image_id"]) for example in examples], dtype=torch.long)
        return batch


__all__ = ["CosmoDataCollator", "cosmo_image_processor"]

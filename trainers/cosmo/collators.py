"""COSMO's additions to the image-text batches: masked copies of the captions for MLM, and the training crop.

The masking is transformers' `DataCollatorForLanguageModeling` (ALBEF and COSMO: probability 0.5, 80% `[MASK]`, 10% a
random token, 10% unchanged), applied row by row with a generator seeded by the row, the epoch and a salt, so that a
row is masked the same way whatever batch, process or data-loader worker it lands in, and a resumed run masks what
the uninterrupted run masked.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from transformers import DataCollatorForLanguageModeling

__all__ = ["MaskedCaptions", "cosmo_train_transform", "mask_rows"]


def _row_seed(*parts: Any) -> int:
    digest = hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % (2**63)


def mask_rows(masker: DataCollatorForLanguageModeling, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              seeds: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask every row of `input_ids` with `masker.torch_mask_tokens`, row r drawn from a generator seeded `seeds[r]`.

    Special tokens (`[CLS]`, `[SEP]`) and padding are never selected.

    Returns:
        `(masked input ids, labels)`, both `(R, L)`; labels are -100 where nothing is predicted.
    """
    tokenizer = masker.tokenizer
    special = torch.isin(input_ids, torch.tensor(tokenizer.all_special_ids, device=input_ids.device))
    no_mask = special | (attention_mask == 0)
    masked, labels = [], []
    for row in range(input_ids.shape[0]):
        masker.generator = torch.Generator().manual_seed(int(seeds[row]))
        ids, target = masker.torch_mask_tokens(input_ids[row:row + 1].clone().cpu(),
                                               special_tokens_mask=no_mask[row:row + 1].cpu())
        masked.append(ids)
        labels.append(target)
    masker.generator = None
    return torch.cat(masked).to(input_ids.device), torch.cat(labels).to(input_ids.device)


class MaskedCaptions:
    """Collator add-on: `mlm_input_ids` / `mlm_labels`, masked copies of the batch's captions.

    Args:
        tokenizer: the BERT tokenizer of the captions.
        mlm_probability: share of the (non-special) tokens to predict (COSMO: 0.5).
        seed: base seed; each row's mask is seeded by it, the epoch (`set_epoch`) and the row's `index` (else its
            token ids).
    """

    def __init__(self, tokenizer, mlm_probability: float = 0.5, seed: int = 0):
        self.masker = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=mlm_probability)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """A new mask for every row in a new epoch (`CosmoTrainer` calls it)."""
        self.epoch = epoch

    def row_seeds(self, batch: dict[str, Any], salt: str = "caption") -> list[int]:
        keys = batch["index"].tolist() if "index" in batch else [ids.tolist() for ids in batch["input_ids"]]
        return [_row_seed(self.seed, self.epoch, salt, key) for key in keys]

    def __call__(self, batch: dict[str, Any], rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        masked, labels = mask_rows(self.masker, batch["input_ids"], batch["attention_mask"], self.row_seeds(batch))
        return {"mlm_input_ids": masked, "mlm_labels": labels}


def cosmo_train_transform(image_size: int,
                          scale: tuple[float, float] = (0.2, 1.0)) -> Callable[[Image.Image], Image.Image]:
    """ALBEF's pre-training crop, which GRIT-VLP and COSMO keep: `RandomResizedCrop(image_size, scale)`, bicubic.

    timm's implementation, which draws from Python's `random` (so `ImageTextCollator` can seed it per pair). ALBEF
    also flips and applies RandAugment; these are left out (a flip changes "left" and "right" in a caption).
    """
    from timm.data.transforms import RandomResizedCropAndInterpolation

    return RandomResizedCropAndInterpolation(image_size, scale=scale, interpolation="bicubic")

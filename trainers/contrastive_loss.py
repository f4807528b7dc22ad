"""A contrastive loss over the global batch: gather, local rows, targets, scaling — for any row loss.

Image-text contrastive recipes score every anchor against every candidate of the **global** batch (CLIP, Radford et
al. 2021; DiHT's HN-NCE, arXiv 2301.02280; ALBEF/COSMO's ITC, arXiv 2107.07651 and arXiv 2312.06112). They differ only in the loss of one row of logits given its target. `GlobalBatchContrastiveLoss` owns the
rest: it gathers the embeddings of every process with gradient (`all_gather_with_grad`), scores this process's b
anchors in both directions against all B_global candidates, in blocks of `chunk_size` anchors recomputed in
backward if asked, and returns `world_size / B_global` times the sum of its rows' losses, so that the mean over
processes which DistributedDataParallel applies to gradients (and the Trainer to logged losses) is the loss of the
global batch, also when processes hold different numbers of rows.

Targets per direction are one global column per anchor (the default is the anchor's own pair) or a soft
`(b, B_global)` matrix (multi-positive and smoothed targets, as COSMO's S-ITC), or a callable that builds either
from the layout `(offset, B_global)` once it is known.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .distributed import all_gather_with_grad, rank_and_world_size

__all__ = ["GlobalBatchContrastiveLoss", "RowLoss", "Targets", "cross_entropy_rows", "multi_positive_targets"]

# A row loss maps float32 logits `(c, N)` and targets (`(c,)` column indices or `(c, N)` soft rows) to `(c,)` losses.
RowLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Targets of one direction: None (each anchor's own pair), indices, a soft matrix, or a builder from the layout.
Targets = torch.Tensor | Callable[[int, int], torch.Tensor] | None


def cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """InfoNCE per row: cross-entropy of `logits` `(c, N)` against column indices `(c,)` or soft rows `(c, N)`.

    With soft rows it is `-sum_j y_j log softmax(s)_j`, the ITC of ALBEF (arXiv 2107.07651) with its
    (multi-positive, smoothed) targets.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0]])
        >>> cross_entropy_rows(logits, torch.tensor([0])), cross_entropy_rows(logits, torch.tensor([[1.0, 0.0]]))
        (tensor([0.1269]), tensor([0.1269]))
    """
    if targets.dtype in (torch.int64, torch.int32):
        return F.cross_entropy(logits, targets, reduction="none")
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1)


def multi_positive_targets(positives: torch.Tensor, num_candidates: int, *, smoothing: float = 0.0) -> torch.Tensor:
    """Row-normalised multi-hot targets, optionally smoothed: `(1 - ε) y + ε / N`.

    COSMO/MAFA (arXiv 2312.06112, smoothed ITC) turn mined false negatives into extra positives (the row is renormalised,
    so one extra positive gives 0.5/0.5) and smooth every row uniformly over the N candidates (S-ITC, ε = 0.5).

    Args:
        positives: `(c, N)` boolean (or 0/1) matrix, at least one positive per row.
        num_candidates: N (checked against `positives`).
        smoothing: ε in [0, 1].

    Returns:
        `(c, N)` float32 targets whose rows sum to 1.

    Example:
        >>> multi_positive_targets(torch.tensor([[True, True, False, False]]), 4, smoothing=0.5)
        tensor([[0.3750, 0.3750, 0.1250, 0.1250]])
    """
    if positives.shape[-1] != num_candidates:
        raise ValueError(f"positives have {positives.shape[-1]} columns for {num_candidates} candidates")
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing must be in [0, 1], got {smoothing}")
    hits = positives.float()
    counts = hits.sum(dim=-1, keepdim=True)
    if (counts == 0).any():
        raise ValueError("every anchor needs at least one positive")
    return (1.0 - smoothing) * hits / counts + smoothing / num_candidates


class GlobalBatchContrastiveLoss(nn.Module):
    """A symmetric contrastive loss of this process's anchors against every process's candidates.

    Args:
        row_loss: the loss of a block of rows given its targets (`cross_entropy_rows` for InfoNCE/ITC; DiHT's
            `HNNCELoss` plugs in HN-NCE). Logits reach it in float32.
        chunk_size: anchors per block; blocks are recomputed in backward (activation checkpointing), so the
            working memory is O(chunk_size * B_global). `None`: one block.
        gather: score against the global batch (True) or against this process's batch only (the original ALBEF
            and MAFA code's per-process ITC).
        detach_candidates: each direction's gradient flows through its anchors only, the candidates being constants
            (the official ALBEF/GRIT-VLP/MAFA code's `image_feat @ text_feat.detach()`).

    Example:
        >>> loss = GlobalBatchContrastiveLoss(cross_entropy_rows)
        >>> images = F.normalize(torch.randn(4, 8), dim=-1)
        >>> texts = F.normalize(torch.randn(4, 8), dim=-1)
        >>> bool(loss(images, texts, 10.0) > 0)
        True
    """

    def __init__(self, row_loss: RowLoss = cross_entropy_rows, *, chunk_size: int | None = None, gather: bool = True,
                 detach_candidates: bool = False):
        super().__init__()
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive number of rows or None, got {chunk_size}")
        self.row_loss, self.chunk_size, self.gather = row_loss, chunk_size, gather
        self.detach_candidates = detach_candidates

    def get_config_dict(self) -> dict:
        """The settings a model card reports (sentence-transformers' convention)."""
        return {"row_loss": getattr(self.row_loss, "__name__", type(self.row_loss).__name__),
                "chunk_size": self.chunk_size, "gather": self.gather, "detach_candidates": self.detach_candidates}

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor | float,
                image_targets: Targets = None, text_targets: Targets = None) -> torch.Tensor:
        """Loss of this process's pairs against the candidates.

        Args:
            image_embeds: `(b, D)` L2-normalised image embeddings of this process; row i pairs with text row i.
            text_embeds: `(b, D)` L2-normalised text embeddings.
            logit_scale: the multiplier 1/τ (float or one-element tensor; gradients flow into it).
            image_targets: targets of the image→text rows over the `B_global` texts (see the module docstring);
                `None`: each image's own text.
            text_targets: targets of the text→image rows over the `B_global` images; `None`: each text's own image.

        Returns:
            Scalar loss; averaged over processes it is the mean over the global batch of
            (image→text + text→image) / 2.
        """
        if image_embeds.shape != text_embeds.shape:
            raise ValueError(f"image_embeds {tuple(image_embeds.shape)} and text_embeds "
                             f"{tuple(text_embeds.shape)} must have the same shape")
        local = image_embeds.shape[0]
        all_images, all_texts, offset, world_size = self.gather_candidates(image_embeds, text_embeds)
        if self.detach_candidates:
            all_images, all_texts = all_images.detach(), all_texts.detach()
        num_candidates = all_images.shape[0]
        image_targets = self._targets(image_targets, offset, local, num_candidates, image_embeds.device)
        text_targets = self._targets(text_targets, offset, local, num_candidates, image_embeds.device)
        chunk = self.chunk_size or local
        total = image_embeds.new_zeros((), dtype=torch.float32)
        for start in range(0, local, chunk):
            rows = slice(start, start + chunk)
            args = (image_embeds[rows], text_embeds[rows], all_images, all_texts, logit_scale, image_targets[rows],
                    text_targets[rows])
            block = (checkpoint(self._block_loss, *args, use_reentrant=False) if self.chunk_size
                     else self._block_loss(*args))
            total = total + block
        return total * (world_size / num_candidates)

    def gather_candidates(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor):
        """`(all_images, all_texts, offset, world_size)`: every process's `(B_global, D)` embeddings, gathered with
        gradient in one collective for both modalities (this process's own when `gather` is off or alone), and the
        global row of this process's first pair."""
        world_size = rank_and_world_size()[1] if self.gather else 1
        if world_size == 1:
            return image_embeds, text_embeds, 0, 1
        dim = image_embeds.shape[1]
        gathered, offset = all_gather_with_grad(torch.cat([image_embeds, text_embeds], dim=1))  # (B_global, 2D)
        return gathered[:, :dim], gathered[:, dim:], offset, world_size

    @staticmethod
    def _targets(targets: Targets, offset: int, local: int, num_candidates: int, device) -> torch.Tensor:
        if callable(targets):
            targets = targets(offset, num_candidates)
        if targets is None:
            return offset + torch.arange(local, device=device)  # (b,) the own pair of every anchor
        expected = (local,) if targets.dtype in (torch.int64, torch.int32) else (local, num_candidates)
        if tuple(targets.shape) != expected:
            raise ValueError(f"targets of shape {tuple(targets.shape)}; this process needs {expected} "
                             f"({local} anchors, {num_candidates} candidates)")
        return targets.to(device)

    def _block_loss(self, images, texts, all_images, all_texts, logit_scale, image_targets, text_targets):
        """Sum over a block of anchors of (image→text + text→image) / 2, with float32 logits."""
        with torch.autocast(images.device.type, enabled=False):
            scale = torch.as_tensor(logit_scale, device=images.device).float()
            image_to_text = scale * images.float() @ all_texts.float().t()  # (c, B_global)
            text_to_image = scale * texts.float() @ all_images.float().t()  # (c, B_global)
            both = self.row_loss(image_to_text, image_targets) + self.row_loss(text_to_image, text_targets)
        return both.sum() / 2

"""The DiHT training losses over the global batch: HN-NCE across processes, and concept distillation.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280 (PAPERS.md §1.2 and §1.4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from modeling_diht.loss_diht import hn_nce_loss, hn_nce_per_row

from .distributed import all_gather_with_grad, rank_and_world_size

__all__ = ["HNNCELoss", "concept_distillation_loss"]


class HNNCELoss(nn.Module):
    """HN-NCE over the global batch: this process's anchors against every process's candidates.

    In one process it is `modeling_diht.hn_nce_loss` on the batch. In a `torch.distributed` run it gathers the image
    and text embeddings of all processes with gradient (`all_gather_with_grad`), and scores only this process's b
    anchors, in both directions, against all B_global candidates: the hard-negative weights and the denominators run
    over the B_global - 1 negatives, as the paper's formula asks for the batch it trains on. Each process returns
    `world_size / B_global` times the sum of its rows' losses, so the mean over processes that
    DistributedDataParallel applies to gradients (and the Trainer to logged losses) is the global-batch loss, also
    when processes hold different numbers of rows; encoders wrapped in DDP receive exactly the gradients of training
    the global batch in one process.

    Args:
        alpha: weight of the positive in the denominator (0 = decoupled contrastive loss); not confirmed by the paper.
        beta: hardness of the negative weighting (0 = uniform, InfoNCE when alpha = 1); not confirmed by the paper.
        chunk_size: anchors per block. One process: the tiled HN-NCE with O(B * chunk_size) memory. Several
            processes: the `(b, B_global)` logits of this process are computed `chunk_size` rows at a time and
            recomputed in backward (activation checkpointing). `None`: dense.
        detach_weights: treat the hard-negative weights as constants (not settled by the paper).

    Example:
        >>> loss = HNNCELoss(alpha=1.0, beta=0.5)
        >>> images = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
        >>> texts = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
        >>> loss(images, texts, torch.tensor(10.0)).shape
        torch.Size([])
    """

    def __init__(
        self, alpha: float = 1.0, beta: float = 0.5, chunk_size: int | None = None, detach_weights: bool = False
    ):
        super().__init__()
        self.alpha, self.beta, self.chunk_size, self.detach_weights = alpha, beta, chunk_size, detach_weights

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, chunk_size={self.chunk_size}, "
                f"detach_weights={self.detach_weights}")

    def forward(
        self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor | float
    ) -> torch.Tensor:
        """Loss of this process's pairs against the global batch.

        Args:
            image_embeds: `(b, D)` L2-normalised image embeddings of this process; row i pairs with text row i.
            text_embeds: `(b, D)` L2-normalised text embeddings.
            logit_scale: `1/tau`, already exponentiated (float or one-element tensor; gradients flow into it).

        Returns:
            Scalar loss; averaged over processes it is HN-NCE of the global batch.
        """
        _, world_size = rank_and_world_size()
        if world_size == 1:
            return hn_nce_loss(image_embeds, text_embeds, logit_scale, self.alpha, self.beta,
                               detach_weights=self.detach_weights, chunk_size=self.chunk_size)
        if image_embeds.shape != text_embeds.shape:
            raise ValueError(f"image_embeds {tuple(image_embeds.shape)} and text_embeds "
                             f"{tuple(text_embeds.shape)} must have the same shape.")
        dim = image_embeds.shape[1]
        # One collective for both modalities: (b, 2D) -> (B_global, 2D).
        gathered, offset = all_gather_with_grad(torch.cat([image_embeds, text_embeds], dim=1))
        all_images, all_texts = gathered[:, :dim], gathered[:, dim:]  # (B_global, D) each
        local = image_embeds.shape[0]
        positives = offset + torch.arange(local, device=image_embeds.device)  # (b,) columns of own pairs
        chunk = self.chunk_size or local
        total = image_embeds.new_zeros((), dtype=torch.float32)
        for start in range(0, local, chunk):
            rows = slice(start, start + chunk)
            args = (image_embeds[rows], text_embeds[rows], all_images, all_texts, logit_scale, positives[rows])
            block = checkpoint(self._block_loss, *args, use_reentrant=False) if self.chunk_size else \
                self._block_loss(*args)
            total = total + block
        return total * (world_size / gathered.shape[0])

    def _block_loss(self, images, texts, all_images, all_texts, logit_scale, positives) -> torch.Tensor:
        """Sum over a block of anchors of (image→text + text→image) / 2, with float32 logits (as `hn_nce_loss`)."""
        with torch.autocast(images.device.type, enabled=False):
            scale = torch.as_tensor(logit_scale, device=images.device).float()
            image_to_text = scale * images.float() @ all_texts.float().t()  # (c, B_global)
            text_to_image = scale * texts.float() @ all_images.float().t()  # (c, B_global)
            weights = dict(alpha=self.alpha, beta=self.beta, detach_weights=self.detach_weights)
            both = hn_nce_per_row(image_to_text, positives, **weights) + hn_nce_per_row(
                text_to_image, positives, **weights)
        return both.sum() / 2


def concept_distillation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label loss of the concept heads against a frozen teacher's per-image concept targets.

    DiHT (arXiv 2301.02280, §3.2; PAPERS.md §1.4) trains linear heads on the image tower to predict the concepts a
    strong teacher assigns to each image, with a multi-label loss. The paper does not publish which; this is the
    binary cross-entropy of every concept, averaged over concepts and images. `targets` are 1 at the teacher's top-k
    concepts (hard) or the teacher's probabilities there (soft), 0 elsewhere.

    Args:
        logits: `(B, K)` concept-head logits.
        targets: `(B, K)` targets in [0, 1].

    Returns:
        Scalar loss (float32 for half-precision logits).

    Example:
        >>> concept_distillation_loss(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]]))
        tensor(0.6931)
    """
    if logits.shape != targets.shape:
        raise ValueError(f"concept logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape.")
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())

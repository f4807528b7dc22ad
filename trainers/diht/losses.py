"""DiHT's training losses over the global batch: HN-NCE across processes, and concept distillation.

Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280 (the hard-negative loss, HN-NCE; concept distillation, §3.2).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from modeling_diht.loss_diht import hn_nce_local_loss, hn_nce_loss, hn_nce_per_row

from ..contrastive_loss import GlobalBatchContrastiveLoss, Targets
from ..distributed import rank_and_world_size

__all__ = ["HNNCELoss", "concept_distillation_loss"]

CITATION = """@inproceedings{radenovic2023filtering,
  title     = {Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training},
  author    = {Radenovic, Filip and Dubey, Abhimanyu and Kadian, Abhishek and Mihaylov, Todor and
               Vandenhende, Simon and Patel, Yash and Wen, Yi and Ramanathan, Vignesh and Mahajan, Dhruv},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2023},
  eprint    = {2301.02280},
  archivePrefix = {arXiv}
}"""


class HNNCELoss(GlobalBatchContrastiveLoss):
    """HN-NCE over the global batch: this process's anchors against every process's candidates.

    `GlobalBatchContrastiveLoss` with HN-NCE (`modeling_diht.hn_nce_per_row`) as the row loss: the hard-negative
    weights and the denominators run over the B_global - 1 negatives, as the paper's formula asks for the batch it
    trains on, and encoders wrapped in DDP receive exactly the gradients of training the global batch in one
    process. In a single process it is `modeling_diht.hn_nce_loss`, whose tiled path keeps O(B * chunk_size) memory
    with a fused forward and backward.

    Args:
        alpha: weight of the positive in the denominator (0 = decoupled contrastive loss); not confirmed by the paper.
        beta: hardness of the negative weighting (0 = uniform, InfoNCE when alpha = 1); not confirmed by the paper.
        chunk_size: anchors per block (see `GlobalBatchContrastiveLoss`); `None`: dense.
        detach_weights: treat the hard-negative weights as constants (not settled by the paper).

    Example:
        >>> loss = HNNCELoss(alpha=1.0, beta=0.5)
        >>> images = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
        >>> texts = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
        >>> loss(images, texts, torch.tensor(10.0)).shape
        torch.Size([])
    """

    citation = CITATION

    def __init__(
        self, alpha: float = 1.0, beta: float = 0.5, chunk_size: int | None = None, detach_weights: bool = False
    ):
        super().__init__(self._hn_nce_rows, chunk_size=chunk_size)
        self.alpha, self.beta, self.detach_weights = alpha, beta, detach_weights

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, chunk_size={self.chunk_size}, "
                f"detach_weights={self.detach_weights}")

    def get_config_dict(self) -> dict:
        """The settings a model card reports: α, β, the tiling and whether the weights are detached."""
        return {"loss": "HN-NCE", "hn_nce_alpha": self.alpha, "hn_nce_beta": self.beta,
                "hn_nce_chunk_size": self.chunk_size, "hn_nce_detach_weights": self.detach_weights}

    def _hn_nce_rows(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.dtype not in (torch.int64, torch.int32):
            raise ValueError("HN-NCE has one positive per anchor: pass column indices, not soft targets")
        return hn_nce_per_row(logits, targets, alpha=self.alpha, beta=self.beta, detach_weights=self.detach_weights)

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor | float,
                image_targets: Targets = None, text_targets: Targets = None) -> torch.Tensor:
        """See `GlobalBatchContrastiveLoss.forward`; each anchor's own pair is its positive by default.

        With the own pairs as positives (the default), the loss runs on the fused kernels: `hn_nce_loss` in one
        process; across processes `hn_nce_local_loss`, which computes this process's rows of the global logits
        once for both directions and combines the columns' statistics with one all-reduce. Other targets (column
        indices of another positive) take the generic path: both directions' (b, B_global) rows in plain autograd.
        """
        if image_targets is not None or text_targets is not None:
            return super().forward(image_embeds, text_embeds, logit_scale, image_targets, text_targets)
        if (rank_and_world_size()[1] if self.gather else 1) == 1:
            return hn_nce_loss(image_embeds, text_embeds, logit_scale, self.alpha, self.beta,
                               detach_weights=self.detach_weights, chunk_size=self.chunk_size)
        if image_embeds.shape != text_embeds.shape:
            raise ValueError(f"image_embeds {tuple(image_embeds.shape)} and text_embeds "
                             f"{tuple(text_embeds.shape)} must have the same shape")
        all_images, all_texts, offset, world_size = self.gather_candidates(image_embeds, text_embeds)
        if not torch.is_tensor(logit_scale):
            logit_scale = torch.tensor(float(logit_scale), device=image_embeds.device)
        loss = hn_nce_local_loss(image_embeds, all_images.detach(), all_texts, logit_scale, offset, self.alpha,
                                 self.beta, detach_weights=self.detach_weights, chunk_size=self.chunk_size,
                                 reduce_columns=all_reduce_column_statistics)
        return loss * world_size  # the mean over processes is the global loss, as the generic path's


def all_reduce_column_statistics(col_max: torch.Tensor, col_lse: list[torch.Tensor], factors) -> tuple:
    """Combine every process's per-column statistics of its block of rows into those of all rows.

    `col_lse[k]_j = log sum_r exp(factor_k (S_rj - col_max_j))` over this process's rows r; the global max
    M_j = max over processes, and the global LSE is `log sum_p exp(col_lse_pj + factor_k (col_max_pj - M_j))`. A
    column with no negative among a process's rows (max -inf) adds nothing. Two all-reduces of B and 2B numbers.
    """
    global_max = col_max.clone()
    dist.all_reduce(global_max, op=dist.ReduceOp.MAX)
    parts = torch.stack([(lse + factor * (col_max - global_max)).exp() for factor, lse in zip(factors, col_lse)])
    dist.all_reduce(parts)  # (K, B) sums of exp relative to the global max
    return global_max, list(parts.log().unbind(0))


def concept_distillation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label loss of the concept heads against a frozen teacher's per-image concept targets.

    DiHT (arXiv 2301.02280, §3.2) trains linear heads on the image tower to predict the concepts a strong teacher
    assigns to each image, with a multi-label loss. The paper does not publish which; this is the binary
    cross-entropy of every concept, averaged over concepts and images. `targets` are 1 at the teacher's top-k
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

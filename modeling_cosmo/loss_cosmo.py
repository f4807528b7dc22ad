"""COSMO's losses as pure functions of embeddings and logits: smoothed multi-positive ITC, hard negatives, ITM, MLM.

COSMO (Byun, Kim and Moon, CVPR 2024, https://arxiv.org/abs/2312.06112) trains ALBEF (Li et al.,
https://arxiv.org/abs/2107.07651) with `loss = itc + itm + mlm` and changes two things:

* S-ITC (§S-ITC): the image-text contrastive targets are smoothed uniformly over the B in-batch candidates,
  `(1 - ε) y + ε / B`, with y the row-normalised multi-positive targets (a row with two positives holds 0.5 / 0.5);
* ECM (§ECM): the ITM hard negatives that a discriminator judges to be false negatives become positives. Mining lives
  in the trainer; the functions here accept its output (soft targets, extra positive ITM rows).

ITM (ALBEF §3.2, GRIT-VLP https://arxiv.org/abs/2208.04060, §hard-negative ITM) classifies B positives and 2B hard
negatives (for every text the hardest in-batch image, for every image the hardest text) with one cross-entropy.

Nothing here knows about processes: a trainer that gathers features computes each rank's rows against all columns
("local loss") with the same functions. The HN-NCE functions are copied from `modeling_diht/loss_diht.py` (this
folder travels alone as remote code and may not import it); `tests/cosmo` checks that the copies agree.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = [
    "hn_nce_itc_loss",
    "hn_nce_per_row",
    "itc_logits",
    "itc_targets_from_ids",
    "itm_loss",
    "mlm_loss",
    "select_hard_negatives",
    "smoothed_itc_loss",
]


def itc_logits(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor | float,
    detach_other_side: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled cosine similarities of both ITC directions.

    Args:
        image_embeds: `(B_i, E)` L2-normalised image embeddings (the image anchors of `logits_per_image`).
        text_embeds: `(B_t, E)` L2-normalised text embeddings.
        logit_scale: 1/τ, a float or a one-element tensor (gradient flows into it).
        detach_other_side: each direction's candidates are a detached copy, so the image→text loss trains only the
            image side and the text→image loss only the text side. This is what the official GRIT-VLP and MAFA code
            does (`sim_i2t = image_feat @ text_feat.detach()`), inherited from ALBEF (arXiv 2107.07651, §3.2), where
            the candidates came from the momentum encoder. The papers' loss, differentiated as written, is the default
            (`False`).

    Returns:
        `(logits_per_image (B_i, B_t), logits_per_text (B_t, B_i))`.
    """
    if detach_other_side:
        logits_per_image = logit_scale * image_embeds @ text_embeds.detach().t()  # (B_i, B_t)
        logits_per_text = logit_scale * text_embeds @ image_embeds.detach().t()  # (B_t, B_i)
    else:
        logits_per_text = logit_scale * text_embeds @ image_embeds.t()  # (B_t, B_i)
        logits_per_image = logits_per_text.t()
    return logits_per_image, logits_per_text


def itc_targets_from_ids(row_ids: torch.Tensor, column_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Multi-positive ITC targets from image ids: every candidate of the anchor's image is a positive.

    ALBEF's retrieval fine-tuning rule (arXiv 2107.07651, image-text retrieval; its official code):
    `y_ij = [id_i == id_j] / Σ_k [id_i == id_k]`, so a row with two positives holds 0.5 / 0.5 (COSMO arXiv 2312.06112,
    §ECM, normalises its converted positives the same way).

    Args:
        row_ids: `(A,)` integer image id of each anchor.
        column_ids: `(C,)` image id of each candidate; `row_ids` when omitted (the square in-batch case).

    Returns:
        `(A, C)` float targets, rows summing to 1 (a row without a positive is all zeros).
    """
    column_ids = row_ids if column_ids is None else column_ids
    positives = (row_ids.view(-1, 1) == column_ids.view(1, -1)).float()  # (A, C)
    return positives / positives.sum(1, keepdim=True).clamp_min(1.0)


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Mean over rows of `-Σ_j t_ij log softmax(logits)_ij` with `t = (1 - ε) targets + ε / C`, in float32."""
    logits = logits.float()
    targets = targets.to(logits)
    if smoothing:
        targets = (1.0 - smoothing) * targets + smoothing / logits.shape[1]  # S-ITC, uniform over all C candidates
    return -(F.log_softmax(logits, dim=1) * targets).sum(1).mean()


def smoothed_itc_loss(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    targets_i2t: Optional[torch.Tensor] = None,
    targets_t2i: Optional[torch.Tensor] = None,
    smoothing: float = 0.0,
) -> torch.Tensor:
    """S-ITC: ITC with multi-positive, uniformly smoothed soft targets, both directions (COSMO, §S-ITC).

    `L = (CE(logits_per_image, t_i2t) + CE(logits_per_text, t_t2i)) / 2` with soft cross-entropy per row and
    `t = (1 - ε) y + ε / C` (C = number of candidates in the row, the B in-batch texts or images, positives
    included). `smoothing=0` with one-hot `y` is ALBEF's ITC without momentum distillation (arXiv 2107.07651, §3.2).

    Args:
        logits_per_image: `(B_i, B_t)` scaled similarities, image anchors (see `itc_logits`).
        logits_per_text: `(B_t, B_i)` scaled similarities, text anchors.
        targets_i2t: `(B_i, B_t)` row-normalised multi-positive targets of the image anchors; the identity when
            omitted (then the logits must be square: pair i is image i with text i).
        targets_t2i: `(B_t, B_i)` targets of the text anchors. When omitted: the row-normalised transpose of
            `targets_i2t` (symmetric positives, e.g. from `itc_targets_from_ids`), or the identity. COSMO's converted
            positives are direction-specific (a text→image conversion adds a positive to that text's row only): pass
            both then.
        smoothing: ε in [0, 1]; COSMO uses 0.5 from its second epoch on.

    Returns:
        Scalar loss in float32.

    Example:
        >>> logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
        >>> round(smoothed_itc_loss(logits, logits.t()).item(), 4)  # -log(e^2 / (e^2 + 1))
        0.1269
    """
    if targets_i2t is None:
        if logits_per_image.shape[0] != logits_per_image.shape[1]:
            raise ValueError(
                f"logits of shape {tuple(logits_per_image.shape)} are not square: pass targets_i2t and targets_t2i."
            )
        targets_i2t = torch.eye(logits_per_image.shape[0], device=logits_per_image.device)
    if targets_t2i is None:
        transposed = targets_i2t.t().float()
        targets_t2i = transposed / transposed.sum(1, keepdim=True).clamp_min(torch.finfo(transposed.dtype).tiny)
    for name, targets, logits in (("targets_i2t", targets_i2t, logits_per_image),
                                  ("targets_t2i", targets_t2i, logits_per_text)):
        if targets.shape != logits.shape:
            raise ValueError(f"{name} has shape {tuple(targets.shape)}, its logits {tuple(logits.shape)}")
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"smoothing is the ε of S-ITC and must be in [0, 1], got {smoothing}")
    loss_i2t = _soft_cross_entropy(logits_per_image, targets_i2t, smoothing)
    loss_t2i = _soft_cross_entropy(logits_per_text, targets_t2i, smoothing)
    return (loss_i2t + loss_t2i) / 2


def select_hard_negatives(
    logits: torch.Tensor,
    anchor_ids: Optional[torch.Tensor] = None,
    candidate_ids: Optional[torch.Tensor] = None,
    *,
    mode: str = "argmax",
    num_negatives: int = 1,
    exclude_diagonal: bool = True,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Hard negatives for ITM: for every anchor (row) the most similar in-batch candidates (columns) that are not
    its positives.

    GRIT-VLP (arXiv 2208.04060, §hard-negative ITM) and COSMO take the hardest candidate (`mode="argmax"`;
    `num_negatives=2` gives the hardest and second-hardest, COSMO's fallback for neutral candidates, §ECM); ALBEF (arXiv
    2107.07651, §3.2) samples one from the softmax of the similarities (`mode="sample"`). Excluded are the diagonal (the
    anchor's own pair) and, when ids are given, every candidate sharing the anchor's image id, so pairs of the same
    image are never
    negatives.

    Robust where the official code is not: the choice is made on the logits, never on `softmax(logits)` with
    excluded entries zeroed, so a temperature near its 0.001 clamp (softmax weights underflowing to 0) cannot return
    the positive itself, and sampling uses the Gumbel-max trick (an exact draw from the softmax, without replacement
    for `num_negatives > 1`) instead of `torch.multinomial`, which fails on all-zero rows.

    Args:
        logits: `(A, C)` similarities (e.g. `logits_per_text` to find images for texts); detached internally.
        anchor_ids: `(A,)` image id of each anchor, optional.
        candidate_ids: `(C,)` image id of each candidate; `anchor_ids` when omitted and A == C.
        mode: `"argmax"`, `"sample"` or `"random"` (uniform among the valid candidates: plain ITM negatives).
        num_negatives: negatives per anchor, in decreasing similarity (`"argmax"`) or draw order (`"sample"`).
        exclude_diagonal: exclude column i for row i (the square in-batch case).
        generator: random generator for `"sample"`.

    Returns:
        `(A, num_negatives)` LongTensor of candidate indices; -1 where an anchor has fewer valid candidates.

    Example:
        >>> logits = torch.tensor([[5.0, 4.0, 1.0], [3.0, 9.0, 2.0], [0.0, 1.0, 7.0]])
        >>> select_hard_negatives(logits).squeeze(1).tolist()
        [1, 0, 1]
        >>> select_hard_negatives(logits, torch.tensor([0, 0, 1])).squeeze(1).tolist()  # rows 0 and 1: same image
        [2, 2, 1]
    """
    if mode not in ("argmax", "sample", "random"):
        raise ValueError(f"mode must be 'argmax', 'sample' or 'random', got {mode!r}")
    if logits.dim() != 2:
        raise ValueError(f"logits must be (anchors, candidates), got shape {tuple(logits.shape)}")
    num_anchors, num_candidates = logits.shape
    scores = logits.detach().float()
    invalid = torch.zeros_like(scores, dtype=torch.bool)  # (A, C)
    if exclude_diagonal:
        invalid.fill_diagonal_(True)
    if anchor_ids is not None:
        if candidate_ids is None:
            if num_anchors != num_candidates:
                raise ValueError("candidate_ids are needed when anchors and candidates differ in number")
            candidate_ids = anchor_ids
        invalid |= anchor_ids.view(-1, 1).to(scores.device) == candidate_ids.view(1, -1).to(scores.device)
    if mode == "random":
        scores = torch.zeros_like(scores)  # uniform over the valid candidates: Gumbel noise alone
    if mode in ("sample", "random"):
        # Gumbel-max: argmax(s + G), G = -log(Exp(1)), is a draw from softmax(s); top-k of it draws k without
        # replacement. The noise is added before masking so that inf noise can never revive an excluded entry.
        noise = torch.empty_like(scores).exponential_(generator=generator).log_().neg_()  # (A, C)
        scores = scores + noise
    scores = scores.masked_fill(invalid, float("-inf"))
    k = min(num_negatives, num_candidates)
    values, indices = scores.topk(k, dim=1)  # (A, k)
    indices = indices.masked_fill(values == float("-inf"), -1)
    if k < num_negatives:
        indices = torch.cat([indices, indices.new_full((num_anchors, num_negatives - k), -1)], dim=1)
    return indices


def itm_loss(itm_logits: torch.Tensor, itm_labels: torch.Tensor) -> torch.Tensor:
    """Image-text matching loss: one cross-entropy over all rows (ALBEF §3.2, GRIT-VLP, COSMO §ECM).

    The rows are the B positives, the hard negatives and any extra rows (COSMO's converted false negatives, label 1);
    with B positives and 2B negatives a model that always predicts the class prior scores `H(1/3) ≈ 0.6365`.

    Args:
        itm_logits: `(R, 2)` logits of the ITM head, class 1 = "match".
        itm_labels: `(R,)` 0 / 1 labels.

    Returns:
        Scalar mean cross-entropy in float32.
    """
    return F.cross_entropy(itm_logits.float(), itm_labels.to(itm_logits.device).long())


def mlm_loss(mlm_logits: torch.Tensor, mlm_labels: torch.Tensor) -> torch.Tensor:
    """Masked language modelling loss: the token mean of the cross-entropy at the masked positions (BERT, ALBEF §3.2).

    Every row counts by its number of masked tokens, as in the official code, where extra rows (COSMO's converted
    pairs) join the mean.

    Args:
        mlm_logits: `(..., V)` vocabulary logits.
        mlm_labels: `(...)` original token ids at masked positions, -100 elsewhere.

    Returns:
        Scalar loss in float32; 0 (with gradient) when nothing is masked.
    """
    logits = mlm_logits.reshape(-1, mlm_logits.shape[-1]).float()
    labels = mlm_labels.reshape(-1).to(logits.device)
    if not bool((labels != -100).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=-100)


def hn_nce_itc_loss(
    logits_per_image: torch.Tensor,
    logits_per_text: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 0.5,
    positive_index_i2t: Optional[torch.Tensor] = None,
    positive_index_t2i: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """DiHT's HN-NCE (Radenovic et al., arXiv 2301.02280, §HN-NCE) as COSMO's ITC term, both directions.

    `(mean_i HN-NCE(logits_per_image)_i + mean_t HN-NCE(logits_per_text)_t) / 2`, one positive per row. α = 1,
    β = 0 is ITC without smoothing.

    Args:
        logits_per_image: `(B_i, B_t)` scaled similarities, image anchors.
        logits_per_text: `(B_t, B_i)` scaled similarities, text anchors.
        alpha, beta: HN-NCE's weight of the positive in the denominator and hardness of the negative weights.
        positive_index_i2t, positive_index_t2i: column of each row's positive; the diagonal when omitted.

    Returns:
        Scalar loss in float32.
    """
    def positives(logits: torch.Tensor, index: Optional[torch.Tensor]) -> torch.Tensor:
        return torch.arange(logits.shape[0], device=logits.device) if index is None else index

    loss_i2t = hn_nce_per_row(logits_per_image.float(), positives(logits_per_image, positive_index_i2t), alpha, beta)
    loss_t2i = hn_nce_per_row(logits_per_text.float(), positives(logits_per_text, positive_index_t2i), alpha, beta)
    return (loss_i2t.mean() + loss_t2i.mean()) / 2


# Copied from modeling_diht.loss_diht._compute_dtype
def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision logits lose the loss in rounding: compute in float32 (float64 stays float64, for gradcheck).
    return torch.float64 if dtype == torch.float64 else torch.float32


# Copied from modeling_diht.loss_diht._check_weights
def _check_weights(alpha: float, beta: float) -> None:
    if alpha < 0 or beta < 0:
        raise ValueError(f"HN-NCE needs alpha >= 0 and beta >= 0, got alpha={alpha}, beta={beta}.")


# Copied from modeling_diht.loss_diht._check_one_candidate
def _check_one_candidate(alpha: float, what: str) -> None:
    if alpha == 0:
        raise ValueError(f"HN-NCE with alpha=0 is undefined for {what}: with no negative, the denominator "
                         "alpha e^S_ii + (empty sum) is 0. Use B >= 2 pairs or alpha > 0 (the loss is then "
                         "log(alpha)).")


# Copied from modeling_diht.loss_diht._no_negative_loss
def _no_negative_loss(positive: torch.Tensor, alpha: float) -> torch.Tensor:
    """log(alpha) per anchor, with a zero gradient that still reaches the inputs (every parameter stays in the graph,
    as data-parallel training expects)."""
    return positive * 0 + math.log(alpha)


# Copied from modeling_diht.loss_diht._relative_lse
def _relative_lse(negatives: torch.Tensor, factor: float, row_max: torch.Tensor) -> torch.Tensor:
    """Row LSE of `factor * (negatives - row_max)`, `(b, B) -> (b,)`; the exp runs in place."""
    shifted = torch.add(row_max * -factor, negatives, alpha=factor)  # (b, B) factor * (x - max) <= 0
    return shifted.exp_().sum(1).log()


# Copied from modeling_diht.loss_diht._loss_from_statistics
def _loss_from_statistics(
    max_minus_positive: torch.Tensor,
    lse_a: torch.Tensor,
    lse_c: Optional[torch.Tensor],
    num_negatives: int,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor loss and log-odds u from statistics relative to the negatives' max m (`lse_c=None`: beta = 0).

    With A = (1+beta) m + A' and C = beta m + C', the weighted negatives over the positive are e^u with
    u = log(B-1) + A - C - S_ii = log(B-1) + (m - S_ii) + A' - C', and L = log(alpha + e^u), log p_neg = u - L.
    Every term of u is a difference of nearby numbers, so nothing of size logit_scale is rounded.
    """
    u = max_minus_positive + lse_a
    if lse_c is not None:
        u = u - lse_c + math.log(num_negatives)
    if alpha == 0:
        return u, u
    return torch.logaddexp(u, u.new_tensor(math.log(alpha))), u


# Copied from modeling_diht.loss_diht.hn_nce_per_row
def hn_nce_per_row(
    logits: torch.Tensor,
    positive_index: torch.Tensor,
    alpha: float = 1.0,
    beta: float = 0.5,
    detach_weights: bool = False,
) -> torch.Tensor:
    """HN-NCE loss of each row of a rectangular logit matrix (dense, plain autograd).

    Row r is one anchor; column `positive_index[r]` is its positive and all B-1 other columns are its negatives, with
    hard-negative weights normalised over those B-1. It is the formula in plain autograd, for problems that are not
    the square symmetric batch of `hn_nce_loss`: a data-parallel "local loss", where each rank holds b of its own
    rows against all B gathered columns, or one direction alone (`hn_nce_loss(I, T)` equals the mean of
    `hn_nce_per_row(S, arange(B))` and `hn_nce_per_row(S.T, arange(B))`).

    Args:
        logits: `(b, B)` scaled similarities. With B = 1 (no negative) each row's loss is log(alpha), and alpha=0
            raises. Half-precision logits are computed in float32.
        positive_index: `(b,)` integer column of each row's positive.
        alpha: weight of the positive in the denominator (0 = decoupled contrastive loss).
        beta: hardness of the negative weighting (0 = uniform weights, i.e. InfoNCE when alpha = 1).
        detach_weights: treat the weights w_ij as constants: no gradient flows through them.

    Returns:
        `(b,)` per-row losses, in the dtype of `logits`.

    References:
        Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training",
        CVPR 2023, https://arxiv.org/abs/2301.02280.

    Example:
        >>> logits = torch.randn(3, 8)
        >>> hn_nce_per_row(logits, torch.tensor([4, 5, 6]), alpha=1.0, beta=0.5).shape
        torch.Size([3])
    """
    if logits.dim() != 2 or logits.shape[1] < 1:
        raise ValueError(f"logits must be (b, B) with B >= 1 columns, got shape {tuple(logits.shape)}.")
    if positive_index.shape != logits.shape[:1]:
        raise ValueError(
            f"positive_index must be ({logits.shape[0]},) for logits {tuple(logits.shape)}, "
            f"got shape {tuple(positive_index.shape)}."
        )
    _check_weights(alpha, beta)
    x = logits.to(_compute_dtype(logits.dtype))
    index = positive_index.to(device=x.device, dtype=torch.long).view(-1, 1)  # (b, 1)
    positive = x.gather(1, index).squeeze(1)  # (b,)
    if logits.shape[1] == 1:  # no negatives: L = log(alpha), see the module docstring
        _check_one_candidate(alpha, "a single candidate column")
        return _no_negative_loss(positive, alpha).to(logits.dtype)
    negatives = x.scatter(1, index, float("-inf"))  # (b, B), the positive masked out of every LSE
    with torch.no_grad():
        row_max = negatives.amax(1, keepdim=True)  # (b, 1) shift of the LSEs, a constant for autograd
    lse_c = None
    if beta == 0:
        lse_a = _relative_lse(negatives, 1.0, row_max)
    elif detach_weights:
        # Value (1+beta)(x - max) with the gradient of x alone: the e^{beta x} of the weights is a constant.
        with torch.no_grad():
            shift = negatives * beta - row_max * (1 + beta)  # (b, B)
            lse_c = _relative_lse(negatives, beta, row_max)
        lse_a = (negatives + shift).exp_().sum(1).log()
    else:
        lse_a = _relative_lse(negatives, 1 + beta, row_max)
        lse_c = _relative_lse(negatives, beta, row_max)
    loss, _ = _loss_from_statistics(row_max.squeeze(1) - positive, lse_a, lse_c, logits.shape[1] - 1, alpha)
    return loss.to(logits.dtype)

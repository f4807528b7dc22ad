"""HN-NCE, the hard-negative contrastive loss of DiHT, dense and tiled.

DiHT (Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training", CVPR 2023,
https://arxiv.org/abs/2301.02280) trains CLIP with HN-NCE instead of InfoNCE. For a batch of B pairs with logits
S_ij = logit_scale * I_i . T_j, the image-to-text loss of row i is

    L_i = -log[ e^{S_ii} / ( alpha e^{S_ii} + sum_{j!=i} w_ij e^{S_ij} ) ],
    w_ij = (B-1) e^{beta S_ij} / sum_{k!=i} e^{beta S_ik}          (the B-1 weights of a row average 1),

and text-to-image is the same on S^T. alpha=1, beta=0 is InfoNCE; alpha=0 drops the positive from the denominator
(the "decoupled" variant); beta>0 up-weights hard negatives. The paper's alpha and beta are not confirmed; 1 and 0.5
are the defaults of the third-party ports. e^{S} overflows float32 at logit scale 100, so the loss is computed in
log space from two log-sum-exps per row, A_i = LSE_{j!=i}((1+beta) S_ij) and C_i = LSE_{j!=i}(beta S_ij):

    L_i = logaddexp(log alpha + S_ii, log(B-1) + A_i - C_i) - S_ii,

with every statistic kept relative to the largest negative, so that nothing of size logit_scale gets rounded. Being
sums, both statistics can be accumulated tile by tile: `hn_nce_loss(..., chunk_size=c)` does so in blocks of c rows,
forward and backward, and never holds the B x B logits (`chunk_size=None` is the same computation in one block of
all B rows, i.e. dense). This is the idea of Inf-CL (Cheng et al., "Breaking the
Memory Barrier: Near Infinite Batch Size Scaling for Contrastive Loss", https://arxiv.org/abs/2410.17243), applied
to HN-NCE. Gradient of one row s with positive i (D the denominator, p_pos = alpha e^{s_i} / D, p_neg = 1 - p_pos,
a = softmax_{j!=i}((1+beta) s), c = softmax_{j!=i}(beta s)):

    dL/ds_i = -p_neg,    dL/ds_j = p_neg ((1+beta) a_j - beta c_j)    (weights detached: p_neg a_j).

A batch of one pair has no negatives: the sum over j != i is empty (0), whatever its weights, so the denominator is
alpha e^{S_ii} and L = -log(1 / alpha) = log(alpha) in each direction, a constant with zero gradient: 0 at alpha=1,
where it equals CLIP's loss of a 1 x 1 logit matrix (cross-entropy of a single class). At alpha=0 the denominator is
0 and the loss is undefined, the one case that raises.

`concept_distillation_loss` is the multi-label loss of the concept heads (arXiv 2301.02280, Sec. 3.2).
"""

import math
from typing import Callable, Optional, Union

import torch

__all__ = ["concept_distillation_loss", "hn_nce_local_loss", "hn_nce_loss", "hn_nce_per_row"]


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Half-precision logits lose the loss in rounding: compute in float32 (float64 stays float64, for gradcheck).
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_weights(alpha: float, beta: float) -> None:
    if alpha < 0 or beta < 0:
        raise ValueError(f"HN-NCE needs alpha >= 0 and beta >= 0, got alpha={alpha}, beta={beta}.")


def _check_one_candidate(alpha: float, what: str) -> None:
    if alpha == 0:
        raise ValueError(f"HN-NCE with alpha=0 is undefined for {what}: with no negative, the denominator "
                         "alpha e^S_ii + (empty sum) is 0. Use B >= 2 pairs or alpha > 0 (the loss is then "
                         "log(alpha)).")


def _no_negative_loss(positive: torch.Tensor, alpha: float) -> torch.Tensor:
    """log(alpha) per anchor, with a zero gradient that still reaches the inputs (every parameter stays in the graph,
    as data-parallel training expects)."""
    return positive * 0 + math.log(alpha)


def _relative_lse(negatives: torch.Tensor, factor: float, row_max: torch.Tensor) -> torch.Tensor:
    """Row LSE of `factor * (negatives - row_max)`, `(b, B) -> (b,)`; the exp runs in place."""
    shifted = torch.add(row_max * -factor, negatives, alpha=factor)  # (b, B) factor * (x - max) <= 0
    return shifted.exp_().sum(1).log()


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


def _blocks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """Row blocks of `chunk_size` rows, none of one row (its masked diagonal would fill a column of the block)."""
    starts = list(range(0, n, max(chunk_size, 2)))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()  # the last block takes the lone row
    return list(zip(starts, starts[1:] + [n]))


class _TiledHNNCE(torch.autograd.Function):
    """Both directions of HN-NCE in row blocks: O(B) saved statistics, O(chunk * B) working memory.

    The rows are b anchor images (all B in one process; one process's share under data parallelism, starting at
    global row `offset`) against all B texts. Row statistics are complete in each block; column statistics are
    accumulated online over the blocks and, across processes, combined by `reduce_columns` (every process then
    holds the statistics of all B columns). Statistics are kept relative to the negatives' max of each row and
    column, and the backward recomputes exactly those differences, so its exps match the forward's normalisers to
    rounding. The value is `(sum of this process's row losses + sum of its own columns' losses) / (2B)`; the
    gradient is that of this process's block of logits in the loss of all rows and all columns, so that the sum over
    processes is the gradient of the global loss (what data-parallel training's reduction forms).
    """

    @staticmethod
    def forward(ctx, image_embeds, text_embeds, logit_scale, alpha, beta, detach_weights, chunk_size, offset=0,
                column_dots=None, reduce_columns=None):
        dtype = _compute_dtype(image_embeds.dtype)
        images, texts = image_embeds.to(dtype), text_embeds.to(dtype)  # (b, D) anchors, (B, D) all texts
        scale = logit_scale.detach().to(dtype).reshape(())
        b, n = images.shape[0], texts.shape[0]
        own = slice(offset, offset + b)  # this process's columns (its pairs' texts)
        blocks = _blocks(b, chunk_size)
        dots = (images * texts[own]).sum(1)  # (b,) I_i . T_i
        positive = scale * dots  # (b,) S_ii
        col_positive = positive if column_dots is None else scale * column_dots.to(dtype)  # (B,) every S_jj
        factors = (1 + beta, beta) if beta > 0 else (1.0,)
        row_max = torch.empty(b, dtype=dtype, device=images.device)
        col_max = torch.full((n,), float("-inf"), dtype=dtype, device=images.device)
        row_lse = [torch.empty_like(row_max) for _ in factors]  # LSE_j of factor * (S_ij - row_max_i)
        col_lse = [torch.full_like(col_max, float("-inf")) for _ in factors]  # same over i, minus col_max_j
        logits_buf = images.new_empty(max(stop - start for start, stop in blocks), n)
        diff_buf, exp_buf = torch.empty_like(logits_buf), torch.empty_like(logits_buf)
        for start, stop in blocks:
            c = stop - start
            logits = torch.mm(images[start:stop] * scale, texts.T, out=logits_buf[:c])  # (c, B)
            logits.diagonal(offset + start).fill_(float("-inf"))  # entries (r, offset + start + r): positives
            # Columns: online LSE, rescaled when this block raises a column's max. A column may still have no
            # negative (a block of one row holding its positive): its max stays -inf and its LSE -inf.
            new_col_max = torch.maximum(col_max, logits.amax(0))  # (B,)
            shift = torch.where(new_col_max == float("-inf"), 0.0, new_col_max)  # (B,) finite
            rescale = col_max - shift  # (B,) <= 0, -inf where there was nothing yet
            diff = torch.sub(logits, shift, out=diff_buf[:c])  # (c, B)
            for k, factor in enumerate(factors):
                block_lse = torch.mul(diff, factor, out=exp_buf[:c]).exp_().sum(0).log_()  # (B,)
                torch.logaddexp(col_lse[k].add_(rescale, alpha=factor), block_lse, out=col_lse[k])
            col_max = new_col_max
            # Rows: complete in this block.
            row_max[start:stop] = logits.amax(1)  # finite: every row keeps B-1 >= 1 negatives
            diff = logits.sub_(row_max[start:stop, None])  # (c, B)
            for k, factor in enumerate(factors):
                row_lse[k][start:stop] = torch.mul(diff, factor, out=exp_buf[:c]).exp_().sum(1).log_()
        if reduce_columns is not None:  # the other processes' rows: every column's statistics over all B rows
            col_max, col_lse = reduce_columns(col_max, col_lse, factors)

        def direction(max_, lse, positive_):  # per-anchor loss and log p_neg
            loss, u = _loss_from_statistics(max_ - positive_, lse[0], lse[1] if beta > 0 else None, n - 1, alpha)
            return loss, u - loss

        row_loss, row_log_p_neg = direction(row_max, row_lse, positive)
        col_loss, col_log_p_neg = direction(col_max, col_lse, col_positive)
        loss = 0.5 * (row_loss.sum() + col_loss[own].sum()) / n

        # dL/dS_rj (j != r) is a sum of exp(factor * (S_rj - max) + bias) terms: the (1+beta)-term and (unless
        # detached) the beta-term, of both directions. The biases hold log p_neg, the coefficient and 1 / (2B).
        log_half_mean = -math.log(2 * n)  # d loss / d L_i = 1 / (2B)
        a_coef = math.log(1.0 if detach_weights else 1 + beta)
        biases = [
            row_log_p_neg + (log_half_mean + a_coef) - row_lse[0],
            col_log_p_neg + (log_half_mean + a_coef) - col_lse[0],
        ]
        if beta > 0 and not detach_weights:
            biases += [
                row_log_p_neg + (log_half_mean + math.log(beta)) - row_lse[1],
                col_log_p_neg + (log_half_mean + math.log(beta)) - col_lse[1],
            ]
        diagonal_grad = -(row_log_p_neg.exp() + col_log_p_neg[own].exp()) / (2 * n)  # (b,) dL/dS_ii
        ctx.save_for_backward(image_embeds, text_embeds, logit_scale, dots, diagonal_grad, row_max, col_max, *biases)
        ctx.beta, ctx.blocks, ctx.offset = beta, blocks, offset
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        with torch.autocast(grad_output.device.type, enabled=False):  # backward may run inside an AMP region
            return _TiledHNNCE._backward(ctx, grad_output)

    @staticmethod
    def _backward(ctx, grad_output):
        image_embeds, text_embeds, logit_scale, dots, diagonal_grad, row_max, col_max, *biases = ctx.saved_tensors
        dtype = dots.dtype
        images, texts = image_embeds.to(dtype), text_embeds.to(dtype)  # (b, D), (B, D)
        scale = logit_scale.detach().to(dtype).reshape(())
        b, n, beta, offset = images.shape[0], texts.shape[0], ctx.beta, ctx.offset
        own = slice(offset, offset + b)
        # Exp terms as (is_row, factor, bias, sign): the beta-terms are subtracted.
        terms = [(True, 1 + beta, biases[0], 1), (False, 1 + beta, biases[1], 1)]
        if len(biases) == 4:
            terms += [(True, beta, biases[2], -1), (False, beta, biases[3], -1)]

        # Diagonal (positive) entries first: rank one, O(b D).
        diag = (diagonal_grad * scale)[:, None]  # (b, 1)
        grad_images = diag * texts[own]  # (b, D)
        grad_texts = torch.zeros_like(texts) if b < n else diag * images  # (B, D)
        if b < n:
            grad_texts[own] = diag * images
        grad_scale = (diagonal_grad * dots).sum()
        logits_buf = images.new_empty(max(stop - start for start, stop in ctx.blocks), n)
        col_diff_buf, grad_buf = torch.empty_like(logits_buf), torch.empty_like(logits_buf)
        exp_buf = torch.empty_like(logits_buf) if len(terms) > 2 else None
        for start, stop in ctx.blocks:
            c = stop - start
            scaled = images[start:stop] * scale  # (c, D)
            logits = torch.mm(scaled, texts.T, out=logits_buf[:c])  # (c, B), recomputed as in forward
            logits.diagonal(offset + start).fill_(float("-inf"))  # the exp terms vanish on the diagonal
            col_diff = torch.sub(logits, col_max, out=col_diff_buf[:c])  # (c, B)
            row_diff = logits.sub_(row_max[start:stop, None])  # (c, B)
            grad = grad_buf[:c]  # (c, B) dL/dS of the block, off-diagonal
            for k, (is_row, factor, bias, sign) in enumerate(terms):
                diff, bias = (row_diff, bias[start:stop, None]) if is_row else (col_diff, bias[None, :])
                # The first term initialises grad; the last overwrites the column differences, no longer needed.
                out = grad if k == 0 else col_diff if k == len(terms) - 1 else exp_buf[:c]
                torch.add(bias, diff, alpha=factor, out=out).exp_()
                if k > 0:
                    grad.add_(out, alpha=sign)
            grad_rows = grad @ texts  # (c, D)
            grad_images[start:stop].addcmul_(grad_rows, scale)
            grad_texts.addmm_(grad.T, scaled)
            grad_scale += (grad_rows * images[start:stop]).sum()

        grad_output = grad_output.to(dtype)
        grad_scale_out = None
        if ctx.needs_input_grad[2]:
            grad_scale_out = (grad_scale * grad_output).to(logit_scale.dtype).reshape(logit_scale.shape)
        return (
            grad_images.mul_(grad_output).to(image_embeds.dtype),
            grad_texts.mul_(grad_output).to(text_embeds.dtype),
            grad_scale_out,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def hn_nce_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: Union[float, torch.Tensor],
    alpha: float = 1.0,
    beta: float = 0.5,
    *,
    detach_weights: bool = False,
    chunk_size: Optional[int] = None,
) -> torch.Tensor:
    """Symmetric HN-NCE loss of DiHT: the mean of the image-to-text and text-to-image losses.

    With alpha=1, beta=0 it equals CLIP's loss, `(cross_entropy(S, arange) + cross_entropy(S.T, arange)) / 2`.
    Forward and backward are hand-written (a custom autograd function over blocks of rows, recomputing the logits
    in backward). `chunk_size=None` uses one block, the dense B x B logits; a `chunk_size` bounds the working memory
    to O(B * chunk_size) with the same value and gradients, and is also faster on CPU (cache-sized blocks).

    Args:
        image_embeds: `(B, D)` L2-normalised image embeddings; row i pairs with row i of `text_embeds`. A batch of
            one pair gives log(alpha) (0 at alpha=1, as CLIP's loss), with zero gradient; alpha=0 then raises.
        text_embeds: `(B, D)` L2-normalised text embeddings.
        logit_scale: the multiplier 1/tau, already exponentiated: a float or a one-element tensor (gradients flow
            into it).
        alpha: weight of the positive in the denominator (0 = decoupled contrastive loss). Not confirmed by the
            paper; 1.0 is the third-party default.
        beta: hardness of the negative weighting (0 = uniform). Not confirmed by the paper; 0.5 is the third-party
            default.
        detach_weights: treat the hard-negative weights as constants (no gradient through them); the paper does not
            settle this.
        chunk_size: rows per block of the tiled path (a block has at least 2 rows); `None` computes the dense
            B x B logits in one block.

    Returns:
        Scalar loss in the dtype of `image_embeds` (half-precision inputs are computed in float32).

    References:
        Radenovic et al., "Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training",
        CVPR 2023, https://arxiv.org/abs/2301.02280. Tiling: Cheng et al., "Breaking the Memory Barrier: Near
        Infinite Batch Size Scaling for Contrastive Loss", https://arxiv.org/abs/2410.17243.

    Example:
        >>> images = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
        >>> texts = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
        >>> dense = hn_nce_loss(images, texts, 100.0, alpha=1.0, beta=0.5)
        >>> tiled = hn_nce_loss(images, texts, 100.0, alpha=1.0, beta=0.5, chunk_size=3)
        >>> torch.allclose(dense, tiled)
        True
    """
    if image_embeds.dim() != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            "image_embeds and text_embeds must both be (B, D) with equal shapes, got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}."
        )
    n = image_embeds.shape[0]
    if n < 1:
        raise ValueError("HN-NCE needs a batch of at least one pair, got an empty batch.")
    _check_weights(alpha, beta)
    dtype = _compute_dtype(image_embeds.dtype)
    if not torch.is_tensor(logit_scale):
        logit_scale = torch.tensor(float(logit_scale), dtype=dtype, device=image_embeds.device)
    if logit_scale.numel() != 1:
        raise ValueError(f"logit_scale must be a float or a one-element tensor, got shape {tuple(logit_scale.shape)}.")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows or None, got {chunk_size}.")
    if n == 1:  # one pair, no negatives: log(alpha) in both directions (module docstring)
        _check_one_candidate(alpha, "a batch of one pair")
        positive = logit_scale.reshape(()).to(dtype) * (image_embeds.to(dtype) * text_embeds.to(dtype)).sum()
        return _no_negative_loss(positive, alpha).to(image_embeds.dtype)

    with torch.autocast(image_embeds.device.type, enabled=False):  # under AMP too, the logits stay float32
        # Dense is the same computation in a single block of B rows: the B x B logits exist once, and the fused
        # backward avoids the half-dozen B x B intermediates that plain autograd keeps (1.6x slower at B=4096).
        loss = _TiledHNNCE.apply(
            image_embeds, text_embeds, logit_scale, float(alpha), float(beta), detach_weights, int(chunk_size or n)
        )
    return loss.to(image_embeds.dtype)


def hn_nce_local_loss(
    image_embeds: torch.Tensor,
    all_image_embeds: torch.Tensor,
    all_text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    offset: int,
    alpha: float = 1.0,
    beta: float = 0.5,
    *,
    detach_weights: bool = False,
    chunk_size: Optional[int] = None,
    reduce_columns: Optional[Callable] = None,
) -> torch.Tensor:
    """One data-parallel process's share of the global-batch HN-NCE, with the fused tiled forward and backward.

    The process holds b pairs, rows `offset .. offset + b` of the global batch of B, and the gathered embeddings of
    all B. It computes only its block of the logits, `S[offset:offset+b, :]` (b x B): its images' rows are complete
    there; each text's column gets this block's part of its statistics, and `reduce_columns` combines the parts of
    all processes (an all-reduce of a max and of two sums per column: 3B numbers). Each logit is then computed once
    over all processes, as in the single-process kernel, instead of twice (once per direction) as a loss over
    (b, B) rows in each direction does; and the backward is the hand-written one of `hn_nce_loss`.

    Args:
        image_embeds: `(b, D)` this process's L2-normalised image embeddings (with gradient).
        all_image_embeds: `(B, D)` all processes' image embeddings; only their values are used (the positives
            I_j . T_j of the columns), so they may be detached.
        all_text_embeds: `(B, D)` all processes' text embeddings (with gradient: a differentiable gather).
        logit_scale: one-element tensor, the multiplier 1/tau.
        offset: the global row of this process's first pair.
        alpha, beta, detach_weights, chunk_size: as `hn_nce_loss`.
        reduce_columns: `(col_max (B,), col_lse list of (B,), factors) -> (col_max, col_lse)` over all processes;
            `None`: this process is the whole batch.

    Returns:
        `(sum of this process's image-to-text losses + sum of its texts' text-to-image losses) / (2B)`: summed over
        processes, the global loss. Its gradient is this process's block's share of the gradient of the global loss:
        summed over processes (a gather's backward, data-parallel averaging times the number of processes) it is the
        gradient of the global loss. With `offset=0`, all B rows and no `reduce_columns` it equals `hn_nce_loss`.

    References:
        Radenovic et al., arXiv 2301.02280 (HN-NCE); Cheng et al., arXiv 2410.17243 (tiles of the logits, their
        statistics combined across devices).

    Example:
        >>> images = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
        >>> texts = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
        >>> scale = torch.tensor(10.0)
        >>> local = hn_nce_local_loss(images, images, texts, scale, offset=0)
        >>> torch.allclose(local, hn_nce_loss(images, texts, scale))
        True
    """
    b, n = image_embeds.shape[0], all_text_embeds.shape[0]
    if image_embeds.dim() != 2 or all_text_embeds.shape != all_image_embeds.shape or not 0 <= offset <= n - b:
        raise ValueError(f"need (b, D) local images inside (B, D) gathered embeddings at offset {offset}, got "
                         f"{tuple(image_embeds.shape)}, {tuple(all_image_embeds.shape)}, {tuple(all_text_embeds.shape)}")
    if n < 2:
        raise ValueError("hn_nce_local_loss needs a global batch of at least 2 pairs (use hn_nce_loss for one).")
    _check_weights(alpha, beta)
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of rows or None, got {chunk_size}.")
    dtype = _compute_dtype(image_embeds.dtype)
    if not torch.is_tensor(logit_scale):
        logit_scale = torch.tensor(float(logit_scale), dtype=dtype, device=image_embeds.device)
    with torch.no_grad():
        column_dots = (all_image_embeds.to(dtype) * all_text_embeds.to(dtype)).sum(1)  # (B,) I_j . T_j
    with torch.autocast(image_embeds.device.type, enabled=False):
        loss = _TiledHNNCE.apply(image_embeds, all_text_embeds, logit_scale, float(alpha), float(beta),
                                 detach_weights, int(chunk_size or max(b, 1)), int(offset), column_dots,
                                 reduce_columns)
    return loss.to(image_embeds.dtype)


def concept_distillation_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Multi-label loss of a concept head against a frozen teacher's per-image concept targets.

    DiHT (arXiv 2301.02280, Sec. 3.2) trains linear heads on the image tower to predict the concepts a strong
    teacher assigns to each image, with a multi-label loss; the paper does not say which. This is the binary
    cross-entropy with logits of every concept, averaged over concepts and images; `targets` are 1 at the teacher's
    concepts (hard) or its probabilities there (soft), 0 elsewhere.

    Args:
        logits: `(B, K)` concept-head logits.
        targets: `(B, K)` targets in [0, 1] (any dtype; booleans and integers are read as 0/1).

    Returns:
        Scalar loss, in float32 for half-precision logits.

    Example:
        >>> concept_distillation_loss(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 1.0, 1.0]]))
        tensor(0.6931)
    """
    if logits.shape != targets.shape:
        raise ValueError(f"concept logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ in shape.")
    x = logits.float()
    return torch.nn.functional.binary_cross_entropy_with_logits(x, targets.to(device=x.device, dtype=x.dtype))

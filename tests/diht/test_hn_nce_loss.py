"""Specification of HN-NCE (DiHT, arXiv 2301.02280), dense and tiled.

Expected values come from `reference_rows`, a direct transcription of the paper's formula with explicit weights,

    L_i = -log[ e^{S_ii} / (alpha e^{S_ii} + sum_{j!=i} w_ij e^{S_ij}) ],
    w_ij = (B-1) e^{beta S_ij} / sum_{k!=i} e^{beta S_ik},

evaluated in float64 at logit scales where exponentiating the logits is exact.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import image_text_contrastive_loss

from modeling_diht.loss_diht import hn_nce_loss, hn_nce_per_row


def make_embeddings(batch: int, dim: int, dtype: torch.dtype = torch.float64, seed: int = 0, noise: float = 1.0):
    """L2-normalised (B, D) image and text embeddings; texts are noisy copies of images, so positives are likely."""
    generator = torch.Generator().manual_seed(seed)
    images = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    texts = F.normalize(images + noise * torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    return images.to(dtype), texts.to(dtype)


def reference_rows(logits, positive_index, alpha, beta, detach_weights=False):
    """Per-row HN-NCE straight from the paper's formula, with explicit weights (no log-space tricks)."""
    rows, columns = logits.shape
    is_negative = ~F.one_hot(positive_index, columns).bool()  # (b, B)
    weights = torch.exp(beta * logits) * is_negative
    weights = (columns - 1) * weights / weights.sum(1, keepdim=True)  # each row's B-1 weights average 1
    if detach_weights:
        weights = weights.detach()
    positive = torch.exp(logits.gather(1, positive_index[:, None]).squeeze(1))
    denominator = alpha * positive + (weights * torch.exp(logits)).sum(1)
    return -torch.log(positive / denominator)


def reference_loss(images, texts, logit_scale, alpha, beta, detach_weights=False):
    logits = logit_scale * images @ texts.T
    target = torch.arange(len(logits))
    image_to_text = reference_rows(logits, target, alpha, beta, detach_weights).mean()
    text_to_image = reference_rows(logits.T, target, alpha, beta, detach_weights).mean()
    return 0.5 * (image_to_text + text_to_image)


def log_space_reference_loss(images, texts, logit_scale, alpha, beta):
    """The loss from two masked log-sum-exps per anchor (float64), for logit scales where exp(S) overflows float32."""
    logits = logit_scale * images @ texts.T
    negatives_mask = torch.eye(len(logits), dtype=torch.bool)

    def direction(s):
        positive = s.diagonal()
        negatives = s.masked_fill(negatives_mask, -math.inf)
        weighted = torch.logsumexp((1 + beta) * negatives, 1) - torch.logsumexp(beta * negatives, 1)
        log_alpha = math.log(alpha) if alpha > 0 else -math.inf
        return torch.logaddexp(log_alpha + positive, math.log(len(s) - 1) + weighted) - positive

    return 0.5 * (direction(logits).mean() + direction(logits.T).mean())


def value_and_grads(loss_fn, images, texts, logit_scale):
    """Loss value and its gradients w.r.t. image embeddings, text embeddings and the logit scale."""
    images = images.detach().clone().requires_grad_()
    texts = texts.detach().clone().requires_grad_()
    scale = torch.tensor(logit_scale, dtype=torch.float64 if images.dtype == torch.float64 else torch.float32)
    scale.requires_grad_()
    loss = loss_fn(images, texts, scale)
    return (loss.detach(), *torch.autograd.grad(loss, (images, texts, scale)))


def assert_all_close(actual, expected, **tolerances):
    for name, a, e in zip(("loss", "d/d image_embeds", "d/d text_embeds", "d/d logit_scale"), actual, expected):
        torch.testing.assert_close(a, e, msg=lambda m, name=name: f"{name}: {m}", **tolerances)


@pytest.mark.parametrize("chunk_size", [None, 4])
@pytest.mark.parametrize("detach_weights", [False, True])
@pytest.mark.parametrize("logit_scale", [1.0, 10.0, 30.0])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_value_and_gradients_equal_paper_formula(alpha, beta, logit_scale, detach_weights, chunk_size):
    images, texts = make_embeddings(6, 5)
    actual = value_and_grads(
        lambda i, t, s: hn_nce_loss(i, t, s, alpha, beta, detach_weights=detach_weights, chunk_size=chunk_size),
        images, texts, logit_scale,
    )
    expected = value_and_grads(
        lambda i, t, s: reference_loss(i, t, s, alpha, beta, detach_weights), images, texts, logit_scale
    )
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("chunk_size", [None, 3])
def test_alpha_one_beta_zero_equals_clip_cross_entropy(chunk_size):
    images, texts = make_embeddings(8, 6)
    target = torch.arange(8)

    def clip_loss(i, t, s):
        logits = s * i @ t.T
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2

    actual = value_and_grads(
        lambda i, t, s: hn_nce_loss(i, t, s, alpha=1.0, beta=0.0, chunk_size=chunk_size), images, texts, 20.0
    )
    assert_all_close(actual, value_and_grads(clip_loss, images, texts, 20.0), rtol=1e-9, atol=1e-11)


def test_alpha_one_beta_zero_equals_transformers_clip_loss():
    images, texts = make_embeddings(8, 6)
    actual = value_and_grads(lambda i, t, s: hn_nce_loss(i, t, s, 1.0, 0.0), images, texts, 20.0)
    expected = value_and_grads(lambda i, t, s: image_text_contrastive_loss((s * i @ t.T).T), images, texts, 20.0)
    assert_all_close(actual, expected, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(
    "beta, detach_weights, expected_share",
    [
        # Row 0 of the logits below: positive 2, negatives 1 (hardest) and 0. The gradient on the negatives sums to
        # p_neg; the hardest one's share of it is, with a = softmax((1+beta) [1, 0]) and c = softmax(beta [1, 0]):
        (0.0, False, math.e / (math.e + 1)),  # uniform weights: softmax([1, 0])[0] = 0.7311
        (1.0, True, math.e**2 / (math.e**2 + 1)),  # detached weights: a_0 = softmax([2, 0])[0] = 0.8808
        (1.0, False, 2 * math.e**2 / (math.e**2 + 1) - math.e / (math.e + 1)),  # 2 a_0 - c_0 = 1.0306
    ],
)
def test_beta_gives_the_hardest_negative_a_larger_share_of_the_gradient(beta, detach_weights, expected_share):
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [1.0, 0.0, 2.0]], dtype=torch.float64)
    logits.requires_grad_()
    hn_nce_per_row(logits, torch.arange(3), alpha=1.0, beta=beta, detach_weights=detach_weights).sum().backward()
    hardest, easiest = logits.grad[0, 1], logits.grad[0, 2]
    share = hardest / (hardest + easiest)
    torch.testing.assert_close(share.item(), expected_share)
    if beta > 0:
        assert share > math.e / (math.e + 1) + 0.1  # a larger share than under beta = 0


@pytest.mark.parametrize("chunk_size", [None, 5])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_float32_is_stable_at_logit_scale_100(alpha, chunk_size):
    # Near-identical rows: every logit is close to 100, so e^{(1+beta) S} = e^{200} overflows float32.
    images, texts = make_embeddings(16, 32, noise=1e-3)
    base = F.normalize(torch.randn(1, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64), dim=-1)
    images = F.normalize(base + 1e-3 * images, dim=-1).float()
    texts = F.normalize(base + 1e-3 * texts, dim=-1).float()
    assert torch.isinf(torch.exp(2 * 100 * (images @ texts.T))).all()
    loss, grad_images, grad_texts, grad_scale = value_and_grads(
        lambda i, t, s: hn_nce_loss(i, t, s, alpha, beta=1.0, chunk_size=chunk_size), images, texts, 100.0
    )
    assert all(torch.isfinite(x).all() for x in (loss, grad_images, grad_texts, grad_scale))
    expected = value_and_grads(
        lambda i, t, s: log_space_reference_loss(i, t, s, alpha, 1.0), images.double(), texts.double(), 100.0
    )
    # Float32 logits near 100 are rounded by ~4e-6; the logit scale (100) amplifies that in the embedding gradients
    # (~3e-3 here), while the scale's own gradient (~1e-6) must come out of cancelling terms.
    torch.testing.assert_close(loss, expected[0].float(), rtol=0, atol=1e-5)
    torch.testing.assert_close(grad_images, expected[1].float(), rtol=0, atol=5e-5)
    torch.testing.assert_close(grad_texts, expected[2].float(), rtol=0, atol=5e-5)
    torch.testing.assert_close(grad_scale, expected[3].float(), rtol=0, atol=3e-7)


@pytest.mark.parametrize(
    "alpha, beta, detach_weights",
    [(1.0, 0.5, False), (1.0, 0.5, True), (0.0, 0.5, False), (0.0, 1.0, True), (1.0, 0.0, False), (0.0, 0.0, False)],
)
@pytest.mark.parametrize("batch, chunk_size", [(37, 8), (64, 64), (64, 16), (20, 100), (9, 1)])
def test_chunked_equals_dense(batch, chunk_size, alpha, beta, detach_weights):
    images, texts = make_embeddings(batch, 16, dtype=torch.float32)

    def loss(chunk):
        return lambda i, t, s: hn_nce_loss(i, t, s, alpha, beta, detach_weights=detach_weights, chunk_size=chunk)

    expected = value_and_grads(loss(None), images, texts, 30.0)
    assert_all_close(value_and_grads(loss(chunk_size), images, texts, 30.0), expected, rtol=1e-4, atol=1e-5)


def test_chunked_backward_scales_with_the_upstream_gradient():
    images, texts = make_embeddings(12, 8)
    dense = value_and_grads(lambda i, t, s: -2.5 * hn_nce_loss(i, t, s), images, texts, 10.0)
    chunked = value_and_grads(lambda i, t, s: -2.5 * hn_nce_loss(i, t, s, chunk_size=5), images, texts, 10.0)
    assert_all_close(chunked, dense, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("chunk_size", [None, 7])
def test_half_precision_inputs_keep_their_dtype(dtype, chunk_size):
    images, texts = make_embeddings(24, 16, dtype=dtype)
    images.requires_grad_()
    texts.requires_grad_()
    loss = hn_nce_loss(images, texts, 30.0, chunk_size=chunk_size)
    loss.backward()
    assert loss.dtype == dtype and images.grad.dtype == dtype and texts.grad.dtype == dtype
    assert torch.isfinite(loss) and torch.isfinite(images.grad).all() and torch.isfinite(texts.grad).all()
    full_precision = hn_nce_loss(images.detach().float(), texts.detach().float(), 30.0)
    torch.testing.assert_close(loss.float(), full_precision, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("chunk_size", [None, 7])
def test_autocast_does_not_lower_the_precision_of_the_logits(chunk_size):
    images, texts = make_embeddings(24, 16, dtype=torch.float32)
    expected = value_and_grads(lambda i, t, s: hn_nce_loss(i, t, s, chunk_size=chunk_size), images, texts, 100.0)

    def under_autocast(i, t, s):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return hn_nce_loss(i, t, s, chunk_size=chunk_size)

    assert_all_close(value_and_grads(under_autocast, images, texts, 100.0), expected, rtol=1e-5, atol=1e-6)


def test_float_logit_scale_equals_tensor_logit_scale():
    images, texts = make_embeddings(8, 4)
    expected = hn_nce_loss(images, texts, torch.tensor(10.0, dtype=torch.float64))
    for chunk_size in (None, 3):
        torch.testing.assert_close(hn_nce_loss(images, texts, 10.0, chunk_size=chunk_size), expected)


@pytest.mark.parametrize("detach_weights", [False, True])
def test_per_row_on_a_rectangular_problem_equals_paper_formula(detach_weights):
    # A rank's 3 local rows against 8 gathered columns; its own pairs sit at columns 4, 5, 6.
    generator = torch.Generator().manual_seed(0)
    logits = (5 * torch.randn(3, 8, generator=generator, dtype=torch.float64)).requires_grad_()
    positive_index = torch.tensor([4, 5, 6])
    actual = hn_nce_per_row(logits, positive_index, alpha=0.5, beta=0.5, detach_weights=detach_weights)
    (actual_grad,) = torch.autograd.grad(actual.sum(), logits)
    expected = reference_rows(logits, positive_index, alpha=0.5, beta=0.5, detach_weights=detach_weights)
    (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
    assert actual.shape == (3,)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(actual_grad, expected_grad, rtol=1e-10, atol=1e-12)


def test_mismatched_shapes_raise_naming_both():
    images, _ = make_embeddings(4, 8)
    _, texts = make_embeddings(5, 8)
    with pytest.raises(ValueError, match=r"\(4, 8\).*\(5, 8\)"):
        hn_nce_loss(images, texts, 10.0)


@pytest.mark.parametrize("alpha, beta", [(1.0, 0.5), (0.0, 1.0), (0.5, 0.0)])
def test_chunked_function_passes_gradcheck(alpha, beta):
    images, texts = make_embeddings(5, 3)
    inputs = (images.requires_grad_(), texts.requires_grad_(), torch.tensor(3.0, dtype=torch.float64).requires_grad_())
    assert torch.autograd.gradcheck(lambda i, t, s: hn_nce_loss(i, t, s, alpha, beta, chunk_size=2), inputs)


@pytest.mark.parametrize("alpha, beta, detach_weights", [(1.0, 0.5, False), (0.5, 1.0, True), (0.0, 0.5, False)])
def test_fused_loss_equals_autograd_per_row_formula_at_logit_scale_100(alpha, beta, detach_weights):
    """The hand-written backward of `hn_nce_loss` against plain autograd through `hn_nce_per_row`, in float32."""
    images, texts = make_embeddings(48, 32, dtype=torch.float32, noise=0.3)

    def per_row(i, t, s):
        logits = s * i @ t.T
        target = torch.arange(len(logits))
        rows = hn_nce_per_row(logits, target, alpha, beta, detach_weights).mean()
        return 0.5 * (rows + hn_nce_per_row(logits.T, target, alpha, beta, detach_weights).mean())

    expected = value_and_grads(per_row, images, texts, 100.0)
    for chunk_size in (None, 16):
        fused = value_and_grads(
            lambda i, t, s: hn_nce_loss(i, t, s, alpha, beta, detach_weights=detach_weights, chunk_size=chunk_size),
            images, texts, 100.0,
        )
        assert_all_close(fused, expected, rtol=1e-4, atol=1e-5)

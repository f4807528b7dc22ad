"""The pure loss functions of `modeling_cosmo/loss_cosmo.py` against references written here."""

import importlib.util
import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from modeling_cosmo import loss_cosmo
from modeling_cosmo.loss_cosmo import (
    hn_nce_itc_loss,
    itc_logits,
    itc_targets_from_ids,
    itm_loss,
    mlm_loss,
    select_hard_negatives,
    smoothed_itc_loss,
)


def _load_loss_diht():
    """`modeling_diht/loss_diht.py` read from its file: the comparison needs that file only (it imports only torch),
    not the rest of the `modeling_diht` package."""
    path = Path(__file__).resolve().parents[2] / "modeling_diht" / "loss_diht.py"
    spec = importlib.util.spec_from_file_location("_loss_diht_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


loss_diht = _load_loss_diht()


def _reference_soft_ce(logits: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-row loop: -Σ_j t_j log p_j with t = (1-ε) y + ε/C."""
    rows = []
    for i in range(logits.shape[0]):
        C = logits.shape[1]
        p = [math.exp(v) for v in logits[i].tolist()]
        z = sum(p)
        t = [(1 - eps) * y + eps / C for y in targets[i].tolist()]
        rows.append(-sum(tj * math.log(pj / z) for tj, pj in zip(t, p)))
    return torch.tensor(sum(rows) / len(rows))


def test_smoothed_itc_equals_the_per_row_formula_with_multi_positive_targets():
    generator = torch.Generator().manual_seed(0)
    logits_i2t = torch.randn(4, 4, generator=generator) * 3
    logits_t2i = torch.randn(4, 4, generator=generator) * 3
    y_i2t = torch.tensor([[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    y_t2i = torch.eye(4)  # direction-specific, as COSMO's conversions
    got = smoothed_itc_loss(logits_i2t, logits_t2i, y_i2t, y_t2i, smoothing=0.5)
    expected = (_reference_soft_ce(logits_i2t, y_i2t, 0.5) + _reference_soft_ce(logits_t2i, y_t2i, 0.5)) / 2
    torch.testing.assert_close(got, expected.float(), atol=1e-5, rtol=1e-5)


def test_itc_without_smoothing_or_extra_positives_is_clip_cross_entropy():
    logits = torch.randn(5, 5, generator=torch.Generator().manual_seed(1))
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    torch.testing.assert_close(smoothed_itc_loss(logits, logits.t()), expected)


def test_hand_worked_two_pair_example_of_full_smoothing():
    # ε = 1: targets are 1/2, 1/2 in every row; with logits [[2, 0], [0, 2]] each row's loss is
    # -(1/2) log(e²/(e²+1)) - (1/2) log(1/(e²+1)) = log(e² + 1) - 1.
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    expected = math.log(math.e**2 + 1) - 1
    assert smoothed_itc_loss(logits, logits.t(), smoothing=1.0).item() == pytest.approx(expected, rel=1e-6)


def test_t2i_targets_default_to_the_row_normalised_transpose():
    ids = torch.tensor([7, 7, 3])
    targets = itc_targets_from_ids(ids)
    torch.testing.assert_close(targets, torch.tensor([[0.5, 0.5, 0], [0.5, 0.5, 0], [0, 0, 1.0]]))
    skewed = torch.tensor([[1.0, 0, 0], [0.5, 0.5, 0], [0, 0, 1.0]])  # column 0 has two positives
    logits = torch.randn(3, 3, generator=torch.Generator().manual_seed(2))
    transpose = torch.tensor([[2 / 3, 1 / 3, 0], [0, 1.0, 0], [0, 0, 1.0]])
    torch.testing.assert_close(smoothed_itc_loss(logits, logits.t(), skewed),
                               smoothed_itc_loss(logits, logits.t(), skewed, transpose))


def test_detached_other_side_gives_each_direction_only_its_anchor_gradient():
    images = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(3)), dim=-1).requires_grad_()
    texts = F.normalize(torch.randn(3, 4, generator=torch.Generator().manual_seed(4)), dim=-1).requires_grad_()
    logits_per_image, logits_per_text = itc_logits(images, texts, 10.0, detach_other_side=True)
    image_only = F.cross_entropy(logits_per_image, torch.arange(3))
    image_only.backward()
    assert texts.grad is None and images.grad.abs().sum() > 0
    full_i, full_t = itc_logits(images, texts, 10.0)
    torch.testing.assert_close(full_i, logits_per_image)
    torch.testing.assert_close(full_t, logits_per_text)


def test_hard_negatives_are_the_most_similar_non_positive_candidates():
    logits = torch.tensor([[9.0, 8.0, 7.0, 1.0],
                           [5.0, 9.0, 6.0, 2.0],
                           [3.0, 4.0, 9.0, 0.0],
                           [1.0, 2.0, 3.0, 9.0]])
    assert select_hard_negatives(logits).squeeze(1).tolist() == [1, 2, 1, 2]
    ids = torch.tensor([0, 0, 1, 2])  # rows 0 and 1 show the same image
    assert select_hard_negatives(logits, ids).squeeze(1).tolist() == [2, 2, 1, 2]
    assert select_hard_negatives(logits, ids, num_negatives=2).tolist() == [[2, 3], [2, 3], [1, 0], [2, 1]]


def test_anchors_without_candidates_get_minus_one():
    ids = torch.tensor([4, 4, 4])
    assert select_hard_negatives(torch.randn(3, 3), ids).squeeze(1).tolist() == [-1, -1, -1]
    assert select_hard_negatives(torch.randn(2, 2), num_negatives=2).tolist() == [[1, -1], [0, -1]]


@pytest.mark.parametrize("mode", ["argmax", "sample"])
def test_hard_negatives_never_share_an_image_id_even_at_the_temperature_clamp(mode):
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(0, 5, (32,), generator=generator)
    embeds = F.normalize(torch.randn(32, 8, generator=generator), dim=-1)
    logits = embeds @ embeds.t() / 0.001  # softmax weights underflow to exactly 0 off the maximum
    assert (torch.softmax(logits, 1) == 0).any()
    for _ in range(20):
        chosen = select_hard_negatives(logits, ids, mode=mode, generator=generator).squeeze(1)
        valid = chosen >= 0
        assert valid.sum() == (ids.view(-1, 1) != ids.view(1, -1)).any(1).sum()
        assert not (ids[chosen[valid]] == ids[valid]).any()


def test_sampled_negatives_follow_the_softmax_over_valid_candidates():
    logits = torch.tensor([[0.0, 1.0, 2.0, 0.0]])  # candidate 0 is the diagonal, excluded
    generator = torch.Generator().manual_seed(6)
    draws = torch.stack([select_hard_negatives(logits, mode="sample", generator=generator)[0, 0]
                         for _ in range(4000)])
    expected = torch.softmax(torch.tensor([1.0, 2.0, 0.0]), 0)
    observed = torch.stack([(draws == j).float().mean() for j in (1, 2, 3)])
    assert (draws != 0).all()
    torch.testing.assert_close(observed, expected, atol=0.03, rtol=0)


def test_itm_loss_of_the_class_prior_is_the_known_plateau():
    # Predicting P(match) = 1/3 for B positives and 2B negatives: H(1/3) = 0.6365, ALBEF's "stuck" ITM loss.
    logits = torch.log(torch.tensor([[2 / 3, 1 / 3]])).expand(6, 2)
    labels = torch.tensor([1, 1, 0, 0, 0, 0])
    assert itm_loss(logits, labels).item() == pytest.approx(-(math.log(1 / 3) + 2 * math.log(2 / 3)) / 3, rel=1e-6)
    assert itm_loss(logits, labels).item() == pytest.approx(0.6365, abs=1e-4)


def test_mlm_loss_is_the_token_mean_over_masked_positions():
    logits = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(7))
    labels = torch.tensor([[-100, 2, -100], [4, 1, -100]])
    picked = [(0, 1, 2), (1, 0, 4), (1, 1, 1)]
    expected = sum(-torch.log_softmax(logits[r, c], 0)[t] for r, c, t in picked) / 3
    torch.testing.assert_close(mlm_loss(logits, labels), expected)
    nothing = torch.full((2, 3), -100)
    assert mlm_loss(logits.requires_grad_(), nothing).item() == 0.0


@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (1.0, 0.5), (0.5, 1.0)])
def test_hn_nce_term_agrees_with_the_diht_implementation(alpha, beta):
    generator = torch.Generator().manual_seed(8)
    images = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    texts = F.normalize(torch.randn(6, 8, generator=generator), dim=-1)
    logits_per_image, logits_per_text = itc_logits(images, texts, 20.0)
    ours = hn_nce_itc_loss(logits_per_image, logits_per_text, alpha, beta)
    theirs = loss_diht.hn_nce_loss(images, texts, 20.0, alpha, beta)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    if beta == 0.0 and alpha == 1.0:  # HN-NCE(1, 0) is InfoNCE, i.e. unsmoothed ITC
        torch.testing.assert_close(ours, smoothed_itc_loss(logits_per_image, logits_per_text), atol=1e-5, rtol=1e-5)


def test_copied_hn_nce_functions_are_verbatim_copies():
    source = inspect.getsource(loss_cosmo)
    copied = [line.split(".")[-1] for line in source.splitlines() if line.startswith("# Copied from modeling_diht")]
    assert "hn_nce_per_row" in copied
    for name in copied:
        assert inspect.getsource(getattr(loss_cosmo, name)) == inspect.getsource(getattr(loss_diht, name)), name

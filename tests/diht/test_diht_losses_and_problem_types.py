"""DiHT's training losses as transformers models compute them (issue 13, items 12-14).

- `DiHTForImageClassification` reads `config.problem_type` as transformers' classifiers do (regression: MSE,
  single-label: cross-entropy, multi-label: BCE with logits), checked against the formulas written out here.
- `DiHTModel(..., concept_targets=...)` adds the concept-distillation term, the same BCE as
  `trainers.losses.concept_distillation_loss` and as the formula written out here.
- A batch of one pair: HN-NCE has no negative, so each direction is -log(e^S / (alpha e^S)) = log(alpha); at alpha=1
  that is 0, which is also what transformers' CLIPModel returns; alpha=0 is undefined and raises.
"""

import inspect
import logging
import math

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

import modeling_diht  # noqa: F401
from modeling_diht import DiHTConfig, DiHTForImageClassification, DiHTModel, hn_nce_loss, hn_nce_per_row
from trainers import concept_distillation_loss as trainers_concept_distillation_loss

TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


def tiny_config(**overrides) -> DiHTConfig:
    return DiHTConfig(text_config=dict(TOWER), vision_config={**TOWER, "image_size": 30, "patch_size": 2},
                      projection_dim=16, **overrides)


def batch(size: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(size)
    ids = torch.randint(1, 49000, (size, 5), generator=generator)
    ids[:, 0], ids[:, -1] = 49406, 49407
    return {"input_ids": ids, "pixel_values": torch.randn(size, 3, 30, 30, generator=generator)}


def bce_by_hand(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))), averaged over every entry, in float64."""
    p = torch.sigmoid(logits.double())
    return -(targets * p.log() + (1 - targets) * (1 - p).log()).mean()


# ---- item 12: problem_type ----------------------------------------------------------------------------------------
def classifier(num_labels: int, **config) -> DiHTForImageClassification:
    torch.manual_seed(0)
    dual = DiHTModel(tiny_config())
    weights = torch.nn.functional.normalize(torch.randn(num_labels, 16), dim=-1)
    return DiHTForImageClassification.from_dual_encoder(dual, weights, **config).eval()


def test_integer_labels_train_single_label_cross_entropy():
    model, pixels = classifier(3), batch()["pixel_values"]
    labels = torch.tensor([0, 2, 1, 2])
    out = model(pixel_values=pixels, labels=labels)
    log_probs = out.logits.double().log_softmax(-1)
    torch.testing.assert_close(out.loss.double(), -log_probs[torch.arange(4), labels].mean())
    assert model.config.problem_type == "single_label_classification"


def test_float_multi_hot_labels_train_binary_cross_entropy():
    model, pixels = classifier(3), batch()["pixel_values"]
    labels = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    out = model(pixel_values=pixels, labels=labels)
    torch.testing.assert_close(out.loss.double(), bce_by_hand(out.logits, labels))
    assert model.config.problem_type == "multi_label_classification"


def test_one_label_is_regression_with_mean_squared_error():
    model, pixels = classifier(1), batch()["pixel_values"]
    targets = torch.tensor([0.5, -1.0, 2.0, 3.5])
    out = model(pixel_values=pixels, labels=targets)
    assert out.logits.shape == (4, 1)
    torch.testing.assert_close(out.loss.double(), ((out.logits.double().squeeze(1) - targets) ** 2).mean())
    assert model.config.problem_type == "regression"


def test_an_explicit_problem_type_is_respected():
    model, pixels = classifier(2), batch()["pixel_values"]
    model.config.problem_type = "multi_label_classification"
    labels = torch.tensor([[1, 0], [0, 1], [1, 1], [0, 0]])  # integer multi-hot: only the config says multi-label
    out = model(pixel_values=pixels, labels=labels)
    torch.testing.assert_close(out.loss.double(), bce_by_hand(out.logits, labels.double()))


# ---- item 13: concept targets in forward ----------------------------------------------------------------------------
def test_the_loss_adds_the_weighted_concept_term_to_hn_nce():
    model = DiHTModel(tiny_config(concept_head_sizes={"objects": 5}, concept_loss_weight=0.5)).eval()
    targets = torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 0], [0.7, 0, 0, 0, 0.2], [0, 0, 0, 0, 1]])
    out = model(**batch(), return_loss=True, concept_targets=targets)
    expected_concept = bce_by_hand(out.concept_logits["objects"], targets)
    torch.testing.assert_close(out.concept_loss.double(), expected_concept)
    plain = model(**batch(), return_loss=True)
    torch.testing.assert_close(out.contrastive_loss, plain.contrastive_loss)
    torch.testing.assert_close(out.loss.double(), plain.contrastive_loss.double() + 0.5 * expected_concept)


def test_the_concept_term_equals_the_trainers_concept_distillation_loss():
    model = DiHTModel(tiny_config(concept_head_sizes={"objects": 5})).eval()
    targets = (torch.rand(4, 5, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    out = model(**batch(), concept_targets=targets)
    torch.testing.assert_close(out.concept_loss, trainers_concept_distillation_loss(out.concept_logits["objects"], targets))
    assert out.loss is None  # the concept term is reported; the training loss needs return_loss=True


def test_every_head_with_targets_is_trained_and_their_terms_add_up():
    model = DiHTModel(tiny_config(concept_head_sizes={"objects": 5, "attributes": 3}))
    targets = {"objects": torch.zeros(4, 5), "attributes": torch.ones(4, 3)}
    out = model(**batch(), return_loss=True, concept_targets=targets)
    expected = bce_by_hand(out.concept_logits["objects"], targets["objects"]) + bce_by_hand(
        out.concept_logits["attributes"], targets["attributes"])
    torch.testing.assert_close(out.concept_loss.double(), expected)
    out.loss.backward()
    for name in ("objects", "attributes"):
        assert model.concept_heads[name].weight.grad.abs().sum() > 0


def test_heads_without_targets_stay_in_the_graph_with_zero_gradient_and_a_warning(caplog):
    model = DiHTModel(tiny_config(concept_head_sizes={"objects": 5, "attributes": 3}))
    with caplog.at_level(logging.WARNING):
        out = model(**batch(), return_loss=True, concept_targets={"objects": torch.zeros(4, 5)})
    out.loss.backward()
    idle = model.concept_heads["attributes"].weight.grad
    assert idle is not None and torch.count_nonzero(idle) == 0  # DDP sees a gradient for every parameter
    assert model.concept_heads["objects"].weight.grad.abs().sum() > 0
    assert "attributes" in caplog.text


@pytest.mark.parametrize("heads, targets, message", [
    ({"objects": 5, "attributes": 3}, torch.zeros(4, 5), "ambiguous"),
    ({"objects": 5}, {"colours": torch.zeros(4, 5)}, "unknown heads"),
    ({}, torch.zeros(4, 5), "no concept heads"),
    ({"objects": 5}, torch.zeros(4, 4), "differ in shape"),
])
def test_concept_targets_that_match_no_head_are_refused(heads, targets, message):
    model = DiHTModel(tiny_config(concept_head_sizes=heads))
    with pytest.raises(ValueError, match=message):
        model(**batch(), return_loss=True, concept_targets=targets)


def test_forward_accepts_concept_targets_so_the_trainer_keeps_the_column():
    # transformers' Trainer(remove_unused_columns=True) drops the dataset columns forward does not name.
    assert "concept_targets" in inspect.signature(DiHTModel.forward).parameters


# ---- item 14: a batch of one, and transformers' kwargs ------------------------------------------------------------
def test_a_batch_of_one_has_clips_loss_zero_at_alpha_one():
    model = DiHTModel(tiny_config(hn_nce_alpha=1.0, hn_nce_beta=0.5)).eval()
    clip = CLIPModel(CLIPConfig(text_config=dict(TOWER), vision_config={**TOWER, "image_size": 30, "patch_size": 2},
                                projection_dim=16)).eval()
    clip.load_state_dict(model.state_dict())
    one = batch(1)
    ours, theirs = model(**one, return_loss=True).loss, clip(**one, return_loss=True).loss
    torch.testing.assert_close(ours, theirs)
    assert ours.item() == 0.0


@pytest.mark.parametrize("alpha", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("chunk_size", [None, 1])
def test_one_pair_loss_is_log_alpha_with_zero_gradient(alpha, chunk_size):
    image = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1).requires_grad_()
    text = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1).requires_grad_()
    scale = torch.tensor(20.0, requires_grad=True)
    loss = hn_nce_loss(image, text, scale, alpha=alpha, beta=0.5, chunk_size=chunk_size)
    torch.testing.assert_close(loss, torch.tensor(math.log(alpha)))
    loss.backward()
    for tensor in (image, text, scale):
        assert tensor.grad is not None and torch.count_nonzero(tensor.grad) == 0


def test_one_pair_at_alpha_zero_is_undefined_and_raises():
    image = text = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1)
    with pytest.raises(ValueError, match="alpha=0"):
        hn_nce_loss(image, text, 10.0, alpha=0.0)
    with pytest.raises(ValueError, match="alpha=0"):
        hn_nce_per_row(torch.randn(3, 1), torch.zeros(3, dtype=torch.long), alpha=0.0)


def test_rows_with_a_single_candidate_have_loss_log_alpha():
    torch.testing.assert_close(hn_nce_per_row(torch.randn(3, 1), torch.zeros(3, dtype=torch.long), alpha=0.5),
                               torch.full((3,), math.log(0.5)))


def test_forward_kwargs_carry_transformers_output_flags():
    model = DiHTModel(tiny_config()).eval()
    model.set_attn_implementation("eager")  # SDPA returns no attention weights
    out = model(**batch(), output_attentions=True, output_hidden_states=True)
    assert len(out.vision_model_output.attentions) == len(out.text_model_output.attentions) == 2
    assert len(out.vision_model_output.hidden_states) == 3  # embeddings + 2 layers
    # transformers' common tests look for the flags in the annotation of **kwargs (TransformersKwargs).
    annotation = inspect.signature(DiHTModel.forward).parameters["kwargs"].annotation
    assert "output_attentions" in annotation.__args__[0].__annotations__


# ---- the trainer's clamp ------------------------------------------------------------------------------------------
def test_clamped_parameters_bound_the_logit_scale_at_clips_100():
    model = DiHTModel(tiny_config())
    bounds = model.clamped_parameters()
    assert set(bounds) <= dict(model.named_parameters()).keys()
    low, high = bounds["logit_scale"]
    assert (low, math.exp(high)) == (0.0, pytest.approx(100.0))
    assert low <= model.logit_scale.item() <= high  # the initial value, ln(1/0.07), lies inside

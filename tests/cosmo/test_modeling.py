"""COSMO models: outputs, bidirectional fusion, cross-attention placement, caching, attention backends and
gradient checkpointing."""

import pytest
import torch
import torch.nn.functional as F

from modeling_cosmo import CosmoForImageTextRetrieval, CosmoForPreTraining, CosmoModel
from modeling_cosmo.modeling_cosmo_layers import CosmoFusionLayer
from tests.cosmo.helpers import random_batch, random_mlm, tiny_config


@pytest.fixture
def batch():
    return random_batch(batch_size=4, seq_len=8)


def _model(cls=CosmoForPreTraining, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return cls(tiny_config(**overrides))


def test_forward_returns_clip_fields_with_documented_shapes(batch):
    model = _model(CosmoModel).eval()
    out = model(**batch)
    assert out.logits_per_image.shape == (4, 4) and out.logits_per_text.shape == (4, 4)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_image.t())
    assert out.image_embeds.shape == out.text_embeds.shape == (4, 16)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(4))
    assert out.logit_scale.shape == () and out.logit_scale.requires_grad
    torch.testing.assert_close(out.logit_scale, torch.tensor(1 / 0.07))
    torch.testing.assert_close(out.logits_per_image, out.logit_scale * out.image_embeds @ out.text_embeds.t())
    assert out.vision_model_output.last_hidden_state.shape == (4, 17, 32)
    assert out.loss is None


def test_get_features_return_transformers5_outputs_with_normalised_embeddings(batch):
    model = _model(CosmoModel).eval()
    out = model(**batch)
    image = model.get_image_features(pixel_values=batch["pixel_values"])
    text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                                   token_type_ids=torch.zeros_like(batch["input_ids"]))
    torch.testing.assert_close(image.pooler_output, out.image_embeds)
    torch.testing.assert_close(text.pooler_output, out.text_embeds)
    expected = F.normalize(model.text_proj(text.last_hidden_state[:, 0]), dim=-1)
    torch.testing.assert_close(text.pooler_output, expected)


def test_cross_attention_exists_only_in_the_fusion_layers():
    model = _model(CosmoModel)
    layers = model.text_model.encoder.layer
    assert [hasattr(layer, "crossattention") for layer in layers] == [False, False, True, True]
    assert [isinstance(layer, CosmoFusionLayer) for layer in layers] == [False, False, True, True]


def test_text_embeddings_ignore_the_image_and_fusion_states_depend_on_it(batch):
    model = _model(CosmoModel).eval()
    other_images = batch["pixel_values"].flip(0)
    a, b = model(**batch), model(**{**batch, "pixel_values": other_images})
    torch.testing.assert_close(a.text_embeds, b.text_embeds)
    text_states = model.encode_text(batch["input_ids"], batch["attention_mask"])
    fused_a = model.fuse(text_states, batch["attention_mask"], model.encode_image(batch["pixel_values"]))
    fused_b = model.fuse(text_states, batch["attention_mask"], model.encode_image(other_images))
    assert (fused_a - fused_b).abs().amax() > 1e-3


def test_fusion_self_attention_is_bidirectional(batch):
    model = _model(CosmoModel).eval()
    ids, mask = batch["input_ids"][3:4], batch["attention_mask"][3:4]  # row 3 has 6 real tokens
    changed = ids.clone()
    changed[0, 4] = (ids[0, 4] + 1 - 5) % 28 + 5  # another word at position 4
    image = model.encode_image(batch["pixel_values"][3:4])
    # The fusion layers alone, on identical text states except position 4: position 1 must see the change.
    states = model.encode_text(ids, mask)
    perturbed = states.clone()
    perturbed[0, 4] += 1.0
    fused, fused_perturbed = model.fuse(states, mask, image), model.fuse(perturbed, mask, image)
    assert (fused[0, 1] - fused_perturbed[0, 1]).abs().amax() > 1e-4
    # And through the whole model: an earlier position's output depends on a later token.
    full = model.fuse(model.encode_text(changed, mask), mask, image)
    assert (fused[0, 1] - full[0, 1]).abs().amax() > 1e-4


def test_padding_does_not_change_the_outputs_of_real_tokens(batch):
    model = _model(CosmoForImageTextRetrieval).eval()
    ids, mask, image = batch["input_ids"][:1, :3], batch["attention_mask"][:1, :3], batch["pixel_values"][:1]
    padded_ids = torch.cat([ids, torch.tensor([[7, 9, 11]])], 1)  # junk where the mask is 0
    padded_mask = torch.cat([mask, torch.zeros(1, 3, dtype=torch.long)], 1)
    out = model(input_ids=ids, attention_mask=mask, pixel_values=image)
    padded = model(input_ids=padded_ids, attention_mask=padded_mask, pixel_values=image)
    torch.testing.assert_close(out.itm_score, padded.itm_score, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.text_embeds, padded.text_embeds, atol=1e-5, rtol=1e-5)


def test_cached_keys_values_give_the_same_itm_logits_as_the_plain_path(batch):
    model = _model(CosmoForImageTextRetrieval).eval()
    image_states = model.encode_image(batch["pixel_values"])
    text_states = model.encode_text(batch["input_ids"], batch["attention_mask"])
    pairs = torch.tensor([[0, 1], [2, 1], [2, 3], [0, 0], [3, 2], [1, 1]])
    cache = model.precompute_cross_attention(image_states)
    plain = model.itm_logits(text_states, batch["attention_mask"], image_states, pairs=pairs)
    cached = model.itm_logits(text_states, batch["attention_mask"], pairs=pairs, cross_attention_cache=cache)
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)
    # One image against all texts: folded queries against one image's keys and values.
    one = model.itm_logits(text_states, batch["attention_mask"], cross_attention_cache=cache.select(slice(2, 3)))
    per_pair = model.itm_logits(text_states, batch["attention_mask"], image_states[2:3].expand(4, -1, -1))
    torch.testing.assert_close(one, per_pair, atol=1e-5, rtol=1e-5)


def test_retrieval_forward_scores_one_image_against_many_texts(batch):
    model = _model(CosmoForImageTextRetrieval).eval()
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"][1:2])
    plain = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  pixel_values=batch["pixel_values"][1:2], use_cache=False)
    assert out.itm_score.shape == (4, 2) and out.logits_per_image.shape == (1, 4)
    torch.testing.assert_close(out.itm_score, plain.itm_score, atol=1e-5, rtol=1e-5)
    paired = model(**batch)
    torch.testing.assert_close(paired.itm_score[1], out.itm_score[1], atol=1e-5, rtol=1e-5)


def test_image_and_text_widths_may_differ(batch):
    model = _model(CosmoForPreTraining, vision={"hidden_size": 48, "num_attention_heads": 4,
                                                "intermediate_size": 96})
    assert model.config.text_config.encoder_width == 48
    out = model(**batch, **random_mlm(batch["input_ids"], batch["attention_mask"]))
    assert torch.isfinite(out.loss)


@pytest.mark.parametrize("cls", [CosmoModel, CosmoForImageTextRetrieval, CosmoForPreTraining])
def test_models_declare_the_temperature_and_its_clamp(cls):
    model = _model(cls)
    clamped = model.clamped_parameters()
    assert clamped == {"temp": (0.001, 0.5)}
    names = dict(model.named_parameters())
    assert set(clamped) <= set(names) and names["temp"].numel() == 1 and names["temp"].dim() == 1


def test_forward_uses_the_temperature_clamped_to_its_range(batch):
    model = _model(CosmoModel).eval()
    with torch.no_grad():
        model.temp.fill_(1e-6)
    assert model(**batch).logit_scale.item() == pytest.approx(1000.0)
    with torch.no_grad():
        model.temp.fill_(3.0)
    assert model(**batch).logit_scale.item() == pytest.approx(2.0)


@pytest.mark.parametrize("mode", ["argmax", "sample"])
def test_loss_is_finite_at_the_temperature_clamp_with_duplicate_images(batch, mode):
    model = _model(hard_negative_mode=mode)
    with torch.no_grad():
        model.temp.fill_(0.001)
    out = model(**batch, image_id=torch.tensor([5, 5, 6, 7]),
                **random_mlm(batch["input_ids"], batch["attention_mask"]))
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # No ITM negative shares the anchor's image: rows 0 and 1 show image 5.
    ids = torch.tensor([5, 5, 6, 7])
    negatives = out.itm_pairs[out.itm_labels == 0]
    assert not (ids[negatives[:, 0]] == ids[negatives[:, 1]]).any()


def test_itm_rows_are_positives_then_hard_negatives_then_extra_rows(batch):
    model = _model()
    extra = torch.tensor([[0, 2], [3, 1]])
    out = model(**batch, extra_itm_pairs=extra)
    assert out.itm_pairs.shape == (4 + 8 + 2, 2) and out.itm_logits.shape == (14, 2)
    torch.testing.assert_close(out.itm_pairs[:4], torch.arange(4).repeat(2, 1).t())
    assert out.itm_labels.tolist() == [1] * 4 + [0] * 8 + [1] * 2
    torch.testing.assert_close(out.itm_pairs[-2:], extra)
    assert out.mlm_loss is None and torch.allclose(out.loss, out.itc_loss + out.itm_loss)


def test_extra_mlm_rows_are_conditioned_on_their_image(batch):
    model = _model().eval()
    mlm = random_mlm(batch["input_ids"], batch["attention_mask"])
    rows = torch.tensor([0, 1, 2, 3, 2])  # an extra row: text 2 on image 0 (a converted pair)
    images = torch.tensor([0, 1, 2, 3, 0])
    args = {"mlm_input_ids": mlm["mlm_input_ids"][rows], "mlm_labels": mlm["mlm_labels"][rows],
            "mlm_attention_mask": batch["attention_mask"][rows]}
    out = model(**batch, **args, mlm_image_index=images)
    image_states = model.encode_image(batch["pixel_values"])
    logits = model.mlm_logits(args["mlm_input_ids"], args["mlm_attention_mask"], image_states[images])
    expected = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), args["mlm_labels"].reshape(-1))
    torch.testing.assert_close(out.mlm_loss, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="mlm_image_index"):
        model(**batch, mlm_input_ids=args["mlm_input_ids"], mlm_labels=args["mlm_labels"])


def test_eager_and_sdpa_attention_agree(batch):
    sdpa = _model().eval()
    assert sdpa.config._attn_implementation == "sdpa"
    assert sdpa.config.text_config._attn_implementation == sdpa.config.vision_config._attn_implementation == "sdpa"
    eager = _model().eval()
    eager.set_attn_implementation("eager")
    assert eager.config.text_config._attn_implementation == eager.config.vision_config._attn_implementation == "eager"
    inputs = {**batch, **random_mlm(batch["input_ids"], batch["attention_mask"])}
    a, b = sdpa(**inputs), eager(**inputs)
    for field in ("loss", "itc_loss", "itm_loss", "mlm_loss", "itm_logits", "logits_per_image"):
        torch.testing.assert_close(a[field], b[field], atol=1e-5, rtol=1e-4, msg=field)
    cache_a = sdpa.precompute_cross_attention(sdpa.encode_image(batch["pixel_values"]))
    cache_b = eager.precompute_cross_attention(eager.encode_image(batch["pixel_values"]))
    text = sdpa.encode_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(
        sdpa.itm_logits(text, batch["attention_mask"], cross_attention_cache=cache_a.select(slice(0, 1))),
        eager.itm_logits(text, batch["attention_mask"], cross_attention_cache=cache_b.select(slice(0, 1))),
        atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(batch):
    plain, checkpointed = _model(), _model()
    checkpointed.activation_checkpointing_enable()
    assert any(getattr(m, "gradient_checkpointing", False) for m in checkpointed.modules())
    inputs = {**batch, **random_mlm(batch["input_ids"], batch["attention_mask"])}
    plain.train(), checkpointed.train()
    plain(**inputs).loss.backward()
    checkpointed(**inputs).loss.backward()
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_every_parameter_gets_a_gradient_from_the_local_loss(batch):
    model = _model()
    model(**batch, **random_mlm(batch["input_ids"], batch["attention_mask"])).loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


def test_hn_nce_can_replace_the_itc_term(batch):
    from modeling_cosmo.loss_cosmo import hn_nce_itc_loss

    model = _model(itc_loss="hn_nce", hn_nce_alpha=1.0, hn_nce_beta=0.5)
    out = model(**batch)
    torch.testing.assert_close(out.itc_loss, hn_nce_itc_loss(out.logits_per_image, out.logits_per_text, 1.0, 0.5))
    with pytest.raises(ValueError, match="hn_nce"):
        model(**batch, itc_targets=torch.eye(4))
    # COCO-style data (two captions of one image): the ITC term stays HN-NCE over the own pairs, and the pair of
    # the same image is still never an ITM negative.
    image_id = torch.tensor([0, 0, 1, 2])
    with_ids = model(**batch, image_id=image_id)
    torch.testing.assert_close(with_ids.itc_loss, out.itc_loss)
    same_image = image_id[with_ids.itm_pairs[:, 0]] == image_id[with_ids.itm_pairs[:, 1]]
    assert bool((with_ids.itm_labels[same_image] == 1).all())


def test_the_trainer_must_not_pass_loss_kwargs():
    assert CosmoModel.accepts_loss_kwargs is False and CosmoForPreTraining.accepts_loss_kwargs is False

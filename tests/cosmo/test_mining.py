"""COSMO's efficient connection mining (arXiv 2312.06112, ECM): the three-way split of the hardest negatives worked by
hand, the targets the trainer builds from it against a reference written here, the discriminator adapters and
their cache, and the refusal to mine without a trained discriminator."""

import math

import pytest
import torch
import torch.nn.functional as F

from modeling_cosmo import CosmoForImageTextRetrieval, CosmoForPreTraining
from tests.cosmo.helpers import random_batch, tiny_config, tiny_tokenizer
from trainers import (
    BlipDiscriminator,
    ConnectionMiner,
    CosmoDiscriminator,
    CosmoTrainer,
    CosmoTrainingArguments,
    ITMDiscriminator,
    mining_quality,
)


class TableDiscriminator(ITMDiscriminator):
    """Match probabilities looked up in a table {(image row, text row): p} (unlisted pairs: 0.1), through the base
    class's path (unimodal encodings, cache, softmax of two logits)."""

    def __init__(self, table: dict, default: float = 0.1, **options):
        super().__init__(torch.nn.Linear(1, 1), **options)
        self.table, self.default, self.seen_pairs = table, default, []

    def encode_images(self, pixel_values):
        return pixel_values.flatten(1)[:, :1]

    def encode_texts(self, input_ids, attention_mask):
        return input_ids[:, :1].float()

    def match_logits(self, image_states, text_states, input_ids, attention_mask, pairs):
        self.seen_pairs.append(pairs.tolist())
        p = torch.tensor([self.table.get(tuple(pair), self.default) for pair in pairs.tolist()])
        return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1)  # softmax(...)[:, 1] == p


# Rows: texts (t2i) or images (i2t); columns: candidates. Hardest and second-hardest off-diagonal entries by hand.
LOGITS_PER_TEXT = torch.tensor([[9.0, 5, 3, 1],    # text 0: image 1, then 2
                                [2.0, 9, 7, 6],    # text 1: image 2, then 3
                                [1.0, 8, 9, 4],    # text 2: image 1, then 3
                                [1.0, 2, 6, 9]])   # text 3: image 2, then 1
LOGITS_PER_IMAGE = torch.tensor([[9.0, 1, 7, 2],   # image 0: text 2, then 3
                                 [6.0, 9, 2, 5],   # image 1: text 0, then 3
                                 [1.0, 3, 9, 8],   # image 2: text 3, then 1
                                 [2.0, 7, 4, 9]])  # image 3: text 1, then 2
# Scored (image, text) pairs: t2i (1,0) (2,1) (1,2) (2,3); i2t (0,2) (1,0) (2,3) (3,1).
PROBABILITIES = {(1, 0): 0.9,   # > 0.8: converted (scored from both sides)
                 (2, 1): 0.8,   # = high: neutral (conversion needs p > high)
                 (1, 2): 0.5,   # = low: neutral (a negative needs p < low)
                 (2, 3): 0.1,   # negative
                 (0, 2): 0.95,  # converted
                 (3, 1): 0.3}   # negative


def inputs(batch_size=4, index=None):
    batch = random_batch(batch_size)
    if index is not None:
        batch["index"] = torch.tensor(index)
    return batch


def test_the_hardest_negatives_split_three_ways_as_worked_by_hand():
    discriminator = TableDiscriminator(PROBABILITIES)
    mined = ConnectionMiner(discriminator).mine(inputs(), LOGITS_PER_IMAGE, LOGITS_PER_TEXT)
    assert discriminator.seen_pairs == [[[1, 0], [2, 1], [1, 2], [2, 3], [0, 2], [1, 0], [2, 3], [3, 1]]]  # 2B
    assert mined.decisions.tolist() == [1, 0, 0, -1, 1, 1, -1, -1]
    assert torch.allclose(mined.scores, torch.tensor([0.9, 0.8, 0.5, 0.1, 0.95, 0.9, 0.1, 0.3]))
    assert mined.counts() == {"converted": 3, "neutral": 2, "negative": 3}
    # ITM negatives: the true negatives, then for each neutral anchor its second-hardest candidate (not re-scored):
    # text 1 -> image 3, text 2 -> image 3.
    assert mined.negative_pairs.tolist() == [[2, 3], [2, 3], [3, 1], [3, 1], [3, 2]]
    assert mined.converted_pairs.tolist() == [[1, 0], [0, 2], [1, 0]]  # ITM label 1, MLM rows
    assert mined.converted_text_to_image.tolist() == [[0, 1]]  # text 0 gains image 1 as an ITC positive
    assert mined.converted_image_to_text.tolist() == [[0, 2], [1, 0]]  # image 0 gains text 2, image 1 text 0


def test_thresholds_are_configurable_and_checked():
    mined = ConnectionMiner(TableDiscriminator(PROBABILITIES), low=0.2, high=0.85).mine(
        inputs(), LOGITS_PER_IMAGE, LOGITS_PER_TEXT)
    assert mined.decisions.tolist() == [1, 0, 0, -1, 1, 1, -1, 0]  # 0.3 is neutral now, 0.8 still neutral
    with pytest.raises(ValueError, match="low <= high"):
        ConnectionMiner(TableDiscriminator({}), low=0.9, high=0.5)


def test_pairs_of_one_image_are_never_scored():
    # Rows 0 and 1 show one image: text 0's hardest other image (1) is excluded, image 2 comes next.
    mined = ConnectionMiner(TableDiscriminator({})).mine(inputs(), LOGITS_PER_IMAGE, LOGITS_PER_TEXT,
                                                          image_id=torch.tensor([7, 7, 8, 9]))
    scored = mined.scored_pairs.tolist()
    assert scored[0] == [2, 0]
    assert all({image, text} != {0, 1} for image, text in scored)


def test_history_and_quality_against_a_known_ground_truth():
    miner = ConnectionMiner(TableDiscriminator(PROBABILITIES), history=100)
    miner.mine(inputs(index=[10, 11, 12, 13]), LOGITS_PER_IMAGE, LOGITS_PER_TEXT)
    assert [record[:2] for record in miner.records][:2] == [(11, 10), (12, 11)]  # dataset indices, not batch rows
    truth = {(11, 10), (10, 12), (12, 11)}  # true matches among the scored pairs
    quality = mining_quality(miner.records, lambda image, text: (image, text) in truth)
    # Converted: (11,10) twice, (10,12): all true -> precision 1. True matches scored: (11,10) x2, (12,11), (10,12)
    # -> 3 of 4 converted. Chance: 4 true of 8 scored.
    assert quality["precision"] == 1.0 and quality["recall"] == 0.75 and quality["chance_precision"] == 0.5


def test_the_cache_runs_the_unimodal_encoders_once_per_row():
    discriminator = TableDiscriminator(PROBABILITIES, cache_unimodal=True)
    miner = ConnectionMiner(discriminator)
    first = miner.mine(inputs(index=[0, 1, 2, 3]), LOGITS_PER_IMAGE, LOGITS_PER_TEXT)
    again = miner.mine(inputs(index=[2, 3, 0, 1]), LOGITS_PER_IMAGE, LOGITS_PER_TEXT)
    assert discriminator.unimodal_calls == 4  # the second batch holds the same rows: nothing re-encoded
    assert first.decisions.tolist() == again.decisions.tolist()  # the table is by batch row here


def tiny_cosmo_pair():
    torch.manual_seed(0)
    return CosmoForImageTextRetrieval(tiny_config()).eval()


def test_cosmo_discriminator_scores_as_the_model_s_own_itm_head():
    model = tiny_cosmo_pair()
    batch = random_batch(4)
    pairs = torch.tensor([[0, 1], [2, 0], [3, 3], [1, 2]])
    got = CosmoDiscriminator(model).match_probability(batch, pairs)
    with torch.no_grad():
        images = model.encode_image(batch["pixel_values"])
        texts = model.encode_text(batch["input_ids"], batch["attention_mask"])
        expected = torch.stack([  # one pair at a time through the plain fusion path
            model.itm_logits(texts[[t]], batch["attention_mask"][[t]], images[[i]])[0] for i, t in pairs.tolist()
        ]).softmax(-1)[:, 1]
    assert torch.allclose(got, expected, atol=1e-5)
    cached = CosmoDiscriminator(model, cache_unimodal=True)
    with_index = {**batch, "index": torch.arange(4)}
    assert torch.allclose(cached.match_probability(with_index, pairs), expected, atol=1e-5)



def test_cached_text_states_serve_a_batch_padded_to_another_length():
    """Batches are padded to their longest caption: a row cached from one batch must score the same in a later
    batch whose padding is longer (or shorter) than the first's."""
    model = tiny_cosmo_pair()
    first = {**random_batch(4, seq_len=7), "index": torch.arange(4)}
    order = [2, 3, 0, 1]
    pad = torch.zeros(4, 3, dtype=torch.long)
    later = {"pixel_values": first["pixel_values"][order], "index": torch.tensor(order),
             "input_ids": torch.cat([first["input_ids"][order], pad], 1),
             "attention_mask": torch.cat([first["attention_mask"][order], pad], 1)}
    shorter = {key: value[:, :first["attention_mask"].sum(1).max()] if key in ("input_ids", "attention_mask")
               else value for key, value in first.items()}
    pairs = torch.tensor([[0, 1], [2, 0], [3, 3], [1, 2]])
    cached = CosmoDiscriminator(model, cache_unimodal=True)
    cached.match_probability(first, pairs)
    for batch in (later, shorter):
        expected = CosmoDiscriminator(model).match_probability(batch, pairs)
        torch.testing.assert_close(cached.match_probability(batch, pairs), expected, atol=1e-5, rtol=1e-5)
    assert cached.unimodal_calls == 4  # the later batches were served from the cache

def tiny_blip():
    from transformers import BlipConfig, BlipForImageTextRetrieval

    config = BlipConfig(
        text_config={"vocab_size": 40, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 40, "encoder_hidden_size": 32},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                       "image_size": 48, "patch_size": 16},
        projection_dim=16, image_text_hidden_size=16)
    torch.manual_seed(0)
    return BlipForImageTextRetrieval(config).eval()


def test_blip_discriminator_scores_as_blip_s_itm_head_on_resized_images():
    model = tiny_blip()
    batch = random_batch(3)  # 32 px student images; BLIP reads 48 px
    pairs = torch.tensor([[0, 2], [1, 1], [2, 0]])
    got = BlipDiscriminator(model, student_vocab_size=40).match_probability(batch, pairs)
    resized = F.interpolate(batch["pixel_values"], size=(48, 48), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected = torch.stack([
            model(input_ids=batch["input_ids"][[t]], attention_mask=batch["attention_mask"][[t]],
                  pixel_values=resized[[i]], use_itm_head=True).itm_score[0] for i, t in pairs.tolist()
        ]).softmax(-1)[:, 1]
    assert torch.allclose(got, expected, atol=1e-5)
    with pytest.raises(ValueError, match="vocabulary"):
        BlipDiscriminator(model, student_vocab_size=30522 + 1)


# ---- the trainer: targets, labels and MLM rows built from the decisions ---------------------------------------------

def cosmo_trainer(tmp_path, miner_model, **arguments):
    from trainers import ImageTextCollator, MaskedCaptions

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    model = CosmoForPreTraining(tiny_config())
    args = CosmoTrainingArguments(str(tmp_path), use_cpu=True, report_to="none", grouped_batches=False,
                                  **arguments)
    collator = ImageTextCollator(tokenizer, None, add_ons=[MaskedCaptions(tokenizer, seed=0)])
    return CosmoTrainer(model=model, args=args, data_collator=collator, discriminator=miner_model)


class AlwaysMatch(TableDiscriminator):
    """Every scored pair is a false negative (p = 0.9)."""

    def __init__(self):
        super().__init__({}, default=0.9)


def masked(batch, tokenizer):
    from trainers import MaskedCaptions

    return {**batch, **MaskedCaptions(tokenizer, seed=0)(batch, [])}


@pytest.mark.parametrize("smoothing_epoch,expected_epsilon", [(0, 0.5), (5, 0.0)])
def test_itc_targets_hold_own_pair_and_conversions_in_their_direction(tmp_path, smoothing_epoch, expected_epsilon):
    trainer = cosmo_trainer(tmp_path, AlwaysMatch(), itc_smoothing=0.5, itc_smoothing_start_epoch=smoothing_epoch)
    batch = masked(random_batch(4), tiny_tokenizer())
    loss, terms, outputs = trainer.compute_loss_terms(trainer.model, dict(batch))

    # The reference: recompute the hardest negatives from the outputs, convert them all, build soft targets by hand.
    logits_i2t, logits_t2i = outputs.logits_per_image.detach(), outputs.logits_per_text.detach()
    eye = torch.eye(4, dtype=torch.bool)
    hardest_text = logits_i2t.masked_fill(eye, -math.inf).argmax(1)  # image i -> text
    hardest_image = logits_t2i.masked_fill(eye, -math.inf).argmax(1)  # text t -> image
    image_positive, text_positive = eye.clone(), eye.clone()
    image_positive[torch.arange(4), hardest_text] = True
    text_positive[torch.arange(4), hardest_image] = True

    def soft(positive):
        y = positive.float() / positive.float().sum(1, keepdim=True)
        return (1 - expected_epsilon) * y + expected_epsilon / 4

    scale = outputs.logit_scale
    similarity = scale * outputs.image_embeds @ outputs.text_embeds.t()
    reference = 0.5 * (-(soft(image_positive) * similarity.log_softmax(1)).sum(1).mean()
                       - (soft(text_positive) * similarity.t().log_softmax(1)).sum(1).mean())
    assert torch.allclose(terms["itc_loss"], reference, atol=1e-5)
    assert float(terms["itc_smoothing"]) == expected_epsilon
    # ITM: B positives, the 2B converted pairs as extra positives, no negatives left; MLM: B + 2B rows.
    assert outputs.itm_labels.tolist() == [1] * 12
    assert float(terms["ecm_converted"]) == 8 and trainer.ecm_counts["converted"] == 8
    assert torch.allclose(loss, terms["itc_loss"] + terms["itm_loss"] + terms["mlm_loss"])


def test_without_conversions_the_itc_is_the_plain_one_and_itm_keeps_its_hard_negatives(tmp_path):
    trainer = cosmo_trainer(tmp_path, TableDiscriminator({}, default=0.1), itc_smoothing=0.0)
    batch = masked(random_batch(4), tiny_tokenizer())
    _, terms, outputs = trainer.compute_loss_terms(trainer.model, dict(batch))
    similarity = outputs.logit_scale * outputs.image_embeds @ outputs.text_embeds.t()
    labels = torch.arange(4)
    reference = 0.5 * (F.cross_entropy(similarity, labels) + F.cross_entropy(similarity.t(), labels))
    assert torch.allclose(terms["itc_loss"], reference, atol=1e-5)
    assert outputs.itm_labels.tolist() == [1] * 4 + [0] * 8
    assert trainer.ecm_counts == {"converted": 0, "neutral": 0, "negative": 8}


def test_mining_without_a_discriminator_is_refused(tmp_path):
    with pytest.raises(ValueError, match="--discriminator"):
        cosmo_trainer(tmp_path, None)


def test_a_discriminator_folder_without_a_trained_itm_head_is_refused(tmp_path):
    from modeling_cosmo import CosmoModel

    torch.manual_seed(0)
    CosmoModel(tiny_config()).save_pretrained(tmp_path / "no_head")  # encoders only: the ITM head would be random
    with pytest.raises(ValueError, match="no trained ITM head"):
        cosmo_trainer(tmp_path / "run", None, discriminator=str(tmp_path / "no_head"))

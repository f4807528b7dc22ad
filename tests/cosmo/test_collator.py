"""`CosmoDataCollator`: MLM inputs made by `transformers.DataCollatorForLanguageModeling` (p = 0.5, 80/10/10)."""

import torch

from modeling_cosmo import CosmoDataCollator
from tests.cosmo.helpers import VOCAB, tiny_tokenizer

SENTENCES = ["a cat sitting on the grass", "the red car is on the road", "a man and a woman with a dog",
             "a small blue bird in the sky", "big green cars", "a photo of a dog"]


def test_masking_statistics_match_the_recipe():
    tokenizer = tiny_tokenizer()
    collator = CosmoDataCollator(tokenizer, mlm_probability=0.5, seed=0)
    examples = [{"text": SENTENCES[i % len(SENTENCES)], "image_id": i} for i in range(3000)]
    batch = collator(examples)
    special = torch.tensor([VOCAB.index(t) for t in ("[PAD]", "[CLS]", "[SEP]")])
    eligible = ~torch.isin(batch["input_ids"], special)
    selected = batch["mlm_labels"] != -100
    assert not (selected & ~eligible).any()  # [CLS], [SEP] and padding are never selected
    assert torch.equal(batch["mlm_labels"][selected], batch["input_ids"][selected])
    share = selected.sum() / eligible.sum()
    assert abs(share.item() - 0.5) < 0.01
    masked = batch["mlm_input_ids"][selected]
    originals = batch["input_ids"][selected]
    mask_share = (masked == VOCAB.index("[MASK]")).float().mean().item()
    kept_share = ((masked == originals) & (originals != VOCAB.index("[MASK]"))).float().mean().item()
    random_share = 1 - mask_share - kept_share
    assert abs(mask_share - 0.8) < 0.015
    # Random replacements sometimes draw the original token (1 in 33): kept ≈ 0.1 + 0.1/33.
    assert abs(kept_share - (0.1 + 0.1 / len(VOCAB))) < 0.012
    assert abs(random_share - (0.1 - 0.1 / len(VOCAB))) < 0.012
    assert torch.equal(batch["mlm_input_ids"][~selected], batch["input_ids"][~selected])
    assert batch["image_id"].tolist() == list(range(3000))


def test_pre_tokenised_examples_and_images_are_batched():
    tokenizer = tiny_tokenizer()
    collator = CosmoDataCollator(tokenizer, seed=1)
    encoded = [tokenizer(text) for text in SENTENCES[:3]]
    examples = [{"input_ids": e["input_ids"], "attention_mask": e["attention_mask"],
                 "pixel_values": torch.randn(3, 8, 8)} for e in encoded]
    batch = collator(examples)
    longest = max(len(e["input_ids"]) for e in encoded)
    assert batch["input_ids"].shape == batch["mlm_input_ids"].shape == (3, longest)
    assert batch["pixel_values"].shape == (3, 3, 8, 8)
    assert batch["attention_mask"].sum(1).tolist() == [len(e["input_ids"]) for e in encoded]
    assert "labels" not in batch  # transformers' Trainer treats `labels` specially; the MLM targets are mlm_labels


def test_texts_are_truncated_to_max_length():
    batch = CosmoDataCollator(tiny_tokenizer(), max_length=5, seed=2)([{"text": SENTENCES[2]}])
    assert batch["input_ids"].shape == (1, 5) and batch["input_ids"][0, -1].item() == VOCAB.index("[SEP]")

"""`evaluation.itm_rerank.ITMRescorer`: ITM scores of (image, text) pairs, each image and text encoded once."""

import pytest
import torch

from evaluation.itm_rerank import ITMRescorer
from modeling_cosmo import CosmoForImageTextRetrieval
from tests.cosmo.helpers import random_images, tiny_config, tiny_image_processor, tiny_tokenizer

TEXTS = ["a cat on the grass", "a red car", "a dog running on the road", "the blue sky", "a small bird",
         "a man with a dog", "a big green car"]


class CountingImages:
    """A lazy image sequence that counts how often each image is read (decoded)."""

    def __init__(self, images):
        self.images, self.reads = images, [0] * len(images)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, index):
        self.reads[index] += 1
        return self.images[index]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CosmoForImageTextRetrieval(tiny_config()).eval()


@pytest.fixture(scope="module")
def pairs():
    # Two directions' top-k lists merged: repeats, images with many texts, images and texts never used.
    return torch.tensor([[0, 1], [0, 2], [0, 6], [3, 1], [3, 0], [0, 1], [4, 4], [3, 6], [4, 1], [0, 3]])


def _reference_scores(model, images, pairs):
    """One pair at a time, the plain fusion forward (transformers' BERT cross-attention), text padded on its own."""
    tokenizer, processor = tiny_tokenizer(), tiny_image_processor()
    scores = []
    with torch.no_grad():
        for image, text in pairs.tolist():
            tokens = tokenizer([TEXTS[text]], truncation=True, max_length=30, return_tensors="pt")
            pixels = processor(images=[images[image]], return_tensors="pt")["pixel_values"]
            out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels,
                        use_cache=False)
            scores.append(out.itm_score[0, 1])
    return torch.stack(scores)


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("batch_size", [2, 64])
def test_scores_equal_per_pair_plain_scores(model, pairs, use_cache, batch_size):
    images = random_images(5)
    rescorer = ITMRescorer(model, tiny_tokenizer(), tiny_image_processor(), batch_size=batch_size,
                           use_cache=use_cache)
    scores = rescorer(images, TEXTS, pairs)
    assert scores.shape == (len(pairs),) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, _reference_scores(model, images, pairs), atol=1e-5, rtol=1e-5)


def test_probability_scores_are_the_softmax_of_the_logits(model, pairs):
    images = random_images(5)
    logit = ITMRescorer(model, tiny_tokenizer(), tiny_image_processor())(images, TEXTS, pairs)
    probability = ITMRescorer(model, tiny_tokenizer(), tiny_image_processor(), score="probability")(
        images, TEXTS, pairs)
    assert (probability > 0).all() and (probability < 1).all()
    # Against the retrieval model's own forward on the first pair (image 0, text 1).
    tokens = tiny_tokenizer()([TEXTS[1]], return_tensors="pt")
    pixels = tiny_image_processor()(images=[images[0]], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        itm = model(**tokens, pixel_values=pixels).itm_score[0]
    assert probability[0].item() == pytest.approx(itm.softmax(-1)[1].item(), rel=1e-5)
    assert logit[0].item() == pytest.approx(itm[1].item(), rel=1e-5, abs=1e-6)


def test_each_needed_image_and_text_is_encoded_once(model, pairs):
    images = CountingImages(random_images(6))
    calls = {"image_rows": 0, "text_rows": 0, "kv_images": 0}
    encode_image, encode_text = model.encode_image, model.encode_text
    precompute = model.precompute_cross_attention

    def count_images(pixel_values, *args, **kwargs):
        calls["image_rows"] += pixel_values.shape[0]
        return encode_image(pixel_values, *args, **kwargs)

    def count_texts(input_ids, *args, **kwargs):
        calls["text_rows"] += input_ids.shape[0]
        return encode_text(input_ids, *args, **kwargs)

    def count_kv(image_states):
        calls["kv_images"] += image_states.shape[0]
        return precompute(image_states)

    model.encode_image, model.encode_text, model.precompute_cross_attention = count_images, count_texts, count_kv
    try:
        ITMRescorer(model, tiny_tokenizer(), tiny_image_processor(), batch_size=2)(images, TEXTS, pairs)
    finally:
        del model.encode_image, model.encode_text, model.precompute_cross_attention
    needed_images, needed_texts = set(pairs[:, 0].tolist()), set(pairs[:, 1].tolist())
    assert images.reads == [1 if i in needed_images else 0 for i in range(6)]
    assert calls == {"image_rows": len(needed_images), "text_rows": len(needed_texts),
                     "kv_images": len(needed_images)}


def test_bad_pairs_are_refused_with_a_clear_error(model):
    rescorer = ITMRescorer(model, tiny_tokenizer(), tiny_image_processor())
    with pytest.raises(IndexError, match="text positions"):
        rescorer(random_images(2), TEXTS[:2], torch.tensor([[0, 5]]))
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        rescorer(random_images(2), TEXTS[:2], torch.tensor([0, 1]))
    assert rescorer(random_images(2), TEXTS, torch.zeros(0, 2, dtype=torch.long)).shape == (0,)

"""COSMO in the retrieval evaluation (ALBEF's protocol, arXiv 2107.07651; COSMO arXiv 2312.06112): rank by ITC,
re-rank each query's top k by ITM; both recalls reported, both recomputed here by hand, pair by pair."""

import json

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset

from evaluation import RetrievalTask
from evaluation.itm_rerank import ITMRescorer
from modeling_cosmo import CosmoForImageTextRetrieval
from tests.cosmo.helpers import random_images, tiny_config, tiny_image_processor, tiny_tokenizer
from tests.helpers import run_example

CAPTIONS = ["a red cat on the grass", "a blue car on the road", "a small bird in the sky", "a man with a dog",
            "the green car is running", "a woman sitting with a cat"]


@pytest.fixture(scope="module")
def retrieval():
    torch.manual_seed(3)
    model = CosmoForImageTextRetrieval(tiny_config()).eval()
    images = random_images(len(CAPTIONS), seed=5)
    return model, Dataset.from_dict({"image": images, "caption": CAPTIONS}), images


@torch.no_grad()
def by_hand(model, images):
    """ITC similarities and ITM match logits of every (image, text) pair, each pair on its own."""
    tokenizer, processor = tiny_tokenizer(), tiny_image_processor()
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    image_embeds = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)
    tokens = tokenizer(CAPTIONS, padding=True, return_tensors="pt")
    text_embeds = F.normalize(model.get_text_features(**tokens).pooler_output, dim=-1)
    itm = torch.zeros(len(images), len(CAPTIONS))
    for i in range(len(images)):
        for t, caption in enumerate(CAPTIONS):
            one = tokenizer([caption], return_tensors="pt")
            out = model(input_ids=one["input_ids"], attention_mask=one["attention_mask"], pixel_values=pixels[i:i + 1],
                        use_cache=False)
            itm[i, t] = out.itm_score[0, 1]
    return image_embeds @ text_embeds.t(), itm


def recall_at_1(order: torch.Tensor) -> float:
    """The share of rows whose first candidate is the row's own pair (one caption per image here)."""
    return (order[:, 0] == torch.arange(order.shape[0])).float().mean().item()


def test_itc_ranking_then_itm_re_ranking_equal_the_hand_computation(retrieval):
    model, data, images = retrieval
    k = 5
    task = RetrievalTask(data, rescorer=ITMRescorer(model, tiny_tokenizer(), tiny_image_processor()), rerank_k=k)
    record = task.run(model, tiny_tokenizer(), tiny_image_processor())
    similarity, itm = by_hand(model, images)

    assert record.metrics["image_to_text_recall@1"] == pytest.approx(recall_at_1(similarity.argsort(1, True)))
    assert record.metrics["text_to_image_recall@1"] == pytest.approx(recall_at_1(similarity.t().argsort(1, True)))
    # Re-ranked: the top k by similarity, re-ordered by the ITM logit of each (image, text) pair.
    changed = []
    for name, sim, match in (("image_to_text", similarity, itm), ("text_to_image", similarity.t(), itm.t())):
        candidates = sim.topk(k, dim=1).indices
        reordered = candidates.gather(1, match.gather(1, candidates).argsort(1, descending=True))
        assert record.metrics[f"reranked_{name}_recall@1"] == pytest.approx(recall_at_1(reordered)), name
        hits5 = [row in reordered[row].tolist() for row in range(len(CAPTIONS))]
        assert record.metrics[f"reranked_{name}_recall@5"] == pytest.approx(sum(hits5) / len(hits5))
        changed.append(not torch.equal(reordered, candidates))
    assert any(changed)  # the matching head reorders this model's candidates: re-ranking is not a no-op here
    assert "reranked_image_to_text_recall@10" not in record.metrics  # beyond k there is nothing re-ranked
    assert record.protocol["rerank_k"] == k


def test_the_zero_shot_command_re_ranks_a_cosmo_checkpoint(retrieval, tmp_path):
    model, data, _ = retrieval
    folder = tmp_path / "cosmo"
    model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    tiny_image_processor().save_pretrained(folder)
    data.save_to_disk(str(tmp_path / "data"))
    run_example("zero_shot", ["--model_name_or_path", str(folder), "--task", "retrieval", "--dataset_path",
                              str(tmp_path / "data"), "--split", "train", "--rerank_k", "4", "--plot_queries", "0",
                              "--output_dir", str(tmp_path / "out")])
    (record,) = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    direct = RetrievalTask(data, rescorer=ITMRescorer(model, tiny_tokenizer(), tiny_image_processor()),
                           rerank_k=4).run(model, tiny_tokenizer(), tiny_image_processor())
    assert record["metrics"] == pytest.approx(direct.metrics)
    assert record["protocol"]["rerank_k"] == 4 and any(key.startswith("reranked_") for key in record["metrics"])

"""Evaluation (DiHT's zero-shot protocols, arXiv 2301.02280): metrics on hand-made embeddings, chunked and
re-ranked retrieval, the protocols on tiny models, evaluation inside `Trainer.evaluate`, the command."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, Image, IterableDataset, Value
from PIL import Image as PILImage
from transformers import EarlyStoppingCallback

from evaluation import (
    ClassificationTask,
    EvaluationRecord,
    classification_metrics,
    evaluate_classification,
    evaluate_retrieval,
    image_batches,
    load_metric,
    plot_retrievals,
    rank_gallery,
    rerank,
    retrieval_metrics,
    sample_retrievals,
    zero_shot_classifier,
)
from evaluation.templates import OPENAI_IMAGENET_TEMPLATES, SIMPLE_TEMPLATES, resolve_templates
from image_text_data import write_shards
from tests.helpers import (
    arguments,
    collator_for,
    encode,
    image_processor,
    run_example,
    save_tiny_checkpoint,
    scene_pairs,
    tiny_model,
    tokenizer_for,
)
from trainers import DiHTTrainer

ROOT = Path(__file__).resolve().parents[2]
processor = image_processor


def unit(*rows) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


# ---- metrics on hand-made embeddings ---------------------------------------------------------------------------------

def test_top_k_accuracy_of_hand_made_embeddings():
    classifier = unit([1, 0, 0], [0, 1, 0], [0, 0, 1])  # class c points along axis c
    images = unit([0.9, 0.3, 0.1],  # ranks 0, 1, 2 -> label 0: top1 hit
                  [0.2, 0.3, 0.9],  # ranks 2, 1, 0 -> label 1: top1 miss, top2 hit
                  [0.5, 0.1, 0.4])  # ranks 0, 2, 1 -> label 1: top1 miss, top2 miss
    metrics = classification_metrics(images, classifier, [0, 1, 1], ks=(1, 2, 3))
    assert metrics == {"top1": pytest.approx(1 / 3), "top2": pytest.approx(2 / 3), "top3": pytest.approx(1.0)}


def test_recall_with_several_captions_per_image_by_hand():
    # Two images, two captions each (texts 0,1 -> image 0; texts 2,3 -> image 1).
    images = unit([1, 0], [0, 1])
    texts = unit([0.2, 1.0],   # text 0 (image 0) is closer to image 1
                 [0.9, 0.1],   # text 1 (image 0) is image 0's nearest text
                 [0.8, 0.6],   # text 2 (image 1) is closer to image 0
                 [0.6, 0.8])   # text 3 (image 1)
    metrics = retrieval_metrics(images, texts, [0, 0, 1, 1], ks=(1, 2))
    # image 0 ranks texts by x: 1 (0.99), 2 (0.8), 3 (0.6), 0 (0.2): its caption 1 is first -> hit at 1.
    # image 1 ranks texts by y: 0 (0.98), 3 (0.8), 2 (0.6), 1 (0.1): first is text 0 (wrong), second text 3 -> hit at 2.
    assert metrics["image_to_text_recall@1"] == pytest.approx(1 / 2)
    assert metrics["image_to_text_recall@2"] == pytest.approx(1.0)
    # text 0 -> image 1 first (miss); text 1 -> image 0 (hit); text 2 -> image 0 (miss); text 3 -> image 1 (hit).
    assert metrics["text_to_image_recall@1"] == pytest.approx(2 / 4)
    assert metrics["text_to_image_recall@2"] == pytest.approx(1.0)  # only two images


def test_retrieval_recall_matches_a_brute_force_reference_on_random_embeddings():
    generator = torch.Generator().manual_seed(0)
    images = F.normalize(torch.randn(30, 8, generator=generator), dim=-1)
    text_to_image = [i for i in range(30) for _ in range(1 + i % 3)]  # 1 to 3 captions per image
    texts = F.normalize(images[text_to_image] + 0.9 * torch.randn(len(text_to_image), 8, generator=generator), dim=-1)
    metrics = retrieval_metrics(images, texts, text_to_image, ks=(1, 5, 10))

    similarity = (images @ texts.t()).numpy()
    owner = np.array(text_to_image)
    for k in (1, 5, 10):
        i2t = np.mean([np.any(owner[np.argsort(-row)[:k]] == i) for i, row in enumerate(similarity)])
        t2i = np.mean([owner[t] in np.argsort(-similarity[:, t])[:k] for t in range(len(owner))])
        assert metrics[f"image_to_text_recall@{k}"] == pytest.approx(i2t)
        assert metrics[f"text_to_image_recall@{k}"] == pytest.approx(t2i)
    assert 0 < metrics["image_to_text_recall@1"] < metrics["image_to_text_recall@10"]  # a non-trivial case


def test_ranking_in_query_chunks_equals_the_top_k_of_the_whole_similarity_matrix():
    generator = torch.Generator().manual_seed(1)
    queries = F.normalize(torch.randn(11, 6, generator=generator), dim=-1)
    gallery = F.normalize(torch.randn(17, 6, generator=generator), dim=-1)
    expected = (queries @ gallery.t()).topk(5, dim=1).indices
    for chunk_size in (1, 3, 11, None):
        torch.testing.assert_close(rank_gallery(queries, gallery, 5, chunk_size=chunk_size), expected)
    assert rank_gallery(queries, gallery, 50).shape == (11, 17)  # k is capped at the gallery


def test_rerank_orders_candidates_by_the_rescorer_and_scores_each_pair_once():
    # Scores by hand: pair (image, text) -> score. Ties keep the similarity order.
    table = {(0, 0): 0.1, (0, 1): 0.9, (0, 2): 0.5, (1, 0): 0.3, (1, 1): 0.3, (1, 2): 0.8}
    calls = []

    def rescorer(images, texts, pairs):
        calls.append(pairs.tolist())
        return torch.tensor([table[tuple(pair)] for pair in pairs.tolist()])

    image_to_text = torch.tensor([[0, 2, 1], [1, 0, 2]])  # by similarity
    text_to_image = torch.tensor([[1, 0], [0, 1], [0, 1]])
    i2t, t2i = rerank(image_to_text, text_to_image, rescorer, images=[None, None], texts=["a", "b", "c"])
    assert i2t.tolist() == [[1, 2, 0], [2, 1, 0]]  # image 1: texts 1 and 0 tie at 0.3 and keep their order
    assert t2i.tolist() == [[1, 0], [0, 1], [1, 0]]
    (pairs,) = calls  # one call, each distinct pair once
    assert sorted(map(tuple, pairs)) == sorted(table)


def test_retrieval_re_ranked_by_an_oracle_rescorer_finds_every_true_pair(tiny):
    model, tokenizer, pairs = tiny
    data = Dataset.from_dict({"image": pairs["image"][:8], "caption": pairs["caption"][:8]})
    seen_images = []

    def oracle(images, texts, candidate_pairs):  # 1 for an image's own caption, else 0
        seen_images.extend(images[i].size for i in candidate_pairs[:, 0].unique().tolist())
        return (candidate_pairs[:, 0] == candidate_pairs[:, 1]).float()

    record = evaluate_retrieval(model, tokenizer, processor(), data, ks=(1, 5), rescorer=oracle, rerank_k=8)
    assert record.metrics["reranked_image_to_text_recall@1"] == 1.0
    assert record.metrics["reranked_text_to_image_recall@1"] == 1.0
    assert record.protocol["rerank_k"] == 8 and len(seen_images) == 8  # the images handed to it decode lazily
    # The similarity-only recalls are reported too, as without a rescorer.
    without = evaluate_retrieval(model, tokenizer, processor(), data, ks=(1, 5))
    assert {k: v for k, v in record.metrics.items() if not k.startswith("reranked_")} == without.metrics


def test_a_streamed_evaluation_set_is_read_lazily_not_materialised():
    read = []

    def rows():
        for i in range(40):
            read.append(i)
            yield {"image": {"bytes": encode(PILImage.new("RGB", (8, 8), (i, 0, 0))), "path": None}, "label": i}

    stream = IterableDataset.from_generator(rows)
    batches = iter(image_batches(stream, processor(), keep_columns=["label"], batch_size=4))
    first = next(batches)
    assert first["index"].tolist() == [0, 1, 2, 3] and first["label"] == [0, 1, 2, 3]
    assert len(read) < 40  # the rest of the stream is not read ahead


def test_an_evaluation_record_round_trips_through_its_dict():
    record = EvaluationRecord(task="retrieval", metrics={"image_to_text_recall@1": 0.5}, name="coco",
                              dataset={"name": "COCO"}, num_images=2, num_texts=10, embeddings={"x": 1})
    as_dict = record.to_dict()
    assert "embeddings" not in as_dict and "num_classes" not in as_dict
    assert EvaluationRecord.from_dict(json.loads(json.dumps(as_dict))) == record
    with pytest.raises(ValueError, match="task must be one of"):
        EvaluationRecord(task="captioning", metrics={})


def test_metric_modules_score_hand_examples_and_reject_bad_input():
    accuracy, recall = load_metric("zero_shot_accuracy"), load_metric("retrieval_recall")
    assert accuracy.compute(predictions=[[2, 0], [1, 2], [0, 1]], references=[2, 2, 1], k=[1, 2]) == {
        "top1": pytest.approx(1 / 3), "top2": pytest.approx(1.0)}
    assert recall.compute(predictions=[[3, 1], [0, 2]], references=[[1, 4], [2]], k=[1, 2]) == {
        "recall@1": 0.0, "recall@2": 1.0}
    with pytest.raises(ValueError, match="at least one relevant"):
        recall.compute(predictions=[[0]], references=[[]], k=[1])
    with pytest.raises(ValueError, match="unknown metric"):
        load_metric("accuracy")


def test_metric_modules_load_from_the_package_with_the_hub_unreachable(tmp_path):
    script = ("import evaluation; m = evaluation.load_metric('retrieval_recall'); "
              "print(m.compute(predictions=[[1, 0]], references=[[0]], k=[2]))")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_EVALUATE_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}  # any attempt to reach a hub would fail
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "{'recall@2': 1.0}"


# ---- the protocols on a tiny model -----------------------------------------------------------------------------------

def test_the_80_templates_are_openai_s_and_template_sets_resolve(tmp_path):
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as peer  # the peer library's copy

    assert [t.format("X") for t in OPENAI_IMAGENET_TEMPLATES] == [t("X") for t in peer]
    (tmp_path / "t.txt").write_text("a {} here\n\nthe {}\n")
    assert resolve_templates(str(tmp_path / "t.txt")) == ("a {} here", "the {}")
    with pytest.raises(ValueError, match="exactly one"):
        resolve_templates(["no placeholder"])


@pytest.fixture(scope="module")
def tiny():
    pairs = scene_pairs(12, seed=3).cast_column("image", Image())  # decoded: PIL images
    tokenizer = tokenizer_for(pairs)
    return tiny_model(tokenizer, seed=1).eval(), tokenizer, pairs


def text_embedding(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():  # one text per forward: no padding at all
        return F.normalize(model.get_text_features(**tokenizer([text], return_tensors="pt")).pooler_output[0], dim=-1)


def test_classifier_is_the_normalised_mean_of_normalised_prompt_embeddings(tiny):
    model, tokenizer, _ = tiny
    names, templates = ["red circle", "blue square", "green star"], ["a photo of a {}", "the {}", "a {} here"]
    expected = torch.stack([
        F.normalize(torch.stack([text_embedding(model, tokenizer, t.format(n)) for t in templates]).mean(0), dim=0)
        for n in names])
    got = zero_shot_classifier(model, tokenizer, names, templates, batch_size=4)  # padded batches across classes
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def image_embedding(model, image) -> torch.Tensor:
    with torch.no_grad():
        pixels = processor()(image, return_tensors="pt")["pixel_values"]
        return F.normalize(model.get_image_features(pixel_values=pixels).pooler_output[0], dim=-1)


def test_classification_on_a_dataset_skips_a_corrupt_image_and_matches_hand_computed_predictions(tiny):
    model, tokenizer, pairs = tiny
    names = ["red", "blue", "green"]
    labels = [i % 3 for i in range(len(pairs))]
    images = [{"bytes": encode(img), "path": None} for img in pairs["image"]]
    images[4] = {"bytes": b"<html>not an image</html>", "path": None}
    data = Dataset.from_dict({"image": images, "label": labels},
                             features=Features({"image": Image(), "label": Value("int64")}))
    record = evaluate_classification(model, tokenizer, processor(), data, class_names=names,
                                     templates=["a {} shape"], batch_size=5, ks=(1, 2))

    classifier = torch.stack([text_embedding(model, tokenizer, f"a {n} shape") for n in names])  # (3, P)
    kept = [i for i in range(len(pairs)) if i != 4]
    scores = torch.stack([image_embedding(model, pairs["image"][i]) for i in kept]) @ classifier.t()
    ranks = scores.argsort(dim=1, descending=True)
    truth = torch.tensor([labels[i] for i in kept])
    assert record.skipped_images == 1 and record.num_images == len(kept)
    assert record.metrics["top1"] == pytest.approx((ranks[:, 0] == truth).float().mean().item())
    assert record.metrics["top2"] == pytest.approx((ranks[:, :2] == truth[:, None]).any(1).float().mean().item())


def test_retrieval_wraps_every_caption_and_handles_lists_of_captions(tiny):
    model, tokenizer, pairs = tiny
    # 1 or 2 captions per image (the second: the words reversed, so that no two texts tie)
    captions = [[c, " ".join(c.split()[::-1])] if i % 2 else c for i, c in enumerate(pairs["caption"][:6])]
    data = Dataset.from_dict({"image": pairs["image"][:6], "caption": [c if isinstance(c, list) else [c]
                                                                       for c in captions]})
    record = evaluate_retrieval(model, tokenizer, processor(), data, caption_template="a photo of {}.", ks=(1, 3),
                                return_embeddings=True)
    texts = [f"a photo of {c}." for cell in captions for c in (cell if isinstance(cell, list) else [cell])]
    assert record.embeddings["texts"] == texts and record.num_texts == 9
    owner = [i for i, cell in enumerate(captions) for _ in (cell if isinstance(cell, list) else [cell])]
    text_embeds = torch.stack([text_embedding(model, tokenizer, t) for t in texts])
    image_embeds = torch.stack([image_embedding(model, img) for img in pairs["image"][:6]])
    similarity = image_embeds @ text_embeds.t()
    i2t = np.mean([owner[similarity[i].argmax()] == i for i in range(6)])
    t2i = np.mean([similarity[:, t].argmax().item() == owner[t] for t in range(9)])
    assert record.metrics["image_to_text_recall@1"] == pytest.approx(i2t)
    assert record.metrics["text_to_image_recall@1"] == pytest.approx(t2i)
    assert record.protocol["caption_template"] == "a photo of {}."


def test_missing_columns_and_empty_captions_are_named(tiny):
    model, tokenizer, pairs = tiny
    with pytest.raises(KeyError, match="'class'"):
        evaluate_classification(model, tokenizer, processor(), pairs, class_names=["a"], templates=["{}"],
                                label_column="class")
    empty = Dataset.from_dict({"image": pairs["image"][:2], "caption": ["fine", "  "]})
    with pytest.raises(ValueError, match="non-empty caption"):
        evaluate_retrieval(model, tokenizer, processor(), empty)


# ---- the PNG ---------------------------------------------------------------------------------------------------------

def test_sample_retrievals_rank_by_similarity_and_mark_relevant_items(tmp_path):
    queries = unit([1, 0], [0, 1])
    items = unit([0.9, 0.1], [0.1, 0.9], [0.7, 0.7])
    rows = sample_retrievals(queries, items, ["q0", "q1"], ["a", "b", "c"], [[0], [2]], num_queries=2, k=2)
    by_query = {row.query: row for row in rows}
    assert by_query["q0"].results == ["a", "c"] and by_query["q0"].correct == [True, False]
    assert by_query["q1"].results == ["b", "c"] and by_query["q1"].correct == [False, True]
    assert by_query["q0"].scores[0] == pytest.approx(float(queries[0] @ items[0]))

    image = PILImage.new("RGB", (20, 20), "red")
    path = plot_retrievals([by_query["q0"], type(rows[0])(image, ["x", image], [0.5, 0.25], [True, False])],
                           tmp_path / "r.png", title="t")
    with PILImage.open(path) as png:
        assert png.format == "PNG" and png.width > png.height  # two rows of three panels


# ---- inside Trainer.evaluate ----------------------------------------------------------------------------------------

def test_zero_shot_tasks_run_in_trainer_evaluate_with_eval_metrics_best_model_and_early_stopping(tmp_path):
    pairs = scene_pairs(16, seed=5)
    tokenizer = tokenizer_for(pairs)
    model = tiny_model(tokenizer)
    labelled = Dataset.from_dict({"image": pairs["image"], "label": [i % 2 for i in range(16)]})
    task = ClassificationTask(labelled, class_names=["red", "blue"], templates=["a {} shape"])
    args = arguments(tmp_path, max_steps=8, learning_rate=0.1, eval_strategy="steps", eval_steps=2,
                     save_strategy="steps", save_steps=2, metric_for_best_model="eval_classification_top1",
                     load_best_model_at_end=True, per_device_eval_batch_size=8)
    trainer = DiHTTrainer(model=model, args=args, train_dataset=pairs, data_collator=collator_for(tokenizer),
                          eval_tasks=[task], callbacks=[EarlyStoppingCallback(early_stopping_patience=2)])
    trainer.train()

    logged = [e for e in trainer.state.log_history if "eval_classification_top1" in e]
    steps = [e["step"] for e in logged]
    assert steps == list(range(2, 2 * len(logged) + 1, 2))  # every 2 optimizer steps, through the Trainer's loop
    assert all("loss" not in e for e in logged)  # their own log entries, not mixed into the loss logs
    # The Trainer tracked the best evaluation and, at the end, loaded that checkpoint's weights.
    values = [e["eval_classification_top1"] for e in logged]
    assert trainer.state.best_metric == max(values)
    best_step = steps[values.index(max(values))]  # the first best one: a tie does not count as an improvement
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    reloaded = task.run(trainer.model, tokenizer, processor())
    assert reloaded.metrics["top1"] == pytest.approx(max(values))
    # Early stopping: it stops two evaluations after the last improvement, or at max_steps.
    last_improvement = max(i for i, v in enumerate(values) if v > max(values[:i], default=-1))
    assert len(logged) == min(last_improvement + 3, 4)
    # The evaluation gives the model back in the mode it found it in.
    for training in (True, False):
        trainer.model.train(training)
        metrics = trainer.evaluate()
        assert trainer.model.training is training and metrics["eval_classification_top1"] == reloaded.metrics["top1"]


# ---- the command -----------------------------------------------------------------------------------------------------

def zero_shot_command(argv: list[str], output_dir: Path) -> list[dict]:
    """Run `examples/zero_shot.py`; return the records of the `results.json` it writes."""
    run_example("zero_shot", [*argv, "--output_dir", str(output_dir)])
    return json.loads((output_dir / "results.json").read_text())["results"]


def test_command_reads_an_image_folder_and_writes_results_and_a_png(tmp_path, tiny):
    model, tokenizer, pairs = tiny
    for i, image in enumerate(pairs["image"]):
        folder = tmp_path / "images" / ("red" if i % 2 else "blue")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.png")
    (tmp_path / "images" / "red" / "broken.png").write_bytes(b"not a png")
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", model, tokenizer)
    (record,) = zero_shot_command(["--model_name_or_path", checkpoint, "--dataset_name", str(tmp_path / "images"),
                                   "--templates", "simple", "--plot_queries", "2"], tmp_path / "out")
    assert record["num_classes"] == 2 and record["num_images"] == 12 and record["skipped_images"] == 1
    assert record["protocol"]["num_templates"] == 1 and Path(record["plot"]).stat().st_size > 1000
    # The image folder's classes are its sub-folders in sorted order (blue = 0, red = 1); top-1 by hand.
    classifier = torch.stack([text_embedding(model, tokenizer, SIMPLE_TEMPLATES[0].format(n)) for n in ("blue", "red")])
    hits = [int((image_embedding(model, image) @ classifier.t()).argmax()) == i % 2
            for i, image in enumerate(pairs["image"])]
    assert record["metrics"]["top1"] == pytest.approx(sum(hits) / len(hits))


def test_command_runs_retrieval_on_webdataset_shards(tmp_path, tiny):
    model, tokenizer, pairs = tiny
    shards = write_shards(pairs, str(tmp_path / "shards"), image_column="image", caption_column="caption")
    checkpoint = save_tiny_checkpoint(tmp_path / "ckpt", model, tokenizer)
    (record,) = zero_shot_command(["--model_name_or_path", checkpoint, "--train_files", shards[0], "--split", "train",
                                   "--task", "retrieval", "--caption_template", "a photo of {}."], tmp_path / "out")
    assert record["num_images"] == 12 and record["num_texts"] == 12  # the shards' jpg/txt found by themselves
    assert set(record["metrics"]) == {f"{d}_recall@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}


def test_command_on_the_demo_checkpoint_beats_chance_on_both_tasks(demo_run, tmp_path):
    folder, _ = demo_run
    classification, retrieval = zero_shot_command(["--model_name_or_path", str(folder / "model")], tmp_path)
    assert classification["num_classes"] == 20
    assert classification["metrics"]["top1"] > 4 / 20
    assert retrieval["metrics"]["image_to_text_recall@10"] > 4 * 10 / retrieval["num_texts"]
    assert (tmp_path / "classification_retrievals.png").exists() and (tmp_path / "retrieval_retrievals.png").exists()

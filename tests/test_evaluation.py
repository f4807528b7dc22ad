"""Zero-shot evaluation (PAPERS.md §1.6): metrics on hand-made embeddings, the protocols, the callback, the command."""

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, Image, Sequence, Value
from PIL import Image as PILImage
from transformers import CLIPImageProcessor

from evaluation import (
    ClassificationTask,
    RetrievalTask,
    ZeroShotEvaluationCallback,
    classification_metrics,
    evaluate_classification,
    evaluate_retrieval,
    load_metric,
    plot_retrievals,
    retrieval_metrics,
    sample_retrievals,
    zero_shot_classifier,
)
from evaluation.templates import OPENAI_IMAGENET_TEMPLATES, resolve_templates
from tests.test_trainer import IMAGE_SIZE, arguments, collator_for, scene_pairs, tiny_model, tokenizer_for
from trainers import DiHTTrainer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


def unit(*rows) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


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
    images = [{"bytes": _png(img), "path": None} for img in pairs["image"]]
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
    assert record["skipped_images"] == 1 and record["num_images"] == len(kept)
    assert record["metrics"]["top1"] == pytest.approx((ranks[:, 0] == truth).float().mean().item())
    assert record["metrics"]["top2"] == pytest.approx((ranks[:, :2] == truth[:, None]).any(1).float().mean().item())


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_retrieval_wraps_every_caption_and_handles_lists_of_captions(tiny):
    model, tokenizer, pairs = tiny
    # 1 or 2 captions per image (the second: the words reversed, so that no two texts tie)
    captions = [[c, " ".join(c.split()[::-1])] if i % 2 else c for i, c in enumerate(pairs["caption"][:6])]
    data = Dataset.from_dict({"image": pairs["image"][:6], "caption": [c if isinstance(c, list) else [c]
                                                                       for c in captions]})
    record = evaluate_retrieval(model, tokenizer, processor(), data, caption_template="a photo of {}.", ks=(1, 3),
                                return_embeddings=True)
    texts = [f"a photo of {c}." for cell in captions for c in (cell if isinstance(cell, list) else [cell])]
    assert record["embeddings"]["texts"] == texts and record["num_texts"] == 9
    owner = [i for i, cell in enumerate(captions) for _ in (cell if isinstance(cell, list) else [cell])]
    text_embeds = torch.stack([text_embedding(model, tokenizer, t) for t in texts])
    image_embeds = torch.stack([image_embedding(model, img) for img in pairs["image"][:6]])
    similarity = image_embeds @ text_embeds.t()
    i2t = np.mean([owner[similarity[i].argmax()] == i for i in range(6)])
    t2i = np.mean([similarity[:, t].argmax().item() == owner[t] for t in range(9)])
    assert record["metrics"]["image_to_text_recall@1"] == pytest.approx(i2t)
    assert record["metrics"]["text_to_image_recall@1"] == pytest.approx(t2i)
    assert record["protocol"]["caption_template"] == "a photo of {}."


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


# ---- during training -------------------------------------------------------------------------------------------------

def test_callback_logs_zero_shot_metrics_every_n_steps_and_they_are_the_final_model_s(tmp_path):
    pairs = scene_pairs(16, seed=5)
    tokenizer = tokenizer_for(pairs)
    model = tiny_model(tokenizer)
    labelled = Dataset.from_dict({"image": pairs["image"], "label": [i % 2 for i in range(16)]})
    task = ClassificationTask(labelled, class_names=["red", "blue"], templates=["a {} shape"])
    callback = ZeroShotEvaluationCallback([task], tokenizer, processor(), eval_steps=2, batch_size=8)
    trainer = DiHTTrainer(model=model, args=arguments(tmp_path, max_steps=5, learning_rate=0.1), train_dataset=pairs,
                          data_collator=collator_for(tokenizer), callbacks=[callback])
    trainer.train()

    logged = [e for e in trainer.state.log_history if "zero_shot/classification/top1" in e]
    assert [e["step"] for e in logged] == [2, 4, 5]  # every 2 steps, and once more at the end
    final = task.run(trainer.model, tokenizer, processor())["metrics"]
    assert logged[-1]["zero_shot/classification/top1"] == pytest.approx(final["top1"])
    assert all("loss" not in e for e in logged)  # its own log entries, not mixed into the loss logs

    # The evaluation puts the model in eval mode and gives it back in the mode it found it in.
    for training in (True, False):
        model.train(training)
        callback.evaluate(model, trainer.state)
        assert model.training is training


# ---- the command -----------------------------------------------------------------------------------------------------

def saved_tiny_checkpoint(tmp_path, model, tokenizer) -> Path:
    folder = tmp_path / "ckpt"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    processor().save_pretrained(folder)
    return folder


def test_command_reads_an_image_folder_and_writes_results_and_a_png(tmp_path, tiny):
    import zero_shot

    model, tokenizer, pairs = tiny
    for i, image in enumerate(pairs["image"]):
        folder = tmp_path / "images" / ("red" if i % 2 else "blue")
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"{i}.png")
    (tmp_path / "images" / "red" / "broken.png").write_bytes(b"not a png")
    checkpoint = saved_tiny_checkpoint(tmp_path, model, tokenizer)
    records = zero_shot.main(["--model_name_or_path", str(checkpoint), "--dataset", str(tmp_path / "images"),
                              "--templates", "simple", "--output_dir", str(tmp_path / "out"), "--plot_queries", "2"])
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["results"] == records
    (record,) = records
    assert record["num_classes"] == 2 and record["num_images"] == 12 and record["skipped_images"] == 1
    assert record["protocol"]["num_templates"] == 1 and 0 <= record["metrics"]["top1"] <= 1
    assert Path(record["plot"]).stat().st_size > 1000


def test_command_runs_retrieval_on_webdataset_shards(tmp_path, tiny):
    import zero_shot

    from curation.sources import write_shards

    model, tokenizer, pairs = tiny
    shards = write_shards(pairs, str(tmp_path / "shards"), image_column="image", caption_column="caption")
    checkpoint = saved_tiny_checkpoint(tmp_path, model, tokenizer)
    (record,) = zero_shot.main(["--model_name_or_path", str(checkpoint), "--dataset", shards[0], "--split", "train",
                                "--task", "retrieval", "--image_column", "jpg", "--caption_column", "txt",
                                "--caption_template", "a photo of {}.", "--output_dir", str(tmp_path / "out")])
    assert record["num_images"] == 12 and record["num_texts"] == 12
    assert set(record["metrics"]) == {f"{d}_recall@{k}" for d in ("image_to_text", "text_to_image") for k in (1, 5, 10)}


def test_command_on_the_demo_checkpoint_beats_chance_on_both_tasks(demo_run, tmp_path):
    import zero_shot

    folder, _ = demo_run
    classification, retrieval = zero_shot.main(["--model_name_or_path", str(folder / "model"),
                                                "--output_dir", str(tmp_path)])
    assert classification["num_classes"] == 20
    assert classification["metrics"]["top1"] > 4 / 20
    assert retrieval["metrics"]["image_to_text_recall@10"] > 4 * 10 / retrieval["num_texts"]
    assert (tmp_path / "classification_retrievals.png").exists() and (tmp_path / "retrieval_retrievals.png").exists()

"""End-to-end run of `examples/pretrain.py` on its built-in data (open_clip's test_training_simple, for us)."""

import json
import random

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, pipeline

from image_text_data import write_shards
from image_text_data.demo import CONCEPTS, build_scenes, class_names, render
from tests.helpers import run_example, save_tiny_checkpoint, scene_pairs, tiny_model, tokenizer_for


def test_demo_filters_distils_learns_and_writes_a_folder_the_pipeline_loads(demo_run):
    tmp_path, saved = demo_run  # conftest: examples/pretrain.py on the built-in data, 700 pairs, 150 steps; its JSON

    assert saved["chance_top1"] == 1 / 20  # 5 colours x 4 shapes
    assert saved["train_loss_last"] < saved["train_loss_first"]
    assert saved["zero_shot_top1"] > 4 * saved["chance_top1"]
    classification, retrieval = saved["evaluation"]  # the zero-shot records of evaluation.ClassificationTask/...
    assert classification["num_classes"] == 20 and classification["num_images"] == 200
    assert retrieval["metrics"]["image_to_text_recall@10"] > 4 * 10 / retrieval["num_texts"]  # 4x chance at k=10

    # The card: written into the folder, its model-index carries the evaluation; the dry run lists the upload.
    card = ModelCard.load(tmp_path / "model" / "README.md")
    (top1,) = [r.metric_value for r in card.data.eval_results if r.metric_type == "accuracy"]
    assert top1 == pytest.approx(100 * saved["zero_shot_top1"], abs=0.01)
    assert saved["hub"]["repo_id"] == "me/diht-demo" and saved["hub"]["dry_run"] is True
    assert {"model.safetensors", "config.json", "README.md", "modeling_diht.py", "tokenizer.json",
            "preprocessor_config.json"} <= set(saved["hub"]["files"])

    # CAT: the counts add up, the planted caption kinds are removed, no clean caption is lost, written text is found.
    report, planted, removed = saved["cat_report"], saved["cat_pool_by_kind"], saved["cat_removed_by_kind"]
    assert report["total"] == 700 == sum(planted.values())
    assert report["kept"] + sum(v for k, v in report.items() if k.startswith("removed_by_")) == report["total"]
    assert removed["low_complexity"] == planted["low_complexity"] and removed["no_action"] == planted["no_action"]
    assert removed["clean"] == 0
    assert 0 < report["removed_by_text_spotting"] <= planted["text"]
    # Concept distillation ran, with the teacher's vocabulary as the head.
    assert saved["concept_vocabulary"] == list(CONCEPTS)
    assert (tmp_path / "training_curves.png").stat().st_size > 10_000

    folder = tmp_path / "model"
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    assert model.config.concept_head_sizes == {"concepts": len(CONCEPTS)}

    # The reported top-1 is the saved model's on the held-out scenes (seed 0 + 1, 200 of them, rendered at 64 px),
    # recounted by hand: the class prompt with the highest cosine similarity, image by image.
    held_out = build_scenes(200, image_size=64, seed=1)
    with torch.no_grad():
        prompts = tokenizer([f"a photo of a {name}" for name in class_names()], padding=True, return_tensors="pt")
        classes = F.normalize(model.get_text_features(**prompts).pooler_output, dim=-1)
        hits = [int((F.normalize(model.get_image_features(**processor(row["image"], return_tensors="pt"))
                                 .pooler_output, dim=-1) @ classes.t()).argmax()) == row["label"] for row in held_out]
    assert saved["zero_shot_top1"] == pytest.approx(sum(hits) / len(hits))

    # The saved folder is a complete checkpoint: the zero-shot pipeline gives the model's own softmax scores.
    classifier = pipeline("zero-shot-image-classification", model=str(folder))
    image = render("red", "circle", 64, random.Random(3))
    labels = ["red circle", "blue square", "green triangle"]
    predictions = classifier(image, candidate_labels=labels, hypothesis_template="a photo of a {}")
    with torch.no_grad():
        text = F.normalize(model.get_text_features(**tokenizer([f"a photo of a {x}" for x in labels], padding=True,
                                                               return_tensors="pt")).pooler_output, dim=-1)
        img = F.normalize(model.get_image_features(**processor(image, return_tensors="pt")).pooler_output, dim=-1)
        expected = (model.logit_scale.exp() * img @ text.t()).softmax(dim=-1)[0]
    got = {p["label"]: p["score"] for p in predictions}
    for label, score in zip(labels, expected.tolist()):
        assert abs(got[label] - score) < 1e-5


def test_pretrain_reads_img2dataset_shards_and_counts_a_corrupt_image(tmp_path):
    pairs = scene_pairs(24, seed=3).remove_columns(["concept_ids"])
    rows = pairs.to_list()
    rows[5]["image"] = {"bytes": b"\xff\xd8\xff\xe0 truncated jpeg", "path": None}
    shards = write_shards(rows, str(tmp_path / "shards"), image_column="image", caption_column="caption",
                          shard_size=12)
    tokenizer = tokenizer_for(pairs)
    folder = save_tiny_checkpoint(tmp_path / "start", tiny_model(tokenizer), tokenizer)

    run_example("pretrain", ["--train_files", *shards, "--model_name_or_path", folder, "--output_dir",
                             str(tmp_path / "run"), "--max_steps", "2", "--logging_steps", "1",
                             "--per_device_train_batch_size", "8", "--concept_distillation", "false",
                             "--cat_text_spotting", "false", "--disable_tqdm", "true"])
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    # The webdataset columns jpg/txt are found by themselves; CAT counts the corrupt image and removes it.
    assert results["cat_report"]["total"] == 24
    assert results["cat_report"]["removed_by_undecodable_image"] == 1
    assert results["train_loss_first"] > 0

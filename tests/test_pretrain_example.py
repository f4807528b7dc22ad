"""End-to-end smoke run of `examples/pretrain.py` on its built-in data (open_clip's test_training_simple, for us)."""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import pretrain  # noqa: E402
from synthetic_scenes import render  # noqa: E402


def test_pretrain_learns_and_writes_a_folder_the_pipeline_loads(tmp_path):
    results = pretrain.main(["--output_dir", str(tmp_path), "--max_steps", "150", "--num_train", "2000",
                             "--num_eval", "200", "--disable_tqdm", "true"])

    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == results
    assert {"zero_shot_top1", "chance_top1", "retrieval_r1_image_to_text", "retrieval_r1_text_to_image",
            "train_loss_first", "train_loss_last"} <= set(saved)
    assert saved["chance_top1"] == 1 / 20  # 5 colours x 4 shapes
    assert saved["train_loss_last"] < saved["train_loss_first"]
    assert saved["zero_shot_top1"] > 4 * saved["chance_top1"]

    # The saved folder is a complete checkpoint: the zero-shot pipeline gives the model's own softmax scores.
    folder = tmp_path / "model"
    classifier = pipeline("zero-shot-image-classification", model=str(folder))
    image = render("red", "circle", 32, __import__("random").Random(3))
    labels = ["red circle", "blue square", "green triangle"]
    predictions = classifier(image, candidate_labels=labels, hypothesis_template="a photo of a {}")

    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        text = F.normalize(model.get_text_features(**tokenizer([f"a photo of a {x}" for x in labels], padding=True,
                                                               return_tensors="pt")).pooler_output, dim=-1)
        img = F.normalize(model.get_image_features(**processor(image, return_tensors="pt")).pooler_output, dim=-1)
        expected = (model.logit_scale.exp() * img @ text.t()).softmax(dim=-1)[0]
    got = {p["label"]: p["score"] for p in predictions}
    for label, score in zip(labels, expected.tolist()):
        assert abs(got[label] - score) < 1e-5

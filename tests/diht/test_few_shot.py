"""Few-shot linear probing with prompt initialisation (arXiv 2301.02280): DiHTForImageClassification, the δ-ball projection,
the Trainer callback, serialisation with the Auto classes and the pipeline, LoRA through peft, the grid search, and
examples/few_shot.py end to end."""

import json
import math
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForImageClassification,
    CLIPImageProcessor,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    pipeline,
)

from image_text_data import undecoded
from image_text_data.demo import (
    CLASS_TEMPLATE,
    DEMO_CHECKPOINT,
    build_scenes,
    class_names,
    ensure_demo_checkpoint,
    render,
)
from modeling_diht import DiHTForImageClassification, DiHTModel
from tests.helpers import random_batch, run_example, tiny_config
from trainers import DeltaBallProjectionCallback, LoraSettings, merge_lora, sample_shots, with_lora

NAMES = ["cat", "dog", "bird"]


def _dual(seed: int = 0) -> DiHTModel:
    """A tiny dual encoder whose logit scale (20) differs from the initial value, so copying it is visible."""
    torch.manual_seed(seed)
    model = DiHTModel(tiny_config()).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
    return model


@torch.no_grad()
def _hand_zero_shot(dual: DiHTModel, num_classes: int = 3) -> torch.Tensor:
    """W₀ built by hand: one random "prompt" per class through the text tower, L2-normalised, `(C, P)`."""
    prompts = random_batch(batch_size=num_classes, seed=1)
    return F.normalize(dual.get_text_features(input_ids=prompts["input_ids"],
                                              attention_mask=prompts["attention_mask"]).pooler_output, dim=-1)


@torch.no_grad()
def _hand_image_embeds(dual: DiHTModel, pixel_values: torch.Tensor) -> torch.Tensor:
    return F.normalize(dual.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)  # (B, P)


def _few_shot(dual: DiHTModel, **overrides) -> DiHTForImageClassification:
    return DiHTForImageClassification.from_dual_encoder(dual, _hand_zero_shot(dual), NAMES, **overrides).eval()


def _pixels(n: int = 6, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, 30, 30, generator=torch.Generator().manual_seed(seed))


def _train_rows(n: int = 12) -> list[dict]:
    pixels, labels = _pixels(n, seed=3), torch.arange(n) % len(NAMES)
    return [{"pixel_values": pixels[i], "labels": int(labels[i])} for i in range(n)]


def _train(model, rows, tmp_path, *, steps: int = 8, lr: float = 0.05, callbacks=(DeltaBallProjectionCallback(),)):
    args = TrainingArguments(str(tmp_path / "run"), optim="sgd", learning_rate=lr, max_steps=steps,
                             per_device_train_batch_size=len(rows), lr_scheduler_type="constant", weight_decay=0.0,
                             max_grad_norm=0.0, save_strategy="no", report_to="none", disable_tqdm=True,
                             logging_steps=1, use_cpu=True, label_names=["labels"], seed=0)
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=list(callbacks))
    trainer.train()
    return trainer


@torch.no_grad()
def _mean_loss(model, rows) -> float:
    pixels = torch.stack([r["pixel_values"] for r in rows])
    labels = torch.tensor([r["labels"] for r in rows])
    return F.cross_entropy(model.eval()(pixel_values=pixels).logits, labels).item()


# ---- the model at step 0 ---------------------------------------------------------------------------------------------

def test_step_zero_logits_are_the_dual_encoders_zero_shot_logits():
    dual = _dual()
    model, pixels = _few_shot(dual), _pixels()
    zero_shot = _hand_zero_shot(dual)
    with torch.no_grad():
        expected = dual.logit_scale.exp() * _hand_image_embeds(dual, pixels) @ zero_shot.t()  # (B, C)
        logits = model(pixel_values=pixels).logits
    torch.testing.assert_close(logits, expected)
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))


def test_step_zero_predictions_equal_the_dual_encoders_own_image_text_logits():
    dual = _dual()
    prompts, pixels = random_batch(batch_size=3, seed=1), _pixels()
    with torch.no_grad():  # the dual encoder's forward scores each image against each class prompt
        reference = dual(input_ids=prompts["input_ids"], attention_mask=prompts["attention_mask"],
                         pixel_values=pixels).logits_per_image  # (B, C)
        logits = _few_shot(dual)(pixel_values=pixels).logits
    torch.testing.assert_close(logits, reference)
    assert torch.equal(logits.argmax(-1), reference.argmax(-1))


def test_a_fixed_logit_scale_multiplies_the_cosine_scores_and_the_bias():
    dual = _dual()
    model, pixels = _few_shot(dual, few_shot_logit_scale=100.0), _pixels()
    bias = torch.tensor([0.1, -0.2, 0.3])
    with torch.no_grad():
        model.classifier.residual_bias.copy_(bias)
        expected = 100.0 * (_hand_image_embeds(dual, pixels) @ _hand_zero_shot(dual).t() + bias)
        torch.testing.assert_close(model(pixel_values=pixels).logits, expected)


def test_only_the_residuals_train_and_they_start_at_zero():
    model = _few_shot(_dual())
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == [
        "classifier.residual_bias", "classifier.residual_weight"]
    assert not model.classifier.residual_weight.any() and not model.classifier.residual_bias.any()
    assert "classifier.zero_shot_weight" in model.state_dict()  # W₀ is saved, but is no parameter
    tower = _few_shot(_dual(), few_shot_train_image_tower=True)
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert "visual_projection.weight" in trainable and "logit_scale" not in trainable


def test_labels_give_the_mean_cross_entropy_of_the_logits():
    model, pixels, labels = _few_shot(_dual()), _pixels(), torch.tensor([0, 1, 2, 0, 1, 2])
    with torch.no_grad():
        out = model(pixel_values=pixels, labels=labels)
    logp = out.logits.log_softmax(-1)
    torch.testing.assert_close(out.loss, -logp[torch.arange(6), labels].mean())


# ---- the projection --------------------------------------------------------------------------------------------------

def test_projection_rescales_a_residual_outside_the_ball_onto_its_surface():
    model = _few_shot(_dual(), few_shot_delta=2.0, few_shot_bias_delta=1.0)
    head = model.classifier
    with torch.no_grad():  # W has entries 3 and 4 (Frobenius norm 5), b = (3, 4, 0) (norm 5)
        head.residual_weight.zero_()[0, 0] = 3.0
        head.residual_weight[2, 5] = 4.0
        head.residual_bias.copy_(torch.tensor([3.0, 4.0, 0.0]))
    model.project_residuals_()
    expected_weight = torch.zeros_like(head.residual_weight)
    expected_weight[0, 0], expected_weight[2, 5] = 1.2, 1.6  # 2/5 of each: norm 2, same direction
    torch.testing.assert_close(head.residual_weight.detach(), expected_weight)
    torch.testing.assert_close(head.residual_bias.detach(), torch.tensor([0.6, 0.8, 0.0]))  # 1/5 of each


def test_projection_leaves_a_residual_inside_the_ball_untouched():
    model = _few_shot(_dual(), few_shot_delta=2.0, few_shot_bias_delta=1.0)
    head = model.classifier
    weight = torch.full_like(head.residual_weight, 0.05)  # norm 0.05·√48 ≈ 0.35 < 2
    with torch.no_grad():
        head.residual_weight.copy_(weight)
        head.residual_bias.copy_(torch.tensor([0.3, -0.4, 0.0]))  # norm 0.5 < 1
    model.project_residuals_()
    assert torch.equal(head.residual_weight.detach(), weight)
    assert torch.equal(head.residual_bias.detach(), torch.tensor([0.3, -0.4, 0.0]))


def test_zero_radii_project_onto_zero():
    model = _few_shot(_dual(), few_shot_delta=0.0, few_shot_bias_delta=0.0)
    with torch.no_grad():
        model.classifier.residual_weight.fill_(1.0)
        model.classifier.residual_bias.fill_(-1.0)
    model.project_residuals_()
    assert not model.classifier.residual_weight.any() and not model.classifier.residual_bias.any()


def test_negative_radii_are_refused():
    with pytest.raises(ValueError, match="few_shot_delta"):
        tiny_config(few_shot_delta=-1.0)


# ---- training with the Trainer ---------------------------------------------------------------------------------------

class _NormRecorder(TrainerCallback):
    """The residual norms after every optimizer step (runs after the projection callback)."""

    def __init__(self):
        self.norms = []

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        head = model.classifier
        self.norms.append((head.residual_weight.norm().item(), head.residual_bias.norm().item()))


def test_trainer_steps_keep_the_residuals_in_their_balls_and_lower_the_loss(tmp_path):
    rows, delta, bias_delta = _train_rows(), 0.3, 0.05
    model = _few_shot(_dual(), few_shot_delta=delta, few_shot_bias_delta=bias_delta)
    before = _mean_loss(model, rows)
    recorder = _NormRecorder()
    _train(model, rows, tmp_path, callbacks=(DeltaBallProjectionCallback(), recorder))
    assert len(recorder.norms) == 8
    assert all(w <= delta + 1e-6 and b <= bias_delta + 1e-6 for w, b in recorder.norms)
    assert max(w for w, _ in recorder.norms) == pytest.approx(delta, rel=1e-5)  # the constraint is active ...
    assert _mean_loss(model, rows) < before

    free = _few_shot(_dual(), few_shot_delta=delta, few_shot_bias_delta=bias_delta)
    _train(free, rows, tmp_path, callbacks=())  # ... without the callback the same steps leave the ball
    assert free.classifier.residual_weight.norm() > delta


def test_zero_radii_keep_predictions_exactly_zero_shot_after_training(tmp_path):
    dual, rows = _dual(), _train_rows()
    model = _few_shot(dual, few_shot_delta=0.0, few_shot_bias_delta=0.0)
    pixels = _pixels()
    with torch.no_grad():
        expected = model(pixel_values=pixels).logits
    _train(model, rows, tmp_path, lr=5.0)
    with torch.no_grad():
        assert torch.equal(model.eval()(pixel_values=pixels).logits, expected)
    assert not model.classifier.residual_weight.any() and not model.classifier.residual_bias.any()


def test_the_callback_refuses_a_model_without_residuals(tmp_path):
    with pytest.raises(TypeError, match="project_residuals_"):
        _train(_dual(), _train_rows(), tmp_path, steps=1)


# ---- serialisation, Auto classes, pipeline -----------------------------------------------------------------------

def _trained_folder(tmp_path) -> tuple[DiHTForImageClassification, Path]:
    model = _few_shot(_dual(), few_shot_delta=0.5)
    with torch.no_grad():
        model.classifier.residual_weight.normal_(std=0.05)
        model.classifier.residual_bias.copy_(torch.tensor([0.05, -0.1, 0.02]))
    folder = tmp_path / "few_shot"
    model.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30}).save_pretrained(folder)
    return model, folder


def test_save_and_load_round_trip_through_auto_model_for_image_classification(tmp_path):
    model, folder = _trained_folder(tmp_path)
    loaded = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert type(loaded) is DiHTForImageClassification
    assert loaded.config.id2label == dict(enumerate(NAMES)) and loaded.config.few_shot_delta == 0.5
    for key, value in model.state_dict().items():  # W₀ (a buffer) and the residuals included
        assert torch.equal(loaded.state_dict()[key], value), key
    assert sorted(n for n, p in loaded.named_parameters() if p.requires_grad) == [
        "classifier.residual_bias", "classifier.residual_weight"]
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values=_pixels()).logits, model(pixel_values=_pixels()).logits)


def test_image_classification_pipeline_returns_the_models_softmax_with_class_names(tmp_path):
    model, folder = _trained_folder(tmp_path)
    image = Image.fromarray((torch.rand(40, 40, 3, generator=torch.Generator().manual_seed(4)) * 255).byte().numpy())
    predictions = pipeline("image-classification", model=str(folder))(image, top_k=3)
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).logits.softmax(-1)[0]
    assert {p["label"] for p in predictions} == set(NAMES)
    for p in predictions:
        assert p["score"] == pytest.approx(expected[NAMES.index(p["label"])].item(), abs=1e-6)


def test_saved_folder_carries_its_auto_map_and_the_remote_code_files(tmp_path):
    dual_folder = tmp_path / "dual"
    _dual().save_pretrained(dual_folder)  # its auto_map names the dual encoder
    model = DiHTForImageClassification.from_pretrained(dual_folder, id2label=dict(enumerate(NAMES)))
    model.save_pretrained(tmp_path / "few_shot")
    auto_map = json.loads((tmp_path / "few_shot" / "config.json").read_text())["auto_map"]
    assert auto_map == {"AutoConfig": "configuration_diht.DiHTConfig",
                        "AutoModelForImageClassification": "modeling_diht.DiHTForImageClassification"}
    assert {"configuration_diht.py", "modeling_diht.py", "loss_diht.py"} <= set(os.listdir(tmp_path / "few_shot"))


def test_remote_code_loads_the_classifier_in_a_process_that_never_imported_the_package(tmp_path):
    model, folder = _trained_folder(tmp_path)
    torch.save(_pixels(), tmp_path / "pixels.pt")
    script = textwrap.dedent(
        f"""
        import sys, torch
        from transformers import AutoModelForImageClassification
        model = AutoModelForImageClassification.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert not any(name.split(".")[0] == "modeling_diht" for name in sys.modules)
        with torch.no_grad():
            torch.save(model(pixel_values=torch.load({str(tmp_path / "pixels.pt")!r})).logits,
                       {str(tmp_path / "logits.pt")!r})
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), model(pixel_values=_pixels()).logits)


def test_from_pretrained_on_a_dual_encoder_folder_loads_the_image_tower(tmp_path):
    dual = _dual()
    dual.save_pretrained(tmp_path / "dual")
    model = DiHTForImageClassification.from_pretrained(tmp_path / "dual", id2label=dict(enumerate(NAMES))).eval()
    assert not model.classifier.zero_shot_weight.any()  # W₀ is not in a dual-encoder checkpoint ...
    model.set_zero_shot_weights(_hand_zero_shot(dual))  # ... so it is set from the class prompts
    pixels = _pixels()
    with torch.no_grad():
        expected = dual.logit_scale.exp() * _hand_image_embeds(dual, pixels) @ _hand_zero_shot(dual).t()
        torch.testing.assert_close(model(pixel_values=pixels).logits, expected)


# ---- LoRA through peft -----------------------------------------------------------------------------------------------

def test_lora_trains_only_adapters_and_residuals_and_starts_at_zero_shot(tmp_path):
    dual = _dual()
    model = with_lora(_few_shot(dual, few_shot_delta=0.3, few_shot_bias_delta=0.05), LoraSettings(r=4))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    lora = [n for n in trainable if ".lora_" in n]
    residuals = [n for n in trainable if n.rsplit(".", 1)[-1] in ("residual_weight", "residual_bias")]
    assert sorted(lora + residuals) == sorted(trainable)
    assert len(lora) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (A, B), image tower only
    assert all("vision_model." in n and ("q_proj" in n or "v_proj" in n) for n in lora)
    assert len(residuals) == 2 and all(".modules_to_save." in n for n in residuals)

    pixels = _pixels()
    with torch.no_grad():
        expected = dual.logit_scale.exp() * _hand_image_embeds(dual, pixels) @ _hand_zero_shot(dual).t()
        torch.testing.assert_close(model(pixel_values=pixels).logits, expected)

    _train(model, _train_rows(), tmp_path, steps=3)  # the callback reaches the head inside the peft wrappers
    head = model.base_model.model.classifier.modules_to_save["default"]
    assert 0 < head.residual_weight.norm() <= 0.3 + 1e-6 and head.residual_bias.norm() <= 0.05 + 1e-6
    merged = merge_lora(model)
    assert type(merged) is DiHTForImageClassification and not any(".lora_" in k for k in merged.state_dict())


# ---- the protocol: shots, grid search, the command --------------------------------------------------------------------------------------------

def _labelled_images(labels: list[int], corrupt: set[int] = frozenset()):
    from datasets import ClassLabel, Dataset, Features
    from datasets import Image as ImageFeature

    rows = [{"image": {"bytes": b"not an image", "path": None} if i in corrupt else
             Image.new("RGB", (8, 8), (10 * i, 0, 0)), "label": label} for i, label in enumerate(labels)]
    return Dataset.from_list(rows, features=Features({"image": ImageFeature(),
                                                      "label": ClassLabel(names=["a", "b"])}))


def test_shots_are_k_per_class_disjoint_and_fixed_by_the_seed():
    data = undecoded(_labelled_images([0, 1] * 5), "image")
    draw = dict(label_column="label", image_column="image", num_classes=2, shots=2)
    train, validation, skipped = sample_shots(data, seed=3, **draw)
    labels = data["label"]
    assert sorted(labels[i] for i in train) == sorted(labels[i] for i in validation) == [0, 0, 1, 1]
    assert not set(train) & set(validation) and skipped == 0
    assert sample_shots(data, seed=3, **draw) == (train, validation, 0)


def test_a_class_without_enough_decodable_images_is_a_clear_error():
    data = undecoded(_labelled_images([0, 0, 1, 1], corrupt={1}), "image")
    with pytest.raises(ValueError, match="class 0 has 1 decodable images"):
        sample_shots(data, label_column="label", image_column="image", num_classes=2, shots=1, seed=0)


def test_without_arguments_a_missing_checkpoint_is_pretrained_first(monkeypatch, tmp_path, capsys):
    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: calls.append(command) or
                        subprocess.CompletedProcess(command, 0))
    script = tmp_path / "pretrain.py"
    script.write_text("")
    ensure_demo_checkpoint(DEMO_CHECKPOINT, script)
    assert calls == [[sys.executable, str(script), "--output_dir", "outputs/pretrain"]]
    assert "running the pretraining demo first" in capsys.readouterr().out
    ensure_demo_checkpoint(str(tmp_path / "elsewhere"), script)  # a path the user gave is never trained
    assert len(calls) == 1
    with pytest.raises(FileNotFoundError, match="run examples/pretrain.py first"):
        ensure_demo_checkpoint(DEMO_CHECKPOINT, tmp_path / "missing.py")


@torch.no_grad()
def _top1_by_hand(model, processor, dataset) -> float:
    """Accuracy of `model(pixel_values).logits` image by image: the independent count."""
    hits = [int(model(pixel_values=processor(row["image"], return_tensors="pt").pixel_values).logits.argmax())
            == row["label"] for row in dataset]
    return sum(hits) / len(hits)


def test_few_shot_example_never_falls_below_zero_shot_at_one_shot(demo_run, tmp_path):
    checkpoint = demo_run[0] / "model"  # conftest: the pretraining demo's tiny DiHT
    out = tmp_path / "few_shot"
    run_example("few_shot", ["--model_name_or_path", str(checkpoint), "--output_dir", str(out), "--shots", "1"])
    results = json.loads((out / "results.json").read_text())
    for key in ("zero_shot_top1", "few_shot_top1", "chosen_delta", "chosen_bias_delta", "grid", "shots", "seeds",
                "num_train", "num_validation", "num_test"):
        assert key in results, key
    assert results["shots"] == 1 and results["num_train"] == results["num_validation"] == 20
    # Selection keeps zero-shot unless a (δ, δ_b) does strictly better on the held-out shots: by construction, the
    # chosen model never falls below zero-shot there. On the test images the 150-step fixture's few-shot gain is
    # within a few images, so the test allows 1 pt (5 of 500 images) of float-rounding drift between CPUs rather than
    # pin the exact images; `test_the_search_undoes_a_wrong_zero_shot_classifier` forces a gain.
    chosen = [g["validation_top1"] for g in results["grid"]
              if (g["delta"], g["bias_delta"]) == (results["chosen_delta"], results["chosen_bias_delta"])]
    assert min(chosen) >= results["zero_shot_validation_top1"]
    assert results["few_shot_top1"] >= results["zero_shot_top1"] - 0.01

    # The grid: every (δ, δ_b) of the default lists, the zero-shot fallback first; the choice is the first best one.
    grid = results["grid"]
    assert {(g["delta"], g["bias_delta"]) for g in grid} == {(d, b) for d in (0, 0.05, 0.1, 0.25, 0.5, 1)
                                                              for b in (0, 0.1)}
    best = max(g["validation_top1"] for g in grid)
    first_best = min((g for g in grid if g["validation_top1"] == best), key=lambda g: (g["delta"], g["bias_delta"]))
    assert (results["chosen_delta"], results["chosen_bias_delta"]) == (first_best["delta"], first_best["bias_delta"])

    # Independent checks on the same test images (the demo's test split: seed 2 + 1, rendered at 64 px): zero-shot
    # through the evaluation code, few-shot through the saved folder loaded with the Auto class, image by image.
    from datasets import ClassLabel
    from transformers import AutoTokenizer

    from evaluation import evaluate_classification

    test = build_scenes(500, image_size=64, seed=3).cast_column("label", ClassLabel(names=class_names()))
    dual = DiHTModel.from_pretrained(checkpoint)
    tokenizer, processor = AutoTokenizer.from_pretrained(checkpoint), AutoImageProcessor.from_pretrained(checkpoint)
    record = evaluate_classification(dual, tokenizer, processor, test, templates=[CLASS_TEMPLATE], ks=(1,))
    assert record.metrics["top1"] == pytest.approx(results["zero_shot_top1"])
    saved = AutoModelForImageClassification.from_pretrained(out / "model").eval()
    assert _top1_by_hand(saved, AutoImageProcessor.from_pretrained(out / "model"), test) == pytest.approx(
        results["few_shot_top1"])
    classify = pipeline("image-classification", model=str(out / "model"))
    assert classify(render("red", "circle", 64, random.Random(7)), top_k=1)[0]["label"] in saved.config.label2id


def test_the_search_undoes_a_wrong_zero_shot_classifier(demo_run, tmp_path):
    # A forced gain: W₀ with its class rows rolled by one names every class after its neighbour, so zero-shot falls
    # far below the true classifier's accuracy; the residual W may move W₀ back within δ (the rolled-back rows are
    # ~2.5 away here), so the chosen model must recover more than half of what the roll cost.
    from datasets import ClassLabel
    from transformers import AutoTokenizer

    from evaluation import evaluate_image_classifier, zero_shot_classifier
    from trainers import ImageLabelCollator, few_shot_learning_rate, few_shot_search

    checkpoint = demo_run[0] / "model"
    dual = DiHTModel.from_pretrained(checkpoint).eval()
    tokenizer, processor = AutoTokenizer.from_pretrained(checkpoint), AutoImageProcessor.from_pretrained(checkpoint)
    names = class_names()
    weights = zero_shot_classifier(dual, tokenizer, names, [CLASS_TEMPLATE])
    base = DiHTForImageClassification.from_dual_encoder(dual, weights.roll(1, dims=0), names)
    label = ClassLabel(names=names)
    pool = undecoded(build_scenes(400, image_size=64, seed=11).cast_column("label", label), "image")
    test = build_scenes(300, image_size=64, seed=12).cast_column("label", label)
    train_rows, validation_rows, _ = sample_shots(pool, label_column="label", image_column="image",
                                                  num_classes=len(names), shots=4, seed=0)
    args = TrainingArguments(str(tmp_path / "run"), optim="sgd", max_steps=40, per_device_train_batch_size=128,
                             lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, save_strategy="no",
                             report_to="none", disable_tqdm=True, use_cpu=True, label_names=["labels"],
                             remove_unused_columns=False, learning_rate=few_shot_learning_rate(base), seed=0)

    def accuracy(model, rows) -> float:
        return evaluate_image_classifier(model, processor, rows).metrics["top1"]

    search = few_shot_search(base, pool.select(train_rows), validate=lambda m: accuracy(m, pool.select(
        validation_rows)), collator=ImageLabelCollator(processor), training=args, deltas=(10.0,), bias_deltas=(0.0,))
    correct = DiHTForImageClassification.from_dual_encoder(dual, weights, names)
    zero_shot, fixed = _top1_by_hand(base, processor, test), _top1_by_hand(correct, processor, test)
    few_shot = _top1_by_hand(search.model.eval(), processor, test)
    assert search.chosen.trained and search.chosen.delta == 10.0
    assert fixed - zero_shot > 0.2  # the roll costs a lot to recover
    assert few_shot - zero_shot > 0.5 * (fixed - zero_shot)


def test_the_zero_shot_model_card_refuses_a_few_shot_checkpoint(tmp_path):
    from hub_cards import render_model_card

    dual = DiHTModel(tiny_config())
    model = DiHTForImageClassification.from_dual_encoder(dual, F.normalize(torch.randn(2, 16), dim=-1), ["cat", "dog"])
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="DiHTForImageClassification"):
        render_model_card(tmp_path)  # its card would claim zero-shot classification and show the dual-encoder usage

"""Specification of `hub_cards`: model cards of DiHT checkpoints (arXiv 2301.02280) and their one-commit Hub push.

Expected values are written by hand from the inputs (fractions → percentages, CAT shares, global batch sizes, the
released architectures' dimensions from DiHT's official configs); the metadata is read back with huggingface_hub's
own parsers, and what an upload sends is recomputed with huggingface_hub's own pattern filter.
No test touches the network: the Hub client's methods are replaced by recorders or by functions that fail.
CPU only, offline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.repocard import REGEX_YAML_BLOCK
from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results
from safetensors.torch import save_file
from transformers import Trainer

from hub_cards import (
    CARD_MARKER,
    eval_results_from,
    publish,
    push_to_hub,
    render_model_card,
    upload_plan,
    write_model_card,
)
from modeling_diht import DiHTConfig, DiHTModel
from modeling_diht.processing_diht import build_image_processor, build_tokenizer
from tests.helpers import tiny_config
from trainers import DiHTTrainer, DiHTTrainingArguments

REPO_ID = "me/diht-tiny"
CLASSIFICATION = {
    "task": "classification",
    "dataset": {"name": "ImageNet-1k", "type": "imagenet-1k", "config": None, "split": "validation",
                "num_images": 50000},
    "protocol": {"templates": "openai_imagenet_80"},
    "metrics": {"top1": 0.6803, "top5": 0.9125},
}
RETRIEVAL = {  # as `evaluation` writes it: counts next to the metrics, the task's name, its plot
    "name": "coco",
    "task": "retrieval",
    "dataset": {"name": "MS-COCO 5k", "type": "coco-5k-test", "split": "test"},
    "protocol": {"caption_template": "a photo of {}."},
    "metrics": {"image_to_text_recall@1": 0.593, "image_to_text_recall@5": 0.8312, "image_to_text_recall@10": 0.9,
                "text_to_image_recall@1": 0.406, "text_to_image_recall@5": 0.6755, "text_to_image_recall@10": 0.7777},
    "num_images": 5000, "num_texts": 25010, "skipped_images": 2, "plot": "coco_retrievals.png",
}
# The same numbers in percent, by hand.
EXPECTED_PERCENT = {
    ("zero-shot-image-classification", "ImageNet-1k", "accuracy"): 68.03,
    ("zero-shot-image-classification", "ImageNet-1k", "top_5_accuracy"): 91.25,
    ("zero-shot-cross-modal-retrieval", "MS-COCO 5k", "image_to_text_recall_at_1"): 59.3,
    ("zero-shot-cross-modal-retrieval", "MS-COCO 5k", "image_to_text_recall_at_5"): 83.12,
    ("zero-shot-cross-modal-retrieval", "MS-COCO 5k", "image_to_text_recall_at_10"): 90.0,
    ("zero-shot-cross-modal-retrieval", "MS-COCO 5k", "text_to_image_recall_at_1"): 40.6,
    ("zero-shot-cross-modal-retrieval", "MS-COCO 5k", "text_to_image_recall_at_5"): 67.55,
    ("zero-shot-cross-modal-retrieval", "MS-COCO 5k", "text_to_image_recall_at_10"): 77.77,
}
CAT_REPORT = {"total": 1000, "kept": 200, "removed_by_empty_caption": 0, "removed_by_complexity": 500,
              "removed_by_actions": 250, "removed_by_undecodable_image": 0, "removed_by_text_spotting": 50}
# What `save_pretrained` of model, tokenizer and image processor writes, plus the card.
MODEL_REPO_FILES = ["README.md", "config.json", "configuration_diht.py", "loss_diht.py", "model.safetensors",
                    "modeling_diht.py", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json"]


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory) -> Path:
    """A tiny DiHT saved as a training run saves it: model (with a concept head), tokenizer, image processor."""
    folder = tmp_path_factory.mktemp("saved")
    torch.manual_seed(0)
    DiHTModel(tiny_config(concept_head_sizes={"objects": 7})).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    build_image_processor(30).save_pretrained(folder)
    return folder


@pytest.fixture
def model_folder(saved_folder, tmp_path) -> Path:
    """A private copy of `saved_folder` that a test may change."""
    return Path(shutil.copytree(saved_folder, tmp_path / "model"))


@pytest.fixture
def no_network(monkeypatch):
    """Every Hub call of these tests fails loudly."""
    def refuse(*args, **kwargs):
        raise AssertionError("the Hub was contacted")

    for name in ("create_repo", "create_branch", "create_commit", "upload_folder", "upload_file", "whoami"):
        monkeypatch.setattr(HfApi, name, refuse)


def front_matter(text: str) -> dict:
    return yaml.safe_load(REGEX_YAML_BLOCK.search(text).group(2))


# ------------------------------------------------------------------------------------------------ the card


def test_card_metadata_parses_back_into_the_evaluation_results_in_percent(saved_folder):
    card = render_model_card(saved_folder, results=[CLASSIFICATION, RETRIEVAL], model_id=REPO_ID)
    data = ModelCard(str(card)).data

    values = {(r.task_type, r.dataset_name, r.metric_type): r.metric_value for r in data.eval_results}
    assert values == pytest.approx(EXPECTED_PERCENT, abs=1e-9)
    by_type = {r.metric_type: r for r in data.eval_results}
    assert by_type["accuracy"].dataset_type == "imagenet-1k"
    assert by_type["accuracy"].dataset_split == "validation"
    assert by_type["accuracy"].metric_args == {"templates": "openai_imagenet_80"}
    assert by_type["text_to_image_recall_at_1"].metric_name == "Recall@1 text→image (%)"
    assert (data.license, data.library_name, data.pipeline_tag) == ("apache-2.0", "transformers",
                                                                   "zero-shot-image-classification")
    assert {"diht", "hn-nce", "vision-language"} <= set(data.tags)


def test_model_index_round_trips_through_huggingface_hub(saved_folder):
    card = render_model_card(saved_folder, results=[CLASSIFICATION, RETRIEVAL], model_id=REPO_ID)
    model_index = front_matter(str(card))["model-index"]

    name, results = model_index_to_eval_results(model_index)
    assert name == REPO_ID
    assert eval_results_to_model_index(name, results) == model_index
    assert [entry["task"]["type"] for entry in model_index[0]["results"]] == [
        "zero-shot-image-classification", "zero-shot-cross-modal-retrieval"]  # one result per task and dataset


def test_evaluation_table_has_one_row_per_result_in_percent(saved_folder):
    text = str(render_model_card(saved_folder, results=[CLASSIFICATION, RETRIEVAL], model_id=REPO_ID))
    rows = [line for line in text.splitlines() if line.startswith("| Zero-Shot")]
    assert len(rows) == 2
    assert "top-1 accuracy 68.03 · top-5 accuracy 91.25" in rows[0] and "50,000" in rows[0]
    assert "openai_imagenet_80" in rows[0]
    assert "Recall@1 image→text 59.30" in rows[1] and "Recall@10 text→image 77.77" in rows[1]
    assert "a photo of {}." in rows[1] and "| 5,000 (2 skipped) |" in rows[1]


def test_unused_protocol_settings_are_left_out_of_the_model_index():
    record = {**RETRIEVAL, "protocol": {"caption_template": None}}
    assert {result.metric_args for result in eval_results_from([record])} == {None}


def test_card_without_results_has_no_model_index_and_no_evaluation_section(saved_folder):
    text = str(render_model_card(saved_folder, model_id=REPO_ID))
    metadata = front_matter(text)
    assert "model-index" not in metadata and "model_name" not in metadata
    assert "## Evaluation" not in text
    assert "## Training procedure" not in text  # nothing was said about training either
    assert ModelCard(text).data.eval_results is None


def test_card_carries_the_marker_and_cites_diht_and_the_library_not_cosmo(saved_folder):
    text = str(render_model_card(saved_folder))
    assert CARD_MARKER in text
    assert "@inproceedings{radenovic2023filtering" in text
    assert "title     = {Filtering, Distillation, and Hard Negatives for Vision-Language Pre-Training}" in text
    assert "Radenovic, Filip and Dubey, Abhimanyu and Kadian, Abhishek and Mihaylov, Todor" in text
    assert "eprint    = {2301.02280}" in text
    assert "@software{diht_cosmo" in text
    assert "2312.06112" not in text and "MAFA" not in text  # COSMO is not this model's method


def test_card_states_the_architecture_of_a_released_preset():
    # DiHT B/16 (official configs): vision 12 layers x 768, 12 heads, patch 16 at 224 px; text 12 x 512, 8 heads.
    text = str(render_model_card(DiHTConfig.from_preset("diht_vitb16_224px"), model_id=REPO_ID))
    assert "| layers | 12 | 12 |" in text
    assert "| width | 768 | 512 |" in text
    assert "| attention heads | 12 | 8 |" in text
    assert "224×224 px in 16×16 patches" in text and "77 tokens, vocabulary 49408" in text
    assert "**Embedding dimension:** 512" in text
    assert "`diht_vitb16_224px` architecture (ViT-B-16 in open_clip" in text


def test_card_of_an_official_checkpoint_names_its_source_license_and_training_data(model_folder):
    official = "diht_vitb16_224px_" + "0" * 64 + ".ckpt"  # the official naming: <preset>_<sha256>.ckpt
    (model_folder / "conversion_summary.json").write_text(json.dumps({"source_file": official,
                                                                      "source_sha256": "0" * 64}))
    text = str(render_model_card(model_folder, license="cc-by-nc-4.0"))
    assert f"`{official}` (SHA-256 `{'0' * 64}`), an official DiHT checkpoint" in text
    assert "facebookresearch/diht" in text and "no commercial use" in text
    assert "LAION-CAT: 438M pairs" in text


def test_cat_report_is_a_table_of_counts_and_shares(saved_folder):
    text = str(render_model_card(saved_folder, cat_report=CAT_REPORT))
    assert "| input pairs | 1,000 | 100.0% |" in text
    assert "| removed by `complexity` | 500 | 50.0% |" in text
    assert "| removed by `actions` | 250 | 25.0% |" in text
    assert "| removed by `text_spotting` | 50 | 5.0% |" in text
    assert "| **kept** | **200** | **20.0%** |" in text
    assert "do not add up" not in text
    assert "cat-filtering" in ModelCard(text).data.tags


def test_cat_report_whose_counts_do_not_add_up_says_so(saved_folder):
    text = str(render_model_card(saved_folder, cat_report={**CAT_REPORT, "kept": 210}))
    assert "The counts do not add up: kept + removed = 1,010, input = 1,000" in text


def test_training_section_shows_hn_nce_alpha_beta_and_only_the_settings_given(saved_folder):
    text = str(render_model_card(saved_folder, training={"hn_nce_alpha": 0.9, "hn_nce_beta": 0.25}))
    assert "α = 0.9, β = 0.25" in text
    assert "| HN-NCE α | 0.9 |" in text and "| HN-NCE β | 0.25 |" in text
    assert "learning rate" not in text and "concept distillation" not in text


def test_publish_dry_run_writes_the_card_from_training_arguments_and_lists_the_files(model_folder, tmp_path,
                                                                                      no_network):
    args = DiHTTrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=32,
                                 gradient_accumulation_steps=4, max_steps=1000, learning_rate=5e-4, hn_nce_beta=0.3,
                                 concept_loss_weight=0.5, report_to="none", use_cpu=True)
    files = publish(model_folder, REPO_ID, results=[CLASSIFICATION], cat_report=CAT_REPORT, training_args=args,
                    dry_run=True)
    assert files == MODEL_REPO_FILES

    text = (model_folder / "README.md").read_text()
    assert "| global batch size (pairs per step) | 128 |" in text  # 32 per device x 4 accumulation x 1 process
    assert "| optimizer steps | 1000 |" in text and "| peak learning rate | 0.0005 |" in text
    assert "α = 1, β = 0.3" in text
    assert "heads `objects`: 7" in text and "loss weight 0.5" in text  # the config's concept head
    assert ModelCard.load(model_folder / "README.md").data.eval_results[0].metric_value == pytest.approx(68.03)


def test_a_model_type_without_a_recipe_is_a_clear_error():
    with pytest.raises(ValueError, match="No model card recipe for model type 'clip'.*'diht'"):
        render_model_card({"model_type": "clip"})


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({**CLASSIFICATION, "metrics": {"top1": 68.03}}, "fractions in \\[0, 1\\]"),
        ({**CLASSIFICATION, "task": "captioning"}, "'task' must be one of"),
        ({**CLASSIFICATION, "metrics": {"mean_average_precision": 0.5}}, "none of the metrics"),
        ({**CLASSIFICATION, "dataset": {"split": "validation"}}, "'dataset' must be a dict with at least a 'name'"),
    ],
)
def test_bad_evaluation_records_are_clear_errors(record, message):
    with pytest.raises(ValueError, match=message):
        eval_results_from([record])


def test_two_results_for_the_same_dataset_and_split_are_refused():
    with pytest.raises(ValueError, match="results 0 and 1 are both for"):
        eval_results_from([CLASSIFICATION, {**CLASSIFICATION, "protocol": {"templates": "a photo of a {}."}}])


def test_write_model_card_refuses_to_replace_a_readme_it_did_not_write(model_folder):
    (model_folder / "README.md").write_text("# my own notes\n")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_model_card(model_folder)
    write_model_card(model_folder, overwrite=True)
    write_model_card(model_folder)  # our own card is replaced without asking
    assert CARD_MARKER in (model_folder / "README.md").read_text()


# ------------------------------------------------------------------------------------------------ the push


def _add_training_leftovers(folder: Path) -> None:
    (folder / "checkpoint-5").mkdir()
    shutil.copy(folder / "model.safetensors", folder / "checkpoint-5" / "model.safetensors")
    torch.save({"step": 5}, folder / "checkpoint-5" / "optimizer.pt")
    (folder / "runs").mkdir()
    (folder / "runs" / "events.out.tfevents.1").write_bytes(b"\0")
    torch.save({"state": {}}, folder / "optimizer.pt")
    (folder / "trainer_state.json").write_text("{}")
    (folder / "training_args.bin").write_bytes(b"\0")
    (folder / "zero_to_fp32.py").write_text("# DeepSpeed's script\n")


def test_dry_run_lists_exactly_the_model_repo_files_and_leaves_training_leftovers_out(model_folder, no_network,
                                                                                      capsys):
    write_model_card(model_folder, model_id=REPO_ID)
    _add_training_leftovers(model_folder)

    assert push_to_hub(model_folder, REPO_ID, dry_run=True) == MODEL_REPO_FILES
    out = capsys.readouterr().out
    assert REPO_ID in out
    assert f"{(model_folder / 'model.safetensors').stat().st_size / 1e6:.1f} MB" in out
    for leftover in ("checkpoint-5/", "runs/", "optimizer.pt", "trainer_state.json", "training_args.bin",
                     "zero_to_fp32.py"):
        assert f"  {leftover}  (" in out  # listed among the entries left out, with the reason


def uploaded_by(kwargs: dict, folder: Path) -> list[str]:
    """What `HfApi.upload_folder` sends with these arguments: huggingface_hub's own filter over the folder's files."""
    from huggingface_hub.utils import filter_repo_objects

    files = [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]
    return sorted(filter_repo_objects(files, allow_patterns=kwargs["allow_patterns"],
                                      ignore_patterns=kwargs["ignore_patterns"]))


def recording_hub(monkeypatch, calls: list, commit=None) -> None:
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kw: calls.append(("repo", repo_id, kw))
                        or SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(HfApi, "create_branch", lambda self, repo_id, **kw: calls.append(("branch", kw["branch"])))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kw: calls.append(("upload", kw))
                        or commit or SimpleNamespace(commit_url=""))


def test_push_uploads_the_folder_in_one_commit_with_exactly_the_model_repo_files(model_folder, monkeypatch):
    write_model_card(model_folder, model_id=REPO_ID)
    _add_training_leftovers(model_folder)
    calls = []
    commit = SimpleNamespace(commit_url=f"https://huggingface.co/{REPO_ID}/commit/0")
    recording_hub(monkeypatch, calls, commit)

    assert push_to_hub(model_folder, REPO_ID, private=True, commit_message="first") is commit

    assert [call[0] for call in calls] == ["repo", "upload"]  # no branch for main, one commit
    assert calls[0][2]["exist_ok"] is True and calls[0][2]["private"] is True
    _, kwargs = calls[1]
    assert kwargs["repo_id"] == REPO_ID and kwargs["commit_message"] == "first"
    assert Path(kwargs["folder_path"]) == model_folder
    assert uploaded_by(kwargs, model_folder) == MODEL_REPO_FILES  # no checkpoint, optimizer, log or pickle


def test_push_to_a_branch_creates_it_and_commits_there(model_folder, monkeypatch):
    write_model_card(model_folder, model_id=REPO_ID)
    calls = []
    recording_hub(monkeypatch, calls)
    push_to_hub(model_folder, REPO_ID, revision="v1")
    assert [call[0] for call in calls] == ["repo", "branch", "upload"]
    assert calls[1] == ("branch", "v1") and calls[2][1]["revision"] == "v1"


def test_push_refuses_a_folder_without_a_card_or_with_a_foreign_one(model_folder, no_network):
    with pytest.raises(FileNotFoundError, match="write the model card first"):
        push_to_hub(model_folder, REPO_ID, dry_run=True)
    (model_folder / "README.md").write_text("---\nlicense: mit\n---\n# someone else's card\n")
    with pytest.raises(ValueError, match="not written by hub_cards"):
        push_to_hub(model_folder, REPO_ID, dry_run=True)
    assert "README.md" in push_to_hub(model_folder, REPO_ID, dry_run=True, allow_foreign_card=True)


def test_push_refuses_a_folder_with_pickled_weights_only(model_folder, no_network):
    write_model_card(model_folder)
    (model_folder / "model.safetensors").rename(model_folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match=r"weights as \*\.safetensors"):
        push_to_hub(model_folder, REPO_ID, dry_run=True)


def test_folder_saved_without_remote_code_gets_the_files_and_auto_map_save_pretrained_writes(
    saved_folder, model_folder, monkeypatch
):
    config_file = model_folder / "config.json"
    config = json.loads(config_file.read_text())
    del config["auto_map"]
    config_file.write_text(json.dumps(config))
    for name in ("configuration_diht.py", "modeling_diht.py", "loss_diht.py"):
        (model_folder / name).unlink()
    write_model_card(model_folder)

    plan = upload_plan(model_folder)  # a dry run's plan: the folder is not touched
    assert [item.path_in_repo for item in plan.files] == MODEL_REPO_FILES
    assert not (model_folder / "modeling_diht.py").exists() and "auto_map" not in json.loads(config_file.read_text())
    calls = []
    recording_hub(monkeypatch, calls)
    push_to_hub(model_folder, REPO_ID)  # the push completes the folder first, then uploads it
    for name in ("configuration_diht.py", "modeling_diht.py", "loss_diht.py"):  # `saved_folder` has save_pretrained's
        assert (model_folder / name).read_bytes() == (saved_folder / name).read_bytes()
    saved_map = json.loads((saved_folder / "config.json").read_text())["auto_map"]
    assert json.loads(config_file.read_text())["auto_map"] == saved_map
    assert uploaded_by(calls[-1][1], model_folder) == MODEL_REPO_FILES


def test_push_command_line_dry_run(model_folder, no_network, capsys):
    from hub_cards.push import main

    write_model_card(model_folder)
    assert main(["--folder", str(model_folder), "--repo_id", REPO_ID, "--dry_run"]) == 0
    assert "Dry run, nothing uploaded. 9 files for me/diht-tiny" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ the Trainer


def _trainer(output_dir: Path) -> DiHTTrainer:
    args = DiHTTrainingArguments(output_dir=str(output_dir), report_to="none", use_cpu=True)
    return DiHTTrainer(model=DiHTModel(tiny_config()), args=args)


def test_trainer_create_model_card_leaves_our_card_untouched(model_folder, monkeypatch):
    write_model_card(model_folder, results=[CLASSIFICATION], model_id=REPO_ID)
    before = (model_folder / "README.md").read_text()
    monkeypatch.setattr(Trainer, "create_model_card", lambda self, **kw: pytest.fail("the draft card was written"))
    _trainer(model_folder).create_model_card(model_name="diht-tiny", tags=["x"])
    assert (model_folder / "README.md").read_text() == before


def test_trainer_create_model_card_writes_transformers_card_when_there_is_none(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(Trainer, "create_model_card", lambda self, **kw: calls.append(kw))
    _trainer(tmp_path).create_model_card(model_name="diht-tiny")
    assert calls == [{"model_name": "diht-tiny"}]


# ------------------------------------------------------------------------------------------------ the converter


@pytest.fixture(scope="module")
def original_checkpoint(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny open_clip model (the stand-in for an official DiHT checkpoint: the same layout) as safetensors, and
    the DiHT config that matches it."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    folder = tmp_path_factory.mktemp("original")
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=2, width=32, head_width=8, mlp_ratio=4.0, patch_size=2, image_size=30)
    text = CLIPTextCfg(context_length=77, vocab_size=49408, width=32, heads=4, layers=2, mlp_ratio=4.0)
    model = CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text, quick_gelu=False)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "tiny.safetensors"))
    tower = {"hidden_size": 32, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
    DiHTConfig(text_config=dict(tower), vision_config={**tower, "image_size": 30, "patch_size": 2},
               projection_dim=16).to_json_file(folder / "config.json")
    return folder / "tiny.safetensors", folder / "config.json"


def test_converted_folder_gets_its_card_from_the_push_command_and_loads_in_the_pipeline(
    original_checkpoint, tmp_path, no_network, capsys
):
    from PIL import Image
    from transformers import pipeline

    from hub_cards.push import main as push
    from modeling_diht.convert_diht_original_to_hf import main as convert

    checkpoint, config_json = original_checkpoint
    results_file = tmp_path / "zero_shot.json"
    results_file.write_text(json.dumps({"results": [CLASSIFICATION], "model": "tiny"}))
    folder = tmp_path / "converted"
    assert convert(["--checkpoint", str(checkpoint), "--config_json", str(config_json), "--output_dir",
                    str(folder)]) == 0
    assert push(["--folder", str(folder), "--repo_id", REPO_ID, "--dry_run", "--results_json",
                 str(results_file)]) == 0

    out = capsys.readouterr().out
    assert "Dry run, nothing uploaded. 11 files for me/diht-tiny" in out
    assert [f.path_in_repo for f in upload_plan(folder).files] == sorted(
        [*MODEL_REPO_FILES, "conversion_summary.json", "processor_config.json"])
    card = ModelCard.load(folder / "README.md")
    assert card.data.license == "cc-by-nc-4.0"  # a conversion keeps the official weights' license by default
    assert card.data.eval_results[0].metric_value == pytest.approx(68.03)
    assert "Converted from" in card.text and "`tiny.safetensors`" in card.text

    labels = ["a mountain", "a beach", "a desert"]
    image = Image.fromarray(torch.randint(0, 256, (40, 52, 3), generator=torch.Generator().manual_seed(0),
                                          dtype=torch.uint8).numpy())
    predictions = pipeline("zero-shot-image-classification", model=str(folder))(image, candidate_labels=labels)
    assert sorted(p["label"] for p in predictions) == sorted(labels)
    # The pipeline's scores are the model's own softmax over the three prompts (transformers' default template).
    from transformers import AutoImageProcessor, AutoTokenizer

    model = DiHTModel.from_pretrained(folder).eval()
    processor, tokenizer = AutoImageProcessor.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        out = model(**tokenizer([f"This is a photo of {label}." for label in labels], padding=True,
                                return_tensors="pt"), pixel_values=processor(image, return_tensors="pt").pixel_values)
    expected = dict(zip(labels, out.logits_per_image.softmax(-1)[0].tolist()))
    assert max(expected.values()) - min(expected.values()) > 1e-3  # the scores tell the labels apart
    for prediction in predictions:
        assert prediction["score"] == pytest.approx(expected[prediction["label"]], abs=1e-5)


def test_push_command_reports_an_incomplete_folder_without_a_traceback(tmp_path, no_network):
    from hub_cards.push import main as push

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "diht"}))
    with pytest.raises(SystemExit, match="not a complete model folder; missing: weights as"):
        push(["--folder", str(tmp_path), "--repo_id", REPO_ID, "--dry_run"])

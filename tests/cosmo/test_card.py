"""The model card and the Hub upload of COSMO checkpoints: COSMO's recipe in `hub_cards` (arXiv 2312.06112)."""

import json

import pytest
import torch
from huggingface_hub import ModelCard

from hub_cards import push_to_hub, render_model_card, upload_plan, write_model_card
from modeling_cosmo import CosmoConfig, CosmoForPreTraining
from tests.cosmo.helpers import tiny_config, tiny_image_processor, tiny_tokenizer

RETRIEVAL = {"task": "retrieval", "name": "coco", "dataset": {"name": "MS-COCO 5k", "type": "coco", "split": "test"},
             "protocol": {"rerank_k": 256},
             "metrics": {"image_to_text_recall@1": 0.70, "text_to_image_recall@1": 0.52,
                         "reranked_image_to_text_recall@1": 0.726, "reranked_text_to_image_recall@1": 0.539}}


@pytest.fixture
def folder(tmp_path):
    torch.manual_seed(0)
    CosmoForPreTraining(tiny_config()).save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    tiny_image_processor().save_pretrained(tmp_path)
    return tmp_path


def test_the_card_describes_the_encoders_and_cites_mafa_grit_albef_and_the_library_not_diht(folder):
    text = str(render_model_card(folder, model_id="me/cosmo"))
    assert "| layers | 2 | 2 | 2 (self-attention, cross-attention to the image, MLP) |" in text  # ViT, text, fusion
    assert "32×32 px in 8×8 patches" in text and "**ITC embedding dimension:** 16" in text
    for key in ("@inproceedings{byun2024mafa", "@inproceedings{byun2022grit", "@inproceedings{li2021align",
                "@software{diht_cosmo"):
        assert key in text
    assert "radenovic2023filtering" not in text and "HN-NCE α" not in text


def test_the_preset_is_recognised():
    text = str(render_model_card(CosmoConfig.from_preset("cosmo_vitb16_bert_base_256px"), model_id="me/cosmo"))
    assert "the published `cosmo_vitb16_bert_base_256px` architecture" in text
    assert "| layers | 12 | 6 | 6 (self-attention" in text


def test_re_ranked_recalls_reach_the_model_index_in_percent(folder):
    card = ModelCard(str(render_model_card(folder, results=[RETRIEVAL], model_id="me/cosmo")))
    values = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert values == {"image_to_text_recall_at_1": 70.0, "text_to_image_recall_at_1": 52.0,
                      "reranked_image_to_text_recall_at_1": 72.6, "reranked_text_to_image_recall_at_1": 53.9}
    assert "Recall@1 image→text, re-ranked 72.60" in str(card)
    args = {r.metric_type: r.metric_args for r in card.data.eval_results}
    assert args["reranked_image_to_text_recall_at_1"] == {"rerank_k": 256}
    assert args["image_to_text_recall_at_1"] is None  # ranked by ITC alone: no re-ranking depth to report


def test_the_upload_carries_every_remote_code_file_and_completes_a_bare_folder(folder, monkeypatch):
    import modeling_cosmo

    write_model_card(folder, model_id="me/cosmo")
    planned = [item.path_in_repo for item in upload_plan(folder).files]
    assert set(modeling_cosmo.COSMO_REMOTE_CODE_FILES) <= set(planned)
    assert json.loads((folder / "config.json").read_text())["auto_map"] == modeling_cosmo.COSMO_AUTO_MAP

    for name in modeling_cosmo.COSMO_REMOTE_CODE_FILES:  # a folder saved without remote code
        (folder / name).unlink()
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]
    (folder / "config.json").write_text(json.dumps(config))
    assert push_to_hub(folder, "me/cosmo", dry_run=True) == planned  # the same files, from the installed package
    plan = upload_plan(folder)
    assert plan.missing_auto_map == modeling_cosmo.COSMO_AUTO_MAP

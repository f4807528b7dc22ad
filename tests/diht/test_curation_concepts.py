"""Specification of `curation.label_concepts` (DiHT concept distillation targets, arXiv 2301.02280).

Expected labels come from calling timm directly: the teacher's own eval transform (`resolve_data_config` +
`create_transform`) on each image alone, one forward, softmax, top-k. The teacher is a random-init timm test model.
"""

import pytest
import timm
import torch
from datasets import ClassLabel, Dataset, Features, Image, load_from_disk
from timm.data import ImageNetInfo, create_transform, resolve_data_config
from torch import nn

from curation import concept_vocabulary, label_concepts
from tests.helpers import encode, scene, truncated_jpeg

TOP_K = 3


def images_dataset(extra: list | None = None) -> Dataset:
    sizes = [(224, 224), (160, 300), (400, 90), (50, 50), (224, 224), (300, 200)]
    images = [{"bytes": encode(scene(i, size=max(s)).resize(s)), "path": None} for i, s in enumerate(sizes)]
    return Dataset.from_dict({"image": images + (extra or [])}, features=Features({"image": Image()}))


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("test_vit", pretrained=False).eval()


@pytest.fixture(scope="module")
def labelled(teacher):
    return label_concepts(images_dataset(), teacher, top_k=TOP_K, return_scores=True, batch_size=4)


def direct_top_k(teacher, dataset, k=TOP_K):
    transform = create_transform(**resolve_data_config({}, model=teacher))
    ids, scores = [], []
    with torch.no_grad():
        for image in dataset["image"]:
            probs = teacher(transform(image.convert("RGB"))[None]).softmax(-1)[0]  # (C,)
            top = probs.topk(k)
            ids.append(top.indices.tolist())
            scores.append(top.values.tolist())
    return ids, scores


def test_concept_ids_are_the_teachers_top_k_classes(teacher, labelled):
    assert labelled["concept_ids"] == direct_top_k(teacher, images_dataset())[0]


def test_concept_scores_are_the_teachers_probabilities_highest_first(teacher, labelled):
    expected = torch.tensor(direct_top_k(teacher, images_dataset())[1])
    torch.testing.assert_close(torch.tensor(labelled["concept_scores"]), expected, atol=1e-5, rtol=1e-4)


def test_concept_ids_are_valid_class_indices(labelled):
    ids = [i for row in labelled["concept_ids"] for i in row]
    assert all(0 <= i < 1000 for i in ids) and all(len(set(row)) == TOP_K for row in labelled["concept_ids"])


def test_labels_do_not_depend_on_batch_size(teacher, labelled):
    assert label_concepts(images_dataset(), teacher, top_k=TOP_K, batch_size=1)["concept_ids"] == \
        labelled["concept_ids"]


def test_labels_do_not_depend_on_num_proc(teacher, labelled):
    assert label_concepts(images_dataset(), teacher, top_k=TOP_K, num_proc=2)["concept_ids"] == \
        labelled["concept_ids"]


def test_streaming_gives_the_same_labels(teacher, labelled):
    stream = label_concepts(images_dataset().to_iterable_dataset(num_shards=2), teacher, top_k=TOP_K, batch_size=4)
    assert [row["concept_ids"] for row in stream] == labelled["concept_ids"]


def test_teacher_by_name_is_deterministic_under_a_seed():
    torch.manual_seed(1)
    first = label_concepts(images_dataset(), "test_vit", pretrained=False, top_k=TOP_K)["concept_ids"]
    torch.manual_seed(1)
    second = label_concepts(images_dataset(), "test_vit", pretrained=False, top_k=TOP_K)["concept_ids"]
    assert first == second


def test_undecodable_images_get_empty_labels_and_are_counted(teacher):
    bad = [{"bytes": truncated_jpeg(), "path": None}, {"bytes": b"<html>", "path": None}]
    labelled, report = label_concepts(images_dataset(bad), teacher, top_k=TOP_K, return_report=True)
    assert labelled["concept_ids"][-2:] == [[], []]
    assert report == {"total": 8, "labelled": 6, "undecodable_image": 2}


def test_streaming_report_counts_after_a_pass(teacher):
    bad = [{"bytes": b"<html>", "path": None}]
    stream, report = label_concepts(images_dataset(bad).to_iterable_dataset(), teacher, top_k=TOP_K,
                                    return_report=True)
    list(stream)
    assert report == {"total": 7, "labelled": 6, "undecodable_image": 1}


# ---- the vocabulary ----------------------------------------------------------------------------------------------
def imagenet_names() -> list[str]:
    info = ImageNetInfo("imagenet-1k")
    names = [info.index_to_description(i) for i in range(1000)]
    return [f"{n} ({i})" if names.count(n) > 1 else n for i, n in enumerate(names)]  # "crane" is two classes


def test_vocabulary_of_an_imagenet_teacher_is_the_imagenet_class_names(labelled):
    assert concept_vocabulary(labelled) == imagenet_names()


def test_vocabulary_travels_with_save_to_disk(labelled, tmp_path):
    labelled.save_to_disk(str(tmp_path / "labelled"))
    assert concept_vocabulary(load_from_disk(str(tmp_path / "labelled"))) == imagenet_names()


def test_concept_ids_column_is_a_list_of_class_labels(labelled):
    assert isinstance(labelled.features["concept_ids"].feature, ClassLabel)


def test_plain_module_teacher_gets_class_index_names():
    torch.manual_seed(0)
    module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 4))
    labelled = label_concepts(images_dataset(), module, top_k=2)
    assert concept_vocabulary(labelled) == ["class_0", "class_1", "class_2", "class_3"]


def test_user_vocabulary_names_the_classes():
    module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    labelled = label_concepts(images_dataset(), module, top_k=1, vocabulary=["cat", "dog"])
    assert concept_vocabulary(labelled) == ["cat", "dog"]


# ---- errors ------------------------------------------------------------------------------------------------------
def test_vocabulary_of_the_wrong_length_is_an_error():
    module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="2 classes"):
        label_concepts(images_dataset(), module, vocabulary=["cat"], top_k=1)


def test_top_k_above_the_number_of_classes_is_an_error():
    module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="top_k"):
        label_concepts(images_dataset(), module, top_k=3)


def test_missing_image_column_is_an_error_naming_it(teacher):
    with pytest.raises(ValueError, match="'jpg'"):
        label_concepts(images_dataset(), teacher, image_column="jpg")


def test_vocabulary_of_an_unlabelled_column_is_an_error():
    with pytest.raises(ValueError, match="label_concepts"):
        concept_vocabulary(images_dataset(), column="image")

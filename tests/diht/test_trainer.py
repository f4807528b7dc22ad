"""DiHTTrainer: the update it makes equals a hand-computed one; accumulation, resume, logging, clamp, bad rows."""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, Sequence, Value
from transformers import TrainerCallback

from modeling_diht import DiHTModel, hn_nce_loss
from tests.helpers import (
    IMAGE_SIZE,
    arguments,
    collator_for,
    png16,
    scene_pairs,
    tiny_model,
    tokenizer_for,
)
from trainers import DiHTTrainer, concept_targets, diht_train_transform


class RecordingCollator:
    """Remembers every micro-batch it builds, so a test can recompute the update by hand."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, rows):
        batch = self.collator(rows)
        self.batches.append({k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
        return batch


def reference_gradients(model: DiHTModel, micro_batches: list[dict], accumulation: int) -> dict[str, torch.Tensor]:
    """Sum over micro-batches of the gradient of (HN-NCE + concept BCE) / accumulation, computed without the trainer."""
    model.zero_grad()
    for batch in micro_batches:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")}
        out = model(**inputs)
        loss = hn_nce_loss(out.image_embeds, out.text_embeds, model.logit_scale.exp(), alpha=1.0, beta=0.5)
        loss = loss + F.binary_cross_entropy_with_logits(out.concept_logits["concepts"], batch["concept_targets"])
        (loss / accumulation).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def test_gradient_accumulation_step_equals_hand_computed_mean_of_micro_batch_gradients(tmp_path):
    data = scene_pairs(8)
    tokenizer = tokenizer_for(data)
    model = tiny_model(tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    recorder = RecordingCollator(collator_for(tokenizer))
    args = arguments(tmp_path, gradient_accumulation_steps=2)
    DiHTTrainer(model=model, args=args, train_dataset=data, data_collator=recorder).train()
    assert len(recorder.batches) == 2  # one optimizer step over two micro-batches of 4

    reference = tiny_model(tokenizer)
    grads = reference_gradients(reference, recorder.batches, accumulation=2)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.detach(), before[name] - 0.5 * grads[name], rtol=1e-4, atol=1e-6,
                                   msg=name)


def test_accumulating_two_micro_batches_is_not_one_batch_of_eight(tmp_path):
    # HN-NCE over 8 pairs has different negatives than two losses over 4: accumulation must not be mistaken for it.
    data = scene_pairs(8)
    tokenizer = tokenizer_for(data)
    recorder = RecordingCollator(collator_for(tokenizer))
    DiHTTrainer(model=tiny_model(tokenizer), args=arguments(tmp_path, gradient_accumulation_steps=2),
                train_dataset=data, data_collator=recorder).train()
    whole = {k: torch.cat([b[k] for b in recorder.batches]) for k in ("pixel_values", "concept_targets")}
    width = max(b["input_ids"].shape[1] for b in recorder.batches)
    for key in ("input_ids", "attention_mask"):
        whole[key] = torch.cat([F.pad(b[key], (0, width - b[key].shape[1])) for b in recorder.batches])
    split = reference_gradients(tiny_model(tokenizer), recorder.batches, accumulation=2)
    joint = reference_gradients(tiny_model(tokenizer), [whole], accumulation=1)
    assert not torch.allclose(split["visual_projection.weight"], joint["visual_projection.weight"], rtol=1e-3)


def test_logged_loss_is_contrastive_plus_weighted_concept_term(tmp_path):
    data = scene_pairs(16)
    tokenizer = tokenizer_for(data)
    args = arguments(tmp_path, max_steps=3, concept_loss_weight=0.25, learning_rate=1e-3, optim="adamw_torch")
    trainer = DiHTTrainer(model=tiny_model(tokenizer), args=args, train_dataset=data,
                          data_collator=collator_for(tokenizer))
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    for entry in logs:
        assert entry["loss"] == pytest.approx(entry["contrastive_loss"] + 0.25 * entry["concept_loss"], rel=1e-4)
        assert 1.0 < entry["logit_scale"] <= 100.0


def test_logit_scale_is_clamped_to_ln_100_after_every_step(tmp_path):
    data = scene_pairs(8)
    tokenizer = tokenizer_for(data)
    clamped, free = tiny_model(tokenizer), tiny_model(tokenizer)
    for model in (clamped, free):
        model.logit_scale.data.fill_(math.log(500.0))
    common = dict(learning_rate=1e-6)
    DiHTTrainer(model=clamped, args=arguments(tmp_path, **common), train_dataset=data,
                data_collator=collator_for(tokenizer)).train()
    DiHTTrainer(model=free, args=arguments(tmp_path, max_logit_scale=0, **common), train_dataset=data,
                data_collator=collator_for(tokenizer)).train()
    assert clamped.logit_scale.item() == pytest.approx(math.log(100.0))
    assert free.logit_scale.item() > math.log(400.0)


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def test_resuming_from_a_checkpoint_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    data = scene_pairs(48)
    tokenizer = tokenizer_for(data)
    # Random crops draw from the RNG, AdamW has state and the schedule has warm-up: all must be restored.
    common = dict(per_device_train_batch_size=8, max_steps=6, optim="adamw_torch", learning_rate=1e-3,
                  lr_scheduler_type="cosine", warmup_steps=2, save_strategy="steps", save_steps=100)

    def run(out, callbacks=(), resume=None):
        collator = collator_for(tokenizer, train_transform=diht_train_transform(IMAGE_SIZE))
        trainer = DiHTTrainer(model=tiny_model(tokenizer), args=arguments(out, **common), train_dataset=data,
                              data_collator=collator, callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return trainer.model

    straight = run(tmp_path / "straight")
    run(tmp_path / "interrupted", callbacks=[StopAt(3)])
    checkpoint = tmp_path / "interrupted" / "checkpoint-3"
    assert checkpoint.is_dir()
    resumed = run(tmp_path / "interrupted", resume=str(checkpoint))
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_corrupt_images_and_empty_captions_are_skipped_and_counted_through_workers(tmp_path):
    data = scene_pairs(16)
    rows = data.to_list()
    rows[1]["image"] = {"bytes": b"<html>404 not found</html>", "path": None}
    truncated = rows[5]["image"]["bytes"]
    rows[5]["image"] = {"bytes": truncated[: len(truncated) // 2], "path": None}
    rows[9]["caption"] = ""
    rows[12]["image"] = {"bytes": png16(), "path": None}  # 16-bit grayscale: decodable, must not be skipped
    features = Features({**data.features, "concept_ids": Sequence(Value("int64"))})
    broken = Dataset.from_list(rows, features=features)
    tokenizer = tokenizer_for(data)
    args = arguments(tmp_path, per_device_train_batch_size=8, max_steps=2, dataloader_num_workers=1)
    trainer = DiHTTrainer(model=tiny_model(tokenizer), args=args, train_dataset=broken,
                          data_collator=collator_for(tokenizer))
    trainer.train()
    assert trainer.skipped_counts == {"skipped_images": 2, "skipped_captions": 1, "reused_pairs": 0}


def test_collator_tops_up_a_batch_left_with_one_pair_from_the_previous_batch():
    data = scene_pairs(4)
    tokenizer = tokenizer_for(data)
    collator = collator_for(tokenizer)
    good = collator(data.to_list()[:2])
    rows = data.to_list()[2:]
    rows[0]["image"] = {"bytes": b"garbage", "path": None}
    topped = collator(rows)
    assert topped["pixel_values"].shape[0] == 2
    assert (topped["skipped_images"], topped["reused_pairs"]) == (1, 1)
    torch.testing.assert_close(topped["pixel_values"][1], good["pixel_values"][0])


def test_collator_names_a_missing_column():
    data = scene_pairs(2).rename_column("caption", "text")
    collator = collator_for(tokenizer_for(scene_pairs(2)))
    with pytest.raises(KeyError, match="'caption'"):
        collator(data.to_list())


def test_concept_targets_hard_and_soft_by_hand():
    hard = concept_targets([[3, 1], []], num_concepts=4)
    torch.testing.assert_close(hard, torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]))
    soft = concept_targets([[3, 1]], num_concepts=4, concept_scores=[[0.7, 0.2]])
    torch.testing.assert_close(soft, torch.tensor([[0.0, 0.2, 0.0, 0.7]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        concept_targets([[4]], num_concepts=4)


def test_trainer_refuses_plain_training_arguments(tmp_path):
    from transformers import TrainingArguments

    data = scene_pairs(4)
    with pytest.raises(TypeError, match="DiHTTrainingArguments"):
        DiHTTrainer(model=tiny_model(tokenizer_for(data)), args=TrainingArguments(str(tmp_path)))


def test_augmentation_depends_on_the_pair_and_epoch_not_on_the_batch():
    data = scene_pairs(6).to_list()
    tokenizer = tokenizer_for(scene_pairs(6))
    collator = collator_for(tokenizer, train_transform=diht_train_transform(IMAGE_SIZE))
    together = collator(data)["pixel_values"]
    apart = collator([data[4], data[0]])["pixel_values"]
    torch.testing.assert_close(apart[0], together[4])
    torch.testing.assert_close(apart[1], together[0])
    collator.set_epoch(1)
    assert not torch.allclose(collator(data)["pixel_values"], together)

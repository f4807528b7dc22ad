"""CosmoTrainer (arXiv 2312.06112): an accumulated step equals the hand-computed mean of its micro-batch gradients, a
run resumed in the middle of a grouped epoch ends with the weights of an uninterrupted one, the epoch switches
(GRIT from epoch 1, S-ITC from `itc_smoothing_start_epoch`), the logged terms, and retrieval fine-tuning."""

import torch
from transformers import TrainerCallback

from image_text_data import undecoded
from image_text_data.demo import build_grouped_scenes, build_wordpiece_tokenizer
from modeling_cosmo import CosmoForPreTraining, cosmo_image_processor
from tests.cosmo.helpers import IMAGE_SIZE, tiny_config
from trainers import (
    CosmoTrainer,
    CosmoTrainingArguments,
    GroupedMiniBatchSampler,
    ImageTextCollator,
    ITMDiscriminator,
    MaskedCaptions,
    cosmo_train_transform,
)


def scenes(num_images: int, seed: int = 0):
    data = undecoded(build_grouped_scenes(num_images, image_size=IMAGE_SIZE, seed=seed), "image")
    return data.add_column("index", list(range(len(data))))


def tokenizer_of(data):
    return build_wordpiece_tokenizer(list(data["caption"]))


def model_for(tokenizer, cls=CosmoForPreTraining, seed: int = 0):
    torch.manual_seed(seed)
    return cls(tiny_config(text={"vocab_size": len(tokenizer), "max_position_embeddings": 32}))


def collator_for(tokenizer, *, mlm: bool = True, augment: bool = False, top_up: bool = True):
    return ImageTextCollator(tokenizer, cosmo_image_processor(IMAGE_SIZE),
                             train_transform=cosmo_train_transform(IMAGE_SIZE) if augment else None,
                             add_ons=[MaskedCaptions(tokenizer, seed=0)] if mlm else [], top_up=top_up)


def arguments(tmp_path, **overrides) -> CosmoTrainingArguments:
    """Plain SGD steps of 4 pairs on CPU, logged every step, nothing saved, no GRIT or ECM (override any field)."""
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=1, learning_rate=0.5,
                  optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, max_grad_norm=0.0, logging_steps=1,
                  save_strategy="no", report_to="none", seed=0, use_cpu=True, disable_tqdm=True,
                  dataloader_pin_memory=False, grouped_batches=False, connection_mining=False)
    values.update(overrides)
    return CosmoTrainingArguments(**values)


class IndexedDiscriminator(ITMDiscriminator):
    """Match probabilities that are a fixed function of the dataset rows of a pair, spread over (0, 1): all three ECM
    classes occur, and a resumed run sees the decisions the uninterrupted one saw."""

    def __init__(self):
        super().__init__(torch.nn.Linear(1, 1))

    def match_probability(self, inputs, pairs):
        index = inputs["index"]
        images, texts = index[pairs[:, 0]], index[pairs[:, 1]]
        return ((images * 7 + texts * 3) % 10).float() / 10 + 0.05


class RecordingCollator:
    """Remembers every micro-batch it builds."""

    def __init__(self, collator):
        self.collator, self.batches = collator, []
        self.add_ons, self.counters = collator.add_ons, collator.counters

    def set_epoch(self, epoch):
        self.collator.set_epoch(epoch)

    def __call__(self, rows):
        batch = self.collator(rows)
        self.batches.append({k: v.clone() if torch.is_tensor(v) else v for k, v in batch.items()})
        return batch


def assert_sgd_step(model, before, reference, lr=0.5):
    """The trained weights are one SGD step along the reference's gradients; the temperature is then clamped to
    COSMO's [0.001, 0.5]."""
    for name, param in model.named_parameters():
        grad = reference.get_parameter(name).grad
        expected = before[name] - lr * (grad if grad is not None else 0)
        if name == "temp":
            expected = expected.clamp(0.001, 0.5)
        torch.testing.assert_close(param.detach(), expected, rtol=1e-4, atol=1e-6, msg=name)


def test_an_accumulated_step_is_the_mean_of_the_micro_batch_gradients_of_itc_itm_and_mlm(tmp_path):
    data = scenes(4)  # 8 rows (two captions per image): exactly the two micro-batches
    tokenizer = tokenizer_of(data)
    model = model_for(tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    recorder = RecordingCollator(collator_for(tokenizer))
    CosmoTrainer(model=model, args=arguments(tmp_path, gradient_accumulation_steps=2), train_dataset=data,
                 data_collator=recorder).train()
    assert len(recorder.batches) == 2

    # The reference: the model's own local loss (ITC with same-image positives, hardest-negative ITM, MLM) of each
    # micro-batch, halved, summed; no trainer involved.
    reference = model_for(tokenizer)
    for batch in recorder.batches:
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_id", "mlm_input_ids",
                                        "mlm_labels")}
        (reference(**inputs, itc_smoothing=0.0).loss / 2).backward()
    assert_sgd_step(model, before, reference)


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def test_a_run_resumed_inside_a_grouped_epoch_ends_with_the_weights_of_an_uninterrupted_run(tmp_path):
    data = scenes(12)  # 24 rows, 6 batches per epoch: epoch 0 random, epochs 1 and 2 grouped
    tokenizer = tokenizer_of(data)
    common = dict(num_train_epochs=3, max_steps=-1, optim="adamw_torch", learning_rate=1e-3, lr_scheduler_type="cosine",
                  warmup_steps=2, save_strategy="steps", save_steps=100, grouped_batches=True, connection_mining=True,
                  grit_buffer_size=10, grit_search_space=8)

    def run(out, callbacks=(), resume=None):
        trainer = CosmoTrainer(model=model_for(tokenizer), args=arguments(out, **common), train_dataset=data,
                               data_collator=collator_for(tokenizer, augment=True, top_up=False),
                               discriminator=IndexedDiscriminator(), callbacks=list(callbacks))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(tmp_path / "straight")
    assert isinstance(straight.train_batch_sampler, GroupedMiniBatchSampler)
    assert min(straight.ecm_counts.values()) > 0  # conversions, neutral and negative pairs all took part
    run(tmp_path / "interrupted", callbacks=[StopAt(9)])  # 3 steps into epoch 1
    resumed = run(tmp_path / "interrupted", resume=str(tmp_path / "interrupted" / "checkpoint-9"))
    for (name, a), (_, b) in zip(straight.model.named_parameters(), resumed.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=name)


def test_epoch_switches_logged_terms_and_counts(tmp_path):
    data = scenes(8)
    tokenizer = tokenizer_of(data)
    discriminator = IndexedDiscriminator()
    args = arguments(tmp_path, num_train_epochs=2, max_steps=-1, learning_rate=1e-3, optim="adamw_torch",
                     grouped_batches=True, connection_mining=True, itc_smoothing=0.3)
    trainer = CosmoTrainer(model=model_for(tokenizer), args=args, train_dataset=data,
                           data_collator=collator_for(tokenizer, top_up=False), discriminator=discriminator)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 8  # 16 rows / 4, two epochs
    first, second = logs[:4], logs[4:]
    assert all(entry["itc_smoothing"] == 0.0 for entry in first) and all(
        abs(entry["itc_smoothing"] - 0.3) < 1e-6 for entry in second)
    for entry in logs:
        assert abs(entry["loss"] - (entry["itc_loss"] + entry["itm_loss"] + entry["mlm_loss"])) < 1e-3
        assert entry["ecm_converted"] + entry["ecm_neutral"] + entry["ecm_negative"] == 8  # 2B scored pairs
        assert entry["temperature"] > 0
    # The ITM prior sentinel: 1 positive to 2 negatives, plus converted pairs as positives.
    for entry in logs:
        positives = 4 + entry["ecm_converted"]
        share = positives / (positives + entry["ecm_neutral"] + entry["ecm_negative"])
        prior = -(share * torch.tensor(share).log() + (1 - share) * torch.tensor(1 - share).log())
        assert abs(entry["itm_prior_loss"] - float(prior)) < 1e-3
    assert trainer.train_batch_sampler.epoch == 1
    totals = trainer.ecm_counts
    assert sum(totals.values()) == 8 * 8


def test_retrieval_fine_tuning_uses_same_image_positives_and_never_mines(tmp_path):
    data = scenes(2)  # 4 rows: one batch
    tokenizer = tokenizer_of(data)
    model = model_for(tokenizer)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    recorder = RecordingCollator(collator_for(tokenizer, mlm=False))
    args = arguments(tmp_path, task="retrieval_finetune", connection_mining=True)  # ignored: no discriminator needed
    trainer = CosmoTrainer(model=model, args=args, train_dataset=data, data_collator=recorder)
    trainer.train()
    assert trainer.miner is None and "mlm_input_ids" not in recorder.batches[0]
    batch = recorder.batches[0]
    reference = model_for(tokenizer)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values", "image_id")}
    out = reference(**inputs, itc_smoothing=0.0)
    assert out.mlm_loss is None
    # Same-image rows are never ITM negatives of each other.
    ids = batch["image_id"]
    negatives = out.itm_pairs[out.itm_labels == 0]
    assert bool((ids[negatives[:, 0]] != ids[negatives[:, 1]]).all())
    out.loss.backward()
    assert_sgd_step(model, before, reference)


def test_bf16_training_keeps_the_discriminator_frozen_in_bf16_and_out_of_the_optimizer(tmp_path):
    from modeling_cosmo import CosmoForImageTextRetrieval
    from trainers import CosmoDiscriminator

    data = scenes(8)
    tokenizer = tokenizer_of(data)
    frozen = model_for(tokenizer, cls=CosmoForImageTextRetrieval, seed=1)
    original = {name: param.detach().clone() for name, param in frozen.named_parameters()}
    discriminator = CosmoDiscriminator(frozen)
    args = arguments(tmp_path, max_steps=2, bf16=True, connection_mining=True, ecm_history=100,
                     learning_rate=1e-3, optim="adamw_torch")
    trainer = CosmoTrainer(model=model_for(tokenizer), args=args, train_dataset=data,
                           data_collator=collator_for(tokenizer), discriminator=discriminator)
    assert discriminator.dtype == torch.bfloat16  # inference in the training precision
    trainer.train()

    assert all(param.dtype == torch.float32 for param in trainer.model.parameters())  # the student's master weights
    optimised = {id(param) for group in trainer.optimizer.param_groups for param in group["params"]}
    assert not optimised & {id(param) for param in frozen.parameters()}
    for name, param in frozen.named_parameters():
        assert param.grad is None and not param.requires_grad
        torch.testing.assert_close(param.float(), original[name].to(torch.bfloat16).float(), rtol=0, atol=0, msg=name)
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(entry["loss"])) for entry in logs)
    assert all(entry["ecm_converted"] + entry["ecm_neutral"] + entry["ecm_negative"] == 8 for entry in logs)
    assert len(trainer.miner.records) == 16 and all(0.0 <= record[2] <= 1.0 for record in trainer.miner.records)

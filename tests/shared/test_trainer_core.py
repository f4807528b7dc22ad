"""The recipe-neutral trainer core (`trainers.ContrastiveTrainer`), specified with a toy recipe that is neither DiHT
nor COSMO: declared parameter clamps, a batch sampler that sees the embeddings of every step and whose state
survives a resume, collator counters and pass-through columns, and the model card it leaves alone."""

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from torch import nn
from transformers import PretrainedConfig, TrainerCallback

from tests.helpers import image_processor, scene_pairs, tokenizer_for
from trainers import (
    ContrastiveTrainer,
    ContrastiveTrainingArguments,
    GlobalBatchContrastiveLoss,
    ImageTextCollator,
    declared_clamps,
)

DIM = 4


@dataclass
class ToyOutput:
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    logit_scale: torch.Tensor


class ToyDualEncoder(nn.Module):
    """Two linear towers over a feature vector, with an ALBEF-style temperature `temp` it declares clamped."""

    def __init__(self, low: float = 0.001, high: float = 0.5):
        super().__init__()
        torch.manual_seed(0)
        self.image, self.text = nn.Linear(DIM, DIM), nn.Linear(DIM, DIM)
        self.temp = nn.Parameter(torch.tensor(0.07))
        self.bounds = (low, high)

    def clamped_parameters(self) -> dict[str, tuple[float, float]]:
        return {"temp": self.bounds}

    def forward(self, features: torch.Tensor, **kwargs) -> ToyOutput:
        return ToyOutput(F.normalize(self.image(features), dim=-1), F.normalize(self.text(features.flip(1)), dim=-1),
                         1.0 / self.temp)


class ToyTrainer(ContrastiveTrainer):
    """A recipe of one term: InfoNCE over the global batch."""

    def compute_loss_terms(self, model, inputs):
        outputs = model(**inputs)
        loss = GlobalBatchContrastiveLoss()(outputs.image_embeds, outputs.text_embeds, outputs.logit_scale)
        return loss, {"itc": loss, "temperature": 1.0 / outputs.logit_scale}, outputs


class ToyCollator:
    """Rows `{index, features}` to a batch; declares one counter and records the indices it served."""

    counters = ("odd_rows",)

    def __init__(self):
        self.served: list[list[int]] = []

    def __call__(self, rows):
        indices = [row["index"] for row in rows]
        self.served.append(indices)
        return {"features": torch.tensor([row["features"] for row in rows]), "index": torch.tensor(indices),
                "odd_rows": sum(i % 2 for i in indices)}


def toy_data(num: int = 24) -> Dataset:
    generator = torch.Generator().manual_seed(1)
    return Dataset.from_dict({"index": list(range(num)), "features": torch.randn(num, DIM, generator=generator).tolist()})


def toy_arguments(tmp_path, **overrides) -> ContrastiveTrainingArguments:
    values = dict(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=3, learning_rate=0.05,
                  optim="sgd", lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none",
                  seed=0, use_cpu=True, disable_tqdm=True, dataloader_pin_memory=False)
    values.update(overrides)
    return ContrastiveTrainingArguments(**values)


# ---- clamps the model declares ---------------------------------------------------------------------------------------

def test_the_temperature_a_model_declares_is_clamped_after_every_step(tmp_path):
    for start, bound in ((5.0, 0.5), (1e-6, 0.001)):  # far above, far below the declared [0.001, 0.5]
        model = ToyDualEncoder()
        model.temp.data.fill_(start)
        trainer = ToyTrainer(model=model, args=toy_arguments(tmp_path, learning_rate=1e-9), train_dataset=toy_data(),
                             data_collator=ToyCollator())
        trainer.train()
        # The forward of step 1 saw the start value; every later forward saw a clamped one (a 1e-9 step cannot
        # move the temperature by itself).
        seen = [entry["temperature"] for entry in trainer.state.log_history if "temperature" in entry]
        assert seen[0] == pytest.approx(start, rel=1e-5)
        assert seen[1:] == [pytest.approx(bound, rel=1e-5)] * 2


def test_clamping_can_be_switched_off_and_a_declaration_must_name_a_parameter(tmp_path):
    model = ToyDualEncoder()
    model.temp.data.fill_(5.0)
    ToyTrainer(model=model, args=toy_arguments(tmp_path, learning_rate=1e-6, clamp_parameters=False),
               train_dataset=toy_data(), data_collator=ToyCollator()).train()
    assert model.temp.item() > 4.9
    wrong = ToyDualEncoder()
    wrong.clamped_parameters = lambda: {"logit_scale": (0.0, math.log(100))}  # a name match would clamp nothing
    with pytest.raises(ValueError, match="'logit_scale', which is not one of its parameters"):
        declared_clamps(wrong)


# ---- the batch sampler, its embedding tap and its state --------------------------------------------------------------

class EmbeddingOrderSampler:
    """A stateful stand-in for GRIT's grouped sampler: epoch 0 is a seeded permutation; each later epoch serves the
    rows sorted by the first coordinate of the image embedding observed for them in the epoch before."""

    def __init__(self, dataset, *, batch_size, drop_last, seed, rank, world_size):
        self.size, self.batch_size, self.seed, self.epoch = len(dataset), batch_size, seed, 0
        self.keys = torch.zeros(self.size)  # what the tap observed this epoch
        self.next_keys = None  # the order of the next epoch, once this one is over
        self.observed: list[tuple[list[int], list[float]]] = []  # (indices, first image coordinate) per step

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.next_keys, self.keys, self.epoch = self.keys.clone(), torch.zeros(self.size), epoch

    def observe(self, indices, image_embeds, text_embeds) -> None:
        assert not image_embeds.requires_grad and not text_embeds.requires_grad
        self.observed.append((indices.tolist(), image_embeds[:, 0].tolist()))
        self.keys[indices] = image_embeds[:, 0]

    def __iter__(self):
        if self.next_keys is None:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed)).tolist()
        else:
            order = self.next_keys.argsort().tolist()
        return iter([order[i:i + self.batch_size] for i in range(0, self.size, self.batch_size)])

    def __len__(self) -> int:
        return self.size // self.batch_size

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "keys": self.keys,
                **({"next_keys": self.next_keys} if self.next_keys is not None else {})}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.keys, self.next_keys = state["epoch"], state["keys"], state.get("next_keys")


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = True
            control.should_training_stop = True


def run_with_sampler(output_dir, *, stop_at=None, resume=None):
    samplers = []

    def factory(dataset, **kwargs):
        samplers.append(EmbeddingOrderSampler(dataset, **kwargs))
        return samplers[-1]

    collator = ToyCollator()
    args = toy_arguments(output_dir, max_steps=15, save_strategy="steps", save_steps=100)  # 6 batches per epoch
    trainer = ToyTrainer(model=ToyDualEncoder(), args=args, train_dataset=toy_data(), data_collator=collator,
                         batch_sampler=factory, callbacks=[StopAt(stop_at)] if stop_at else [])
    trainer.train(resume_from_checkpoint=resume)
    return trainer, samplers[0], collator


def test_the_sampler_serves_every_batch_and_sees_the_embeddings_of_each_step(tmp_path):
    trainer, sampler, collator = run_with_sampler(tmp_path)
    assert len(sampler.observed) == 15  # one tap per training forward (the loader may prefetch one batch more)
    assert [indices for indices, _ in sampler.observed] == collator.served[:15]  # the batches served, in order
    epoch0, epoch1 = collator.served[:6], collator.served[6:12]
    assert sorted(i for batch in epoch0 for i in batch) == list(range(24))  # every row once per epoch
    # Epoch 1 is the order built from what the tap saw during epoch 0: sort the rows by their observed key.
    keys = {i: key for indices, values in sampler.observed[:6] for i, key in zip(indices, values)}
    assert [i for batch in epoch1 for i in batch] == sorted(keys, key=keys.get)
    assert epoch1 != epoch0
    assert sum(int(entry.get("odd_rows", 0)) for entry in trainer.state.log_history) == sum(
        i % 2 for batch in collator.served[:15] for i in batch)  # the collator's own counter, logged


def test_a_resumed_run_restores_the_sampler_state_and_serves_the_uninterrupted_order(tmp_path):
    _, _, straight = run_with_sampler(tmp_path / "straight")
    run_with_sampler(tmp_path / "interrupted", stop_at=8)  # stops in epoch 1, after its grouped order was built
    checkpoint = tmp_path / "interrupted" / "checkpoint-8"
    assert (checkpoint / "sampler_state-rank0.json").is_file()
    resumed_trainer, _, resumed = run_with_sampler(tmp_path / "interrupted", resume=str(checkpoint))
    assert resumed.served[-7:] == straight.served[-7:]  # steps 9..15: the same batches in the same order
    for (name, a), (_, b) in zip(run_with_sampler(tmp_path / "again")[0].model.named_parameters(),
                                 resumed_trainer.model.named_parameters()):
        torch.testing.assert_close(a, b, msg=name)


def test_resuming_from_a_checkpoint_without_sampler_state_is_refused(tmp_path):
    collator = ToyCollator()
    args = toy_arguments(tmp_path, max_steps=2, save_strategy="steps", save_steps=2)
    ToyTrainer(model=ToyDualEncoder(), args=args, train_dataset=toy_data(), data_collator=collator).train()
    with pytest.raises(ValueError, match="holds no sampler state"):
        run_with_sampler(tmp_path, resume=str(tmp_path / "checkpoint-2"))


def test_a_tap_needs_the_index_column(tmp_path):
    class NoIndex(ToyCollator):
        def __call__(self, rows):
            batch = super().__call__(rows)
            batch.pop("index")
            return batch

    trainer = ToyTrainer(model=ToyDualEncoder(), args=toy_arguments(tmp_path), train_dataset=toy_data(),
                         data_collator=NoIndex(), batch_sampler=lambda dataset, **kw: EmbeddingOrderSampler(
                             dataset, **kw))
    with pytest.raises(KeyError, match="`index` column"):
        trainer.train()


# ---- the collator ----------------------------------------------------------------------------------------------------

def test_the_image_text_collator_passes_index_and_image_id_through_and_can_refuse_to_top_up():
    pairs = scene_pairs(4).add_column("index", [10, 11, 12, 13]).add_column("image_id", [7, 7, 8, 9])
    collator = ImageTextCollator(tokenizer_for(pairs), image_processor())
    batch = collator(pairs.to_list())
    assert batch["index"].tolist() == [10, 11, 12, 13] and batch["image_id"].tolist() == [7, 7, 8, 9]
    rows = pairs.to_list()[:2]
    rows[0]["image"] = {"bytes": b"broken", "path": None}
    strict = ImageTextCollator(tokenizer_for(pairs), image_processor(), top_up=False)
    strict(pairs.to_list())  # a good batch first: with top_up it would have been used
    with pytest.raises(ValueError, match="only 1 decodable pairs in a batch of 2; the loss needs 2"):
        strict(rows)
    topped = collator(rows)
    assert topped["reused_pairs"] == 1 and topped["index"].tolist() == [11, 10]


# ---- the model card --------------------------------------------------------------------------------------------------

def test_the_trainer_keeps_a_card_it_did_not_draft_and_redrafts_its_own(tmp_path):
    model = ToyDualEncoder()
    model.config = PretrainedConfig()  # the Trainer's draft reads the model's config
    trainer = ToyTrainer(model=model, args=toy_arguments(tmp_path), train_dataset=toy_data(),
                         data_collator=ToyCollator())
    readme = tmp_path / "README.md"
    readme.write_text("---\nlicense: mit\n---\n# A card with an evaluation table\n")
    trainer.create_model_card()
    assert readme.read_text() == "---\nlicense: mit\n---\n# A card with an evaluation table\n"
    readme.unlink()
    trainer.create_model_card()  # no card: the Trainer drafts one ...
    draft = readme.read_text()
    assert "generated automatically" in draft
    trainer.create_model_card(model_name="toy")  # ... and may redraft its own
    assert "toy" in readme.read_text()

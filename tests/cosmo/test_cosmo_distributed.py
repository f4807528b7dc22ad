"""CosmoTrainer on 2 gloo processes (arXiv 2312.06112): with the global ITC, the averaged gradients of 2 x 4 pairs are
those of one process computing the ITC over all 8 pairs plus the mean of the two halves' ITM and MLM (ITM negatives
and MLM stay within a process, as in the official code); with `itc_scope="per_process"` they are the mean of the
halves' whole local losses; and the global GRIT grouping builds one order on both processes, which they split."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from modeling_cosmo import CosmoForPreTraining
from tests.cosmo.helpers import random_batch, random_mlm, tiny_config, tiny_tokenizer

IMAGE_ID = torch.tensor([0, 1, 2, 3, 0, 5, 6, 7])  # row 4 (process 1) shows the image of row 0 (process 0)


def full_batch() -> dict[str, torch.Tensor]:
    batch = random_batch(8, seed=3)
    return {**batch, **random_mlm(batch["input_ids"], batch["attention_mask"]), "image_id": IMAGE_ID.clone()}


def tiny_model() -> CosmoForPreTraining:
    torch.manual_seed(0)
    return CosmoForPreTraining(tiny_config())


def halves(batch):
    return [{key: value[4 * rank:4 * (rank + 1)] for key, value in batch.items()} for rank in range(2)]


def _trainer_gradients(rank: int, itc_scope: str, out_dir: str) -> dict[str, torch.Tensor]:
    import torch.distributed as dist

    from trainers import CosmoTrainer, CosmoTrainingArguments, ImageTextCollator, MaskedCaptions

    args = CosmoTrainingArguments(os.path.join(out_dir, itc_scope), use_cpu=True, report_to="none",
                                  grouped_batches=False, connection_mining=False, itc_smoothing=0.0,
                                  itc_scope=itc_scope)
    model = tiny_model()
    tokenizer = tiny_tokenizer()
    trainer = CosmoTrainer(model=model, args=args, data_collator=ImageTextCollator(
        tokenizer, None, add_ons=[MaskedCaptions(tokenizer)]))
    loss, _, _ = trainer.compute_loss_terms(model, dict(halves(full_batch())[rank]))
    loss.backward()
    gradients = {}
    for name, param in model.named_parameters():
        grad = param.grad if param.grad is not None else torch.zeros_like(param)
        dist.all_reduce(grad)  # what DistributedDataParallel does: the mean over processes
        gradients[name] = grad / 2
    return gradients


def _grouping(rank: int) -> dict:
    from trainers import GroupedMiniBatchSampler

    generator = torch.Generator().manual_seed(11)
    images = torch.nn.functional.normalize(torch.randn(21, 8, generator=generator), dim=1)
    texts = torch.nn.functional.normalize(images + 0.2 * torch.randn(21, 8, generator=generator), dim=1)
    sampler = GroupedMiniBatchSampler(21, 2, drop_last=False, seed=4, rank=rank, world_size=2, grouping="global",
                                      buffer_size=8, search_space=8)
    served = {}
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(iter(sampler))
        for batch in batches:
            index = torch.tensor(batch)
            sampler.observe(index, images[index], texts[index])
        served[epoch] = batches
    return {"served": served, "order": sampler._current_order().tolist()}


def _worker(rank: int, port: int, out_dir: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2", CUDA_VISIBLE_DEVICES="")
    torch.set_num_threads(1)
    results = {scope: _trainer_gradients(rank, scope, out_dir) for scope in ("global", "per_process")}
    torch.save(results, os.path.join(out_dir, f"gradients_{rank}.pt"))
    with open(os.path.join(out_dir, f"grouping_{rank}.json"), "w") as file:
        json.dump(_grouping(rank), file)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out = tmp_path_factory.mktemp("cosmo_gloo")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_worker, args=(port, str(out)), nprocs=2)
    gradients = torch.load(out / "gradients_0.pt")
    assert all(torch.equal(gradients[s][n], g) for s, grads in torch.load(out / "gradients_1.pt").items()
               for n, g in grads.items())  # the all-reduce left both processes with the same gradients
    grouping = [json.loads((out / f"grouping_{rank}.json").read_text()) for rank in range(2)]
    return gradients, grouping


def reference_gradients(scope: str) -> dict[str, torch.Tensor]:
    """One process, no trainer: the model's own losses."""
    model = tiny_model()
    batch = full_batch()
    parts = [model(**half, itc_smoothing=0.0) for half in halves(batch)]
    local = sum(part.itm_loss + part.mlm_loss for part in parts) / 2
    if scope == "global":  # ITC over the 8 pairs: image-id positives across the processes' halves
        loss = model(**batch, itc_smoothing=0.0).itc_loss + local
    else:
        loss = sum(part.itc_loss for part in parts) / 2 + local
    loss.backward()
    return {name: p.grad if p.grad is not None else torch.zeros_like(p) for name, p in model.named_parameters()}


@pytest.mark.parametrize("scope", ["global", "per_process"])
def test_two_processes_give_the_documented_gradients(two_processes, scope):
    gradients, _ = two_processes
    expected = reference_gradients(scope)
    for name, grad in gradients[scope].items():
        torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_global_and_the_per_process_itc_differ(two_processes):
    gradients, _ = two_processes
    assert not torch.allclose(gradients["global"]["vision_proj.weight"], gradients["per_process"]["vision_proj.weight"])


def test_global_grouping_is_one_order_split_between_the_processes(two_processes):
    _, (first, second) = two_processes
    assert first["order"] == second["order"]  # both processes built the same chain from the gathered buffers
    left_out = None
    for epoch in ("0", "1", "2"):
        mine, theirs = first["served"][epoch], second["served"][epoch]
        assert len(mine) == len(theirs) == 5  # 21 rows in global batches of 2 x 2: five of them
        served = [i for batch in mine + theirs for i in batch]
        # 21 = 5 x 4 + 1: a last chunk of one row cannot be split between two processes (one would serve a batch
        # the other does not: a hang), so it waits for the next epoch, where it is served first.
        assert len(served) == len(set(served)) == 20
        if left_out is not None:
            assert left_out in mine[0] + theirs[0]
        (left_out,) = set(range(21)) - set(served)
        for a, b in zip(mine, theirs):  # step k of both processes: one global batch = one chunk of the order
            assert not set(a) & set(b)
    assert first["served"]["1"] != first["served"]["0"]

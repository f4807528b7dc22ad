"""HN-NCE over the global batch: two gloo processes give the gradients of one process training the whole batch."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from modeling_diht import hn_nce_loss
from trainers import HNNCELoss, all_gather_with_grad

DIM_IN, DIM_OUT = 6, 5


def make_data(total: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(total, DIM_IN, generator=generator), torch.randn(total, DIM_IN, generator=generator)


class TwoTowers(nn.Module):
    """Linear image and text encoders with a learnable logit scale, standing in for a dual encoder."""

    def __init__(self):
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.image = nn.Linear(DIM_IN, DIM_OUT)
        self.text = nn.Linear(DIM_IN, DIM_OUT)
        with torch.no_grad():
            for param in self.parameters():
                param.copy_(torch.randn(param.shape, generator=generator))
        self.logit_scale = nn.Parameter(torch.tensor(2.5))

    def forward(self, images, texts):
        return (F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1),
                self.logit_scale.exp())


# Scenarios run by both processes in one spawn (starting processes costs seconds each):
# name -> (rows per process, chunk_size, wrap the towers in DDP).
SCENARIOS = {
    "ddp_dense": ([4, 4], None, True),
    "ddp_chunked": ([4, 4], 3, True),
    "unequal_rows": ([3, 5], None, False),
}


def _run_scenario(rank: int, world_size: int, sizes: list[int], chunk_size, use_ddp: bool) -> dict:
    images, texts = make_data(sum(sizes))
    start = sum(sizes[:rank])
    mine = slice(start, start + sizes[rank])
    model = TwoTowers()
    wrapped = DistributedDataParallel(model) if use_ddp else model
    loss = HNNCELoss(alpha=1.0, beta=0.5, chunk_size=chunk_size)(*wrapped(images[mine], texts[mine]))
    loss.backward()
    if not use_ddp:  # average the per-process gradients as DDP would
        for param in model.parameters():
            dist.all_reduce(param.grad)
            param.grad /= world_size
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    return {"loss": mean_loss / world_size, "grads": {n: p.grad for n, p in model.named_parameters()}}


def _worker(rank: int, world_size: int, init_file: str, out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        results = {name: _run_scenario(rank, world_size, *spec) for name, spec in SCENARIOS.items()}
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    """Per rank, per scenario: the loss averaged over processes and the (averaged) parameter gradients."""
    out = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(2, str(out / "init"), str(out)), nprocs=2)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def single_process_reference(total: int, beta: float = 0.5):
    images, texts = make_data(total)
    model = TwoTowers()
    loss = hn_nce_loss(*model(images, texts), alpha=1.0, beta=beta)
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("scenario", ["ddp_dense", "ddp_chunked"])
def test_ddp_gradients_equal_single_process_global_batch(two_process_results, scenario):
    ref_loss, ref_grads = single_process_reference(8)
    for per_rank in two_process_results:
        result = per_rank[scenario]
        torch.testing.assert_close(result["loss"], ref_loss, rtol=1e-5, atol=1e-6)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_unequal_process_batches_still_give_global_batch_gradients(two_process_results):
    # A skipped image leaves one process with fewer rows: 3 + 5 must still train like 8 in one process.
    ref_loss, ref_grads = single_process_reference(8)
    for per_rank in two_process_results:
        result = per_rank["unequal_rows"]
        torch.testing.assert_close(result["loss"], ref_loss, rtol=1e-5, atol=1e-6)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_global_loss_differs_from_mean_of_local_losses(two_process_results):
    # The point of gathering: per-process HN-NCE over 4 pairs is a different objective than over 8.
    images, texts = make_data(8)
    image_embeds, text_embeds, scale = TwoTowers()(images, texts)
    halves = (slice(0, 4), slice(4, 8))
    local_mean = sum(hn_nce_loss(image_embeds[h], text_embeds[h], scale) for h in halves) / 2
    assert not torch.allclose(two_process_results[0]["ddp_dense"]["loss"], local_mean.detach(), rtol=1e-3)


def test_all_gather_with_grad_is_identity_in_one_process():
    tensor = torch.randn(3, 2, requires_grad=True)
    gathered, offset = all_gather_with_grad(tensor)
    assert gathered is tensor and offset == 0


def test_single_process_module_equals_functional_loss():
    images, texts = (F.normalize(t, dim=-1) for t in make_data(6))
    expected = hn_nce_loss(images, texts, 20.0, alpha=0.5, beta=1.0)
    torch.testing.assert_close(HNNCELoss(alpha=0.5, beta=1.0)(images, texts, 20.0), expected)

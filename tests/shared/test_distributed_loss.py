"""Contrastive losses over the global batch: two gloo processes give the gradients of one process training the whole
batch, for HN-NCE (DiHT) and for InfoNCE with multi-positive, smoothed targets (COSMO's S-ITC)."""

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from modeling_diht import hn_nce_loss
from trainers import (
    GlobalBatchContrastiveLoss,
    HNNCELoss,
    all_gather_with_grad,
    cross_entropy_rows,
    multi_positive_targets,
)

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
# name -> (rows per process, chunk_size, wrap the towers in DDP, HN-NCE settings).
DEFAULT = {"alpha": 1.0, "beta": 0.5}
SCENARIOS = {
    "ddp_dense": ([4, 4], None, True, DEFAULT),
    "ddp_chunked": ([4, 4], 3, True, DEFAULT),
    "unequal_rows": ([3, 5], None, False, DEFAULT),
    # A process with one pair: its block of one row holds that column's positive and no negative of it.
    "one_row_process": ([1, 6], None, False, DEFAULT),
    "chunked_unequal": ([5, 2], 2, True, DEFAULT),
    "decoupled": ([4, 4], None, True, {"alpha": 0.0, "beta": 0.5}),
    "infonce": ([4, 4], 3, True, {"alpha": 1.0, "beta": 0.0}),
    "detached_weights": ([3, 5], 2, True, {"alpha": 0.5, "beta": 1.0, "detach_weights": True}),
}


def _run_scenario(rank: int, world_size: int, sizes: list[int], chunk_size, use_ddp: bool, settings: dict) -> dict:
    images, texts = make_data(sum(sizes))
    start = sum(sizes[:rank])
    mine = slice(start, start + sizes[rank])
    model = TwoTowers()
    wrapped = DistributedDataParallel(model) if use_ddp else model
    loss = HNNCELoss(chunk_size=chunk_size, **settings)(*wrapped(images[mine], texts[mine]))
    loss.backward()
    if not use_ddp:  # average the per-process gradients as DDP would
        for param in model.parameters():
            dist.all_reduce(param.grad)
            param.grad /= world_size
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    return {"loss": mean_loss / world_size, "grads": {n: p.grad for n, p in model.named_parameters()}}


# Extra positives of the soft scenario, over the global batch of 8, one per direction (direction-specific, as
# COSMO's mined pairs): image 0 also matches text 5 (image->text), text 6 also matches image 1 (text->image).
EXTRA_IMAGE_TO_TEXT, EXTRA_TEXT_TO_IMAGE, SMOOTHING = (0, 5), (6, 1), 0.5


def soft_targets_by_hand(extra: tuple[int, int], total: int = 8, smoothing: float = SMOOTHING) -> torch.Tensor:
    """(1 - ε) · row-normalised multi-hot + ε / N, written out."""
    hits = torch.eye(total)
    hits[extra] = 1.0
    return (1 - smoothing) * hits / hits.sum(1, keepdim=True) + smoothing / total


def _run_soft_scenario(rank: int, world_size: int, gather: bool) -> dict:
    images, texts = make_data(8)
    mine = slice(4 * rank, 4 * rank + 4)
    model = TwoTowers()
    wrapped = DistributedDataParallel(model)

    def targets(extra):
        def build(offset: int, num_candidates: int) -> torch.Tensor:
            positives = torch.eye(num_candidates, dtype=torch.bool)
            if num_candidates == 8:
                positives[extra] = True
            rows = slice(offset, offset + 4) if num_candidates == 8 else slice(0, 4)
            return multi_positive_targets(positives[rows], num_candidates, smoothing=SMOOTHING)
        return build

    loss_fn = GlobalBatchContrastiveLoss(cross_entropy_rows, gather=gather)
    loss = loss_fn(*wrapped(images[mine], texts[mine]), image_targets=targets(EXTRA_IMAGE_TO_TEXT),
                   text_targets=targets(EXTRA_TEXT_TO_IMAGE))
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    return {"loss": mean_loss / world_size, "grads": {n: p.grad for n, p in model.named_parameters()}}


def _worker(rank: int, world_size: int, init_file: str, out_dir: str):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        results = {name: _run_scenario(rank, world_size, *spec) for name, spec in SCENARIOS.items()}
        results["soft_global"] = _run_soft_scenario(rank, world_size, gather=True)
        results["soft_per_process"] = _run_soft_scenario(rank, world_size, gather=False)
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    """Per rank, per scenario: the loss averaged over processes and the (averaged) parameter gradients."""
    out = tmp_path_factory.mktemp("gloo")
    mp.spawn(_worker, args=(2, str(out / "init"), str(out)), nprocs=2)
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def single_process_reference(total: int, beta: float = 0.5, **settings):
    images, texts = make_data(total)
    model = TwoTowers()
    loss = hn_nce_loss(*model(images, texts), **{"alpha": 1.0, "beta": beta, **settings})
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


@pytest.mark.parametrize("scenario", ["one_row_process", "chunked_unequal", "decoupled", "infonce",
                                      "detached_weights"])
def test_every_setting_and_split_over_two_processes_equals_one_process_on_the_global_batch(two_process_results,
                                                                                         scenario):
    sizes, _, _, settings = SCENARIOS[scenario]
    ref_loss, ref_grads = single_process_reference(sum(sizes), **settings)
    for per_rank in two_process_results:
        result = per_rank[scenario]
        torch.testing.assert_close(result["loss"], ref_loss, rtol=1e-5, atol=1e-6)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-6, msg=f"{scenario}: {name}")


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


def soft_reference(images, texts, scale, image_targets, text_targets) -> torch.Tensor:
    """Mean over anchors of the two soft cross-entropies -sum_j y_ij log softmax(s_i)_j, written out."""
    logits = scale * images @ texts.t()
    image_to_text = -(image_targets * logits.log_softmax(dim=1)).sum(1)
    text_to_image = -(text_targets * logits.t().log_softmax(dim=1)).sum(1)
    return ((image_to_text + text_to_image) / 2).mean()


def test_soft_multi_positive_targets_over_two_processes_equal_one_process_on_the_global_batch(two_process_results):
    images, texts = make_data(8)
    model = TwoTowers()
    loss = soft_reference(*model(images, texts), soft_targets_by_hand(EXTRA_IMAGE_TO_TEXT),
                          soft_targets_by_hand(EXTRA_TEXT_TO_IMAGE))
    loss.backward()
    for per_rank in two_process_results:
        result = per_rank["soft_global"]
        torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for name, param in model.named_parameters():
            torch.testing.assert_close(result["grads"][name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_per_process_contrastive_loss_is_the_mean_of_the_local_batch_losses(two_process_results):
    # The original ALBEF/MAFA code's ITC: each process scores its 4 pairs against its own 4 candidates.
    images, texts = make_data(8)
    model = TwoTowers()
    local = []
    for half in (slice(0, 4), slice(4, 8)):
        targets = (1 - SMOOTHING) * torch.eye(4) + SMOOTHING / 4  # the extra positives lie outside each half
        local.append(soft_reference(*model(images[half], texts[half]), targets, targets))
    expected = sum(local) / 2
    expected.backward()
    for per_rank in two_process_results:
        result = per_rank["soft_per_process"]
        torch.testing.assert_close(result["loss"], expected.detach(), rtol=1e-5, atol=1e-6)
        for name, param in model.named_parameters():
            torch.testing.assert_close(result["grads"][name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_smoothed_single_positive_targets_equal_torch_label_smoothing():
    # With one positive per row, (1 - ε) y + ε / N is exactly torch's label smoothing: an independent peer.
    generator = torch.Generator().manual_seed(3)
    images, texts = (F.normalize(torch.randn(6, 4, generator=generator), dim=-1) for _ in range(2))
    targets = multi_positive_targets(torch.eye(6, dtype=torch.bool), 6, smoothing=0.5)
    got = GlobalBatchContrastiveLoss()(images, texts, 10.0, image_targets=targets, text_targets=targets)
    logits = 10.0 * images @ texts.t()
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels, label_smoothing=0.5)
                + F.cross_entropy(logits.t(), labels, label_smoothing=0.5)) / 2
    torch.testing.assert_close(got, expected)
    plain = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels)) / 2
    torch.testing.assert_close(GlobalBatchContrastiveLoss()(images, texts, 10.0), plain)  # default: own pairs


def test_multi_positive_targets_by_hand_and_bad_input():
    positives = torch.tensor([[True, False, True, False], [False, True, False, False]])
    torch.testing.assert_close(multi_positive_targets(positives, 4),
                               torch.tensor([[0.5, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="at least one positive"):
        multi_positive_targets(torch.zeros(1, 4, dtype=torch.bool), 4)
    with pytest.raises(ValueError, match="targets of shape"):
        GlobalBatchContrastiveLoss()(torch.eye(3), torch.eye(3), 1.0, image_targets=torch.ones(3, 4) / 4)
    with pytest.raises(ValueError, match="one positive per anchor"):
        HNNCELoss()(torch.eye(3), torch.eye(3), 1.0, image_targets=torch.eye(3))


def test_chunked_blocks_give_the_dense_loss_and_gradients():
    generator = torch.Generator().manual_seed(4)
    images = F.normalize(torch.randn(7, 4, generator=generator), dim=-1).requires_grad_()
    texts = F.normalize(torch.randn(7, 4, generator=generator), dim=-1).requires_grad_()
    targets = multi_positive_targets(torch.eye(7, dtype=torch.bool) | torch.eye(7, dtype=torch.bool).roll(1, 1), 7,
                                     smoothing=0.2)
    dense = GlobalBatchContrastiveLoss()(images, texts, 5.0, image_targets=targets, text_targets=targets)
    grads = torch.autograd.grad(dense, (images, texts))
    chunked = GlobalBatchContrastiveLoss(chunk_size=3)(images, texts, 5.0, image_targets=targets,
                                                       text_targets=targets)
    torch.testing.assert_close(chunked, dense)
    for got, expected in zip(torch.autograd.grad(chunked, (images, texts)), grads):
        torch.testing.assert_close(got, expected)

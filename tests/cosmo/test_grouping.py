"""GRIT's grouped mini-batch sampler (arXiv 2208.04060): the greedy chain worked by hand, every index once per epoch,
grouped batches harder than random ones, and a saved state that serves what an uninterrupted sampler serves."""

import math

import pytest
import torch

from trainers import GroupedMiniBatchSampler, greedy_chain


def at_angles(*degrees: float) -> torch.Tensor:
    """Unit vectors in the plane at the given angles: similarity = cos(difference), easy to order by hand."""
    radians = torch.tensor(degrees) * math.pi / 180
    return torch.stack([radians.cos(), radians.sin()], dim=1)


def test_greedy_chain_alternates_image_to_text_and_text_to_image_as_worked_by_hand():
    # Pairs 0..3. Images at 0, 90, 180, 45 degrees; texts at 10, 170, 60, 100 degrees.
    images = at_angles(0, 90, 180, 45)
    texts = at_angles(10, 170, 60, 100)
    # From image 0 (0 deg), the unused texts are 1 (170), 2 (60), 3 (100): the nearest is text 2 -> pair 2.
    # From text 2 (60 deg), the unused images are 1 (90) and 3 (45): the nearest is image 3 -> pair 3.
    #   (Comparing image 2 (180 deg) with the images instead would pick image 1: the chain must alternate.)
    # From image 3 (45 deg), the only unused pair is 1.
    assert greedy_chain(images, texts, start=0) == [0, 2, 3, 1]
    # From image 2 (180 deg): texts 0 (10), 1 (170), 3 (100) -> text 1. From text 1 (170): images 0 (0), 3 (45) ->
    # image 3 (125 deg away, against 170). From image 3: text 0.
    assert greedy_chain(images, texts, start=2) == [2, 1, 3, 0]


def run_epochs(samplers, epochs: int, dim: int = 8, seed: int = 0, embed=None):
    """Serve `epochs` epochs from one sampler per process, feeding each batch's embeddings back as training would.

    Returns, per epoch, the list of (rank, batch) served."""
    generator = torch.Generator().manual_seed(seed)
    table_images = torch.nn.functional.normalize(torch.randn(samplers[0].num_rows, dim, generator=generator), dim=1)
    table_texts = torch.nn.functional.normalize(table_images + 0.3 * torch.randn(table_images.shape,
                                                                                 generator=generator), dim=1)
    if embed is not None:
        table_images, table_texts = embed
    served = []
    for epoch in range(epochs):
        for sampler in samplers:
            sampler.set_epoch(epoch)
        batches = [list(iter(sampler)) for sampler in samplers]
        assert len({len(b) for b in batches}) == 1, "every process serves as many batches"
        assert all(len(b) == len(sampler) for b, sampler in zip(batches, samplers))
        epoch_served = []
        for step in range(len(batches[0])):
            for rank, sampler in enumerate(samplers):
                batch = torch.tensor(batches[rank][step])
                sampler.observe(batch, table_images[batch], table_texts[batch])
                epoch_served.append((rank, batches[rank][step]))
        served.append(epoch_served)
    return served


@pytest.mark.parametrize("num_rows,batch_size", [(37, 4), (40, 8), (5, 2)])
def test_every_index_is_served_exactly_once_per_epoch_without_drop_last(num_rows, batch_size):
    sampler = GroupedMiniBatchSampler(num_rows, batch_size, drop_last=False, seed=3, buffer_size=12,
                                      search_space=6)
    for epoch in run_epochs([sampler], epochs=4):
        indices = [i for _, batch in epoch for i in batch]
        assert sorted(indices) == list(range(num_rows))
        assert all(len(batch) == batch_size for _, batch in epoch[:-1])


def test_with_drop_last_no_index_repeats_and_the_dropped_pairs_come_first_next_epoch():
    num_rows, batch_size = 38, 4  # 2 pairs left over every epoch
    sampler = GroupedMiniBatchSampler(num_rows, batch_size, drop_last=True, seed=1, buffer_size=10)
    epochs = run_epochs([sampler], epochs=4)
    previous_unserved = None
    for epoch in epochs:
        indices = [i for _, batch in epoch for i in batch]
        assert len(indices) == len(set(indices)) == num_rows - num_rows % batch_size
        assert all(len(batch) == batch_size for _, batch in epoch)
        if previous_unserved is not None:  # starved pairs lead the next epoch's order
            assert previous_unserved <= set(epoch[0][1])
        previous_unserved = set(range(num_rows)) - set(indices)
        assert len(previous_unserved) == num_rows % batch_size


def test_per_process_grouping_keeps_each_process_on_its_share():
    num_rows, world = 41, 2  # the last row (41 mod 2) is never served, as a DistributedSampler without padding
    samplers = [GroupedMiniBatchSampler(num_rows, 4, drop_last=False, seed=0, rank=rank, world_size=world,
                                        grouping="per_process", buffer_size=8) for rank in range(world)]
    for epoch in run_epochs(samplers, epochs=3):
        for rank in range(world):
            indices = sorted(i for r, batch in epoch if r == rank for i in batch)
            assert indices == list(range(rank, num_rows - 1, world))  # fixed for the whole run


def clustered_pairs(num_clusters: int, per_cluster: int, dim: int = 16, seed: int = 0):
    """Pairs whose image and text embeddings lie near their cluster's centre: similar pairs share a cluster."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_clusters, dim, generator=generator), dim=1)
    cluster = torch.arange(num_clusters).repeat_interleave(per_cluster)
    noise = lambda: 0.15 * torch.randn(len(cluster), dim, generator=generator)  # noqa: E731
    images = torch.nn.functional.normalize(centres[cluster] + noise(), dim=1)
    texts = torch.nn.functional.normalize(centres[cluster] + noise(), dim=1)
    return cluster, images, texts


def same_cluster_share(batches, cluster) -> float:
    """Share of the in-batch pairs (i, j), i != j, that come from one cluster."""
    same = total = 0
    for _, batch in batches:
        labels = cluster[torch.tensor(batch)]
        equal = labels[:, None] == labels[None, :]
        same += int(equal.sum()) - len(batch)
        total += len(batch) * (len(batch) - 1)
    return same / total


def test_grouped_batches_hold_far_more_similar_pairs_than_random_ones():
    cluster, images, texts = clustered_pairs(num_clusters=16, per_cluster=12)
    sampler = GroupedMiniBatchSampler(len(cluster), 8, drop_last=True, seed=0, buffer_size=96, search_space=96)
    random_epoch, grouped_epoch, _ = run_epochs([sampler], epochs=3, embed=(images, texts))
    random_share, grouped_share = same_cluster_share(random_epoch, cluster), same_cluster_share(grouped_epoch, cluster)
    assert random_share < 0.15  # 11 of 191 others share a pair's cluster: about 6%
    assert grouped_share > 4 * random_share and grouped_share > 0.5


def test_a_restored_state_serves_what_the_uninterrupted_sampler_serves():
    cluster, images, texts = clustered_pairs(num_clusters=6, per_cluster=10)
    options = dict(drop_last=False, seed=5, buffer_size=24, search_space=12)

    def steps(sampler, epoch, start, stop):
        sampler.set_epoch(epoch)
        batches = list(iter(sampler))[start:stop]
        for batch in batches:
            index = torch.tensor(batch)
            sampler.observe(index, images[index], texts[index])
        return batches

    full = GroupedMiniBatchSampler(60, 4, **options)
    expected = [steps(full, 0, 0, None), steps(full, 1, 0, None), steps(full, 2, 0, None)]

    first = GroupedMiniBatchSampler(60, 4, **options)
    served = [steps(first, 0, 0, None), steps(first, 1, 0, 6)]  # interrupted after 6 steps of epoch 1
    state = {key: value.clone() if torch.is_tensor(value) else value for key, value in first.state_dict().items()}
    resumed = GroupedMiniBatchSampler(60, 4, **options)  # a new process: nothing but the saved state
    resumed.load_state_dict(state)
    served[1] += steps(resumed, 1, 6, None)  # the Trainer skips the batches already trained on
    served.append(steps(resumed, 2, 0, None))
    assert served == expected
    assert expected[2] != expected[1]  # the epochs' orders differ: the comparison is not vacuous


def test_indices_stay_exact_integers_beyond_float32_precision():
    """The official code queues indices in float32, which rounds every odd index above 2^24 (16.7 M)."""
    big = 2**24 + 1
    sampler = GroupedMiniBatchSampler(big + 4, 2, drop_last=False, buffer_size=4)
    index = torch.tensor([big, big + 2])
    sampler.observe(index, at_angles(0, 10), at_angles(5, 15))
    sampler.observe(torch.tensor([big + 1, big + 3]), at_angles(90, 100), at_angles(95, 105))  # triggers a grouping
    chained = torch.cat(sampler._next_groups).tolist()
    assert sorted(chained) == [big, big + 1, big + 2, big + 3]
    assert float(torch.tensor(big, dtype=torch.float32)) != big  # what float32 would have done


def test_bad_arguments_are_refused_with_a_message():
    with pytest.raises(ValueError, match="grouping"):
        GroupedMiniBatchSampler(10, 2, grouping="per_gpu")
    with pytest.raises(ValueError, match="positive batch size"):
        GroupedMiniBatchSampler(10, 0)


def test_default_sizes_are_the_papers_scaled_with_the_batch():
    sampler = GroupedMiniBatchSampler(100, 128)
    assert (sampler.buffer_size, sampler.search_space) == (48_000, 1_920)
    scaled = GroupedMiniBatchSampler(100, 32, world_size=4, grouping="global")
    assert (scaled.buffer_size, scaled.search_space) == (48_000, 1_920)  # 32 x 4 processes = 128 per global batch
    own = GroupedMiniBatchSampler(100, 32, world_size=4, grouping="per_process")
    assert (own.buffer_size, own.search_space) == (12_000, 480)

"""Sharding each split across the ranks of a DistributedDataParallel run (no processes)."""

import pytest
import torch

from dltrain.data.batches import LoaderBatches, TensorBatches, shard_indices

CPU = torch.device("cpu")


def data(n):
    """x row i holds i, so a batch's x and y name the same examples."""
    return torch.arange(n).float().unsqueeze(1), torch.arange(n)


def epoch(batches):
    """One epoch's y batches as lists, checking x stays aligned with y."""
    out = []
    for xb, yb in batches:
        assert torch.equal(xb.squeeze(1).long(), yb)
        out.append(yb.tolist())
    return out


def ranks(n, b, world_size, shuffle=True, seed=0, **kw):
    x, y = data(n)
    return [TensorBatches(x, y, b, shuffle=shuffle, generator=torch.Generator().manual_seed(seed),
                          rank=r, world_size=world_size, **kw) for r in range(world_size)]


@pytest.mark.parametrize("n,world_size", [(11, 2), (10, 3), (2, 3), (1, 4), (8, 4)])
def test_shard_indices_pads_as_distributed_sampler_does(n, world_size):
    order = torch.randperm(n, generator=torch.Generator().manual_seed(1))
    for r in range(world_size):
        # DistributedSampler unshuffled walks 0..n-1: the same rule applied to positions.
        reference = torch.utils.data.DistributedSampler(range(n), num_replicas=world_size, rank=r, shuffle=False)
        assert shard_indices(order, r, world_size, pad=True).tolist() == [order[i].item() for i in reference]
    unpadded = [shard_indices(order, r, world_size, pad=False) for r in range(world_size)]
    assert torch.equal(torch.cat(unpadded), order)
    assert [len(u) for u in unpadded] == [(r + 1) * n // world_size - r * n // world_size for r in range(world_size)]


@pytest.mark.parametrize("n,b,world_size", [(11, 2, 2), (10, 3, 3), (2, 1, 3), (1, 2, 4)])
def test_shuffled_shards_cover_the_split_with_equal_lengths(n, b, world_size):
    shards = [sum(epoch(r), []) for r in ranks(n, b, world_size)]
    per_rank = -(-n // world_size)
    assert all(len(s) == per_rank for s in shards)  # padded: every rank as many examples
    assert len({len(r) for r in ranks(n, b, world_size)}) == 1  # and as many steps
    assert len(ranks(n, b, world_size)[0]) == -(-per_rank // b)
    everything = sum(shards, [])
    assert sorted(set(everything)) == list(range(n))
    # Only the padding repeats: as in DistributedSampler, the permutation's first entries.
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0)).tolist()
    padded = (perm * world_size)[:per_rank * world_size]
    assert sorted(everything) == sorted(padded)
    assert shards == [padded[r::world_size] for r in range(world_size)]


@pytest.mark.parametrize("n,b,world_size", [(23, 2, 2), (31, 3, 3), (24, 4, 2)])
def test_ranks_ith_batches_together_are_the_single_process_ith_batch(n, b, world_size):
    x, y = data(n)
    single = TensorBatches(x, y, b * world_size, shuffle=True, generator=torch.Generator().manual_seed(7))
    sharded = ranks(n, b, world_size, seed=7)
    for _ in range(2):  # the second epoch: every generator advanced the same way
        whole = epoch(single)
        parts = [epoch(r) for r in sharded]
        full = [i for i, batch in enumerate(whole) if len(batch) == b * world_size]
        assert len(full) == n // (b * world_size) > 0
        for i in full:
            assert sorted(sum((p[i] for p in parts), [])) == sorted(whole[i])
            # Rank r's i-th batch is perm[i*b*W + r :: W] limited to b items.
            for r, p in enumerate(parts):
                assert p[i] == whole[i][r::world_size]


def test_min_batch_size_and_limit_apply_to_the_shard():
    # 11 examples over 2 ranks: 6 each, batches of 4 leave a last batch of 2 on every rank.
    assert [[len(bt) for bt in epoch(r)] for r in ranks(11, 4, 2)] == [[4, 2], [4, 2]]
    assert [[len(bt) for bt in epoch(r)] for r in ranks(11, 4, 2, min_batch_size=3)] == [[4], [4]]
    assert [len(r) for r in ranks(11, 4, 2, min_batch_size=3)] == [1, 1]
    limited = ranks(40, 4, 2, limit_batches=2)
    assert [len(r) for r in limited] == [2, 2] and [len(epoch(r)) for r in limited] == [2, 2]


@pytest.mark.parametrize("n,b,world_size", [(10, 3, 3), (11, 4, 2), (2, 1, 3), (0, 2, 2)])
def test_unshuffled_shards_are_contiguous_unpadded_and_in_order(n, b, world_size):
    sharded = ranks(n, b, world_size, shuffle=False)
    shards = [sum(epoch(r), []) for r in sharded]
    assert sum(shards, []) == list(range(n))  # every example once, in the original order
    for r, shard in enumerate(shards):
        assert shard == list(range(r * n // world_size, (r + 1) * n // world_size))
        assert len(sharded[r]) == -(-len(shard) // b)
    if n < world_size:
        assert [] in shards and 0 in [len(r) for r in sharded]  # a rank with nothing to do


def test_one_rank_is_unchanged():
    x, y = data(10)
    g = torch.Generator().manual_seed(0)
    expected = torch.Generator().manual_seed(0)
    for batches in (TensorBatches(x, y, 4, shuffle=True, generator=g),
                    TensorBatches(x, y, 4, shuffle=True, generator=g, rank=0, world_size=1)):
        assert len(batches) == 3
        for _ in range(2):
            perm = torch.randperm(10, generator=expected).tolist()
            assert epoch(batches) == [perm[0:4], perm[4:8], perm[8:10]]
    assert epoch(TensorBatches(x, y, 4, world_size=1)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # The DataLoader path draws the same order.
    loader = LoaderBatches(torch.utils.data.TensorDataset(x, y), 4, device=CPU, shuffle=True,
                           generator=torch.Generator().manual_seed(0))
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0)).tolist()
    assert len(loader) == 3 and epoch(loader) == [perm[0:4], perm[4:8], perm[8:10]]


def test_a_mid_epoch_resume_replays_the_rest_of_the_same_shard():
    for r in range(2):
        reference, first = ranks(23, 3, 2)[r], ranks(23, 3, 2)[r]
        epoch(reference), epoch(first)  # into the second epoch: the generator has moved on
        whole = epoch(reference)
        it = iter(first)
        done = [next(it)[1].tolist() for _ in range(2)]
        state = first.order.state_dict(batches_done=2)

        resumed = ranks(23, 3, 2, seed=99)[r]  # another seed: the saved state alone decides
        resumed.order.load_state_dict(state)
        rest = epoch(resumed)
        assert done + rest == whole and len(resumed) == 4 and len(rest) == 2


def test_loader_shards_match_tensor_shards():
    n, b, world_size = 11, 2, 2
    x, y = data(n)
    dataset = torch.utils.data.TensorDataset(x, y)
    for r in range(world_size):
        tensors = TensorBatches(x, y, b, shuffle=True, generator=torch.Generator().manual_seed(3),
                                rank=r, world_size=world_size)
        loader = LoaderBatches(dataset, b, device=CPU, shuffle=True, generator=torch.Generator().manual_seed(3),
                               rank=r, world_size=world_size)
        assert isinstance(loader.sampler, torch.utils.data.DistributedSampler)
        assert len(loader.sampler) == 6 and len(loader) == len(tensors) == 3
        for _ in range(2):
            assert epoch(loader) == epoch(tensors)

        # A mid-epoch resume skips this rank's first batch.
        state = tensors.order.state_dict()
        loader.order.load_state_dict({**state, "skip": 1})
        tensors.order.load_state_dict({**state, "skip": 1})
        assert loader.sampler.peek_skip() == 1
        rest = epoch(loader)
        assert rest == epoch(tensors) and len(rest) == len(loader) - 1

        unshuffled = LoaderBatches(dataset, 4, device=CPU, rank=r, world_size=world_size)
        assert epoch(unshuffled) == epoch(TensorBatches(x, y, 4, rank=r, world_size=world_size))
        assert sum(epoch(unshuffled), []) == list(range(r * n // 2, (r + 1) * n // 2))


def test_loader_drops_a_short_last_batch_of_the_shard():
    x, y = data(11)  # 6 per rank: batches of 4 and 2
    dataset = torch.utils.data.TensorDataset(x, y)
    loader = LoaderBatches(dataset, 4, device=CPU, shuffle=True, generator=torch.Generator().manual_seed(0),
                           min_batch_size=3, rank=1, world_size=2)
    assert len(loader) == 1 and [len(bt) for bt in epoch(loader)] == [4]


@pytest.mark.parametrize("rank,world_size", [(2, 2), (-1, 2), (0, 0), (1, 1)])
def test_a_rank_outside_the_world_is_refused(rank, world_size):
    x, y = data(4)
    with pytest.raises(ValueError, match="rank"):
        TensorBatches(x, y, 2, rank=rank, world_size=world_size)
    with pytest.raises(ValueError, match="rank"):
        LoaderBatches(torch.utils.data.TensorDataset(x, y), 2, device=CPU, rank=rank, world_size=world_size)

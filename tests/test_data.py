"""The distributed DataLoader, batch sampler and dataset partition, against the batches one
process takes from the global data in the same order (``th.randperm`` with the epoch's seed,
the same permutation on any number of processes)."""
import pytest
import torch

import torchheat as th
from torchheat import layout
from torchheat.testing import assert_dist_close, skewed_counts


def order(n, seed, epoch, shuffle=True):
    if not shuffle:
        return torch.arange(n)
    return th.randperm(n, generator=th.Generator().manual_seed(seed + epoch)).local


def expected_batches(n, batch_size, drop_last, perm):
    stop = n - n % batch_size if drop_last else n
    return [perm[i:min(i + batch_size, stop)] for i in range(0, stop, batch_size)]


def dataset(n):
    X = torch.arange(n * 6, dtype=torch.float32).reshape(n, 2, 3)
    return X, torch.arange(n) * 10


CASES = [  # n, batch_size, drop_last, shuffle, unbalanced dataset
    (10, 4, False, True, False), (10, 4, True, True, True), (11, 3, False, False, True), (7, 7, False, True, False),
    (5, 8, False, True, True), (2, 1, False, True, False), (0, 2, False, True, False),
]


@pytest.mark.parametrize("n, batch_size, drop_last, shuffle, unbalanced", CASES)
def test_dataloader_batches(comm, n, batch_size, drop_last, shuffle, unbalanced):
    X, y = dataset(n)
    counts = skewed_counts(n, comm.size) if unbalanced else None
    loader = th.utils.data.DataLoader((th.distribute(X, 0, counts=counts), th.distribute(y, 0, counts=counts)),
                                      batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, seed=5)
    for epoch in range(2):  # a new order every epoch
        want = expected_batches(n, batch_size, drop_last, order(n, 5, epoch, shuffle))
        assert len(loader) == len(want)
        got = list(loader)
        assert len(got) == len(want)
        for (xb, yb), idx in zip(got, want):
            balanced = layout.balanced_counts(len(idx), comm.size)
            assert xb.counts == yb.counts == balanced and xb.split_dim == yb.split_dim == 0
            assert_dist_close(xb, X[idx])
            assert_dist_close(yb, y[idx])


def test_set_epoch_and_single_tensor(comm):
    X, _ = dataset(9)
    loader = th.utils.data.DataLoader(th.distribute(X, 0), batch_size=4, shuffle=True, seed=1)
    loader.set_epoch(3)
    batches = list(loader)
    assert all(isinstance(b, th.DistTensor) for b in batches)
    for b, idx in zip(batches, expected_batches(9, 4, False, order(9, 1, 3))):
        assert_dist_close(b, X[idx])
    again = th.utils.data.DataLoader(torch.utils.data.TensorDataset(th.distribute(X, 0)), batch_size=4, shuffle=True, seed=1)
    again.set_epoch(3)
    assert_dist_close(next(iter(again))[0], X[order(9, 1, 3)[:4]])


def test_one_exchange_per_epoch(comm):
    """The samples of all tensors cross ranks together (a second tensor adds no collective),
    at the start of the epoch; batches need no communication."""
    X, y = dataset(12)
    logs = []
    for tensors in [(th.distribute(X, 0),), (th.distribute(X, 0), th.distribute(y, 0))]:
        it = iter(th.utils.data.DataLoader(tensors, batch_size=4, shuffle=True))
        with th.debug.comm_log() as log:
            next(it)
        logs.append([e.collective for e in log])
        with th.debug.comm_log() as log:
            rest = list(it)
        assert len(rest) == 2 and not log
    assert logs[0] == logs[1]


def test_distributed_sampler(comm):
    """A batch sampler for torch's DataLoader: this rank's share of every global batch."""
    data = torch.utils.data.TensorDataset(torch.arange(14) * 10)
    sampler = th.utils.data.DistributedSampler(data, batch_size=6, seed=2, drop_last=True)
    want = expected_batches(14, 6, True, order(14, 2, 0))
    loader = torch.utils.data.DataLoader(data, batch_sampler=sampler)
    assert len(loader) == len(want) == 2
    for (batch,), idx in zip(loader, want):
        shares = comm.allgather_obj(batch.tolist())
        assert [v for share in shares for v in share] == (idx * 10).tolist()
    # the last, short batch: its shares are balanced (empty ones where it has fewer samples than ranks)
    sampler = th.utils.data.DistributedSampler(14, batch_size=6, seed=2)
    for batch, idx in zip(sampler, expected_batches(14, 6, False, order(14, 2, 0))):
        shares = comm.allgather_obj(batch)
        assert sum(shares, []) == idx.tolist()
        assert [len(s) for s in shares] == list(layout.balanced_counts(len(idx), comm.size))


def test_sampler_without_shuffle_needs_no_communication(comm):
    sampler = th.utils.data.DistributedSampler(5, batch_size=2, shuffle=False)
    with th.debug.comm_log() as log:
        mine = list(sampler)
    assert not log
    everyone = comm.allgather_obj(mine)
    assert [sum((everyone[r][b] for r in range(comm.size)), []) for b in range(3)] == [[0, 1], [2, 3], [4]]


def test_partition(comm):
    images = torch.arange(7 * 12, dtype=torch.float32).reshape(7, 3, 2, 2)
    data = torch.utils.data.TensorDataset(images, torch.arange(7))
    part = th.utils.data.Partition(data)
    counts = layout.balanced_counts(7, comm.size)
    assert len(part) == counts[comm.rank] and part.counts == counts
    X, y = part.stack()
    assert_dist_close(X, images, split=0)
    assert_dist_close(y, torch.arange(7), split=0)
    X2, = th.utils.data.Partition(data).stack(transform=lambda s: s[0] * 2)
    assert_dist_close(X2, images * 2, split=0)
    with pytest.raises(IndexError, match="out of range for this rank's"):
        part[len(part)]


def test_partition_of_a_torchvision_dataset(comm):
    datasets = pytest.importorskip("torchvision.datasets")
    transforms = pytest.importorskip("torchvision.transforms")
    fake = datasets.FakeData(size=5, image_size=(3, 4, 4), num_classes=3, transform=transforms.ToTensor())
    X, y = th.utils.data.Partition(fake).stack()
    assert_dist_close(X, torch.stack([fake[i][0] for i in range(5)]), split=0)
    assert_dist_close(y, torch.tensor([fake[i][1] for i in range(5)]), split=0)


def test_bad_input(comm):
    X = th.distribute(torch.ones(6, 2), 0)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match=rf"batch_size should be a positive integer value, but got batch_size={bad!r}"):
            th.utils.data.DataLoader(X, batch_size=bad)
    with pytest.raises(TypeError, match="drop_last should be a boolean value"):
        th.utils.data.DataLoader(X, batch_size=2, drop_last=1)
    with pytest.raises(ValueError, match=r"DataLoader takes DistTensors split along axis 0 .* got \['Tensor\(split=None\)'\]"):
        th.utils.data.DataLoader(torch.ones(6, 2), batch_size=2)
    with pytest.raises(ValueError, match=r"got \['DistTensor\(split=1\)'\]"):
        th.utils.data.DataLoader(th.distribute(torch.ones(6, 2), 1), batch_size=2)
    if comm.size > 1:
        with pytest.raises(ValueError, match="DataLoader's tensors must have the same rows on every rank"):
            th.utils.data.DataLoader((X, th.distribute(torch.ones(6), 0, counts=skewed_counts(6, comm.size))), batch_size=2)
    with pytest.raises(ValueError, match="DataLoader's tensors must have the same rows"):
        th.utils.data.DataLoader((X, th.distribute(torch.ones(5), 0)), batch_size=2)

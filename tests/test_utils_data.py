"""gradc.utils.data against torch.utils.data: batching, collation, samplers, shuffle determinism, random_split."""

from __future__ import annotations

import collections

import numpy as np
import pytest

import gradc
from gradc.utils import data

torch = pytest.importorskip("torch")
tdata = torch.utils.data


@pytest.fixture(autouse=True)
def _torch_single_threaded():
    """Tiny tensors on a shared machine: torch's thread pool only spins (60 ms backward calls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def to_numpy(x):
    """Nested batches of either library as nested plain containers of numpy arrays."""
    if isinstance(x, (gradc.Tensor, torch.Tensor)):
        return ("tensor", x.numpy())
    if isinstance(x, dict):
        return {k: to_numpy(v) for k, v in x.items()}
    if isinstance(x, tuple) and hasattr(x, "_fields"):
        return (type(x).__name__, *[to_numpy(v) for v in x])
    if isinstance(x, (list, tuple)):
        return type(x)(to_numpy(v) for v in x)
    return x


def assert_same(a, b):
    a, b = to_numpy(a), to_numpy(b)
    assert type(a) is type(b), (a, b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_plain(a[k], b[k])
    else:
        assert_same_plain(a, b)


def assert_same_plain(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, tuple) and a and a[0] == "tensor":
        assert a[1].dtype == b[1].dtype and a[1].shape == b[1].shape
        np.testing.assert_array_equal(a[1], b[1])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_plain(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same_plain(a[k], b[k])
    else:
        assert a == b


Point = collections.namedtuple("Point", ["x", "y"])
RNG = np.random.default_rng(0)
SAMPLES = {
    "tuple-of-arrays": [(RNG.standard_normal(3).astype(np.float32), np.int64(i)) for i in range(4)],
    "dict": [{"image": RNG.standard_normal((2, 2)).astype(np.float32), "label": i, "w": 0.5 * i} for i in range(3)],
    "numbers": [1.5, 2.0, 3.25],
    "ints": [3, 1, 2],
    "bools": [True, False, True],
    "strings": [("a", 1), ("b", 2)],
    "lists": [[1, 2.0], [3, 4.0]],
    "namedtuple": [Point(1.0, np.ones(2)), Point(2.0, np.zeros(2))],
    "nested": [{"a": (np.float64(1.0), [np.arange(3)])}, {"a": (np.float64(2.0), [np.arange(3) + 1])}],
    "float64-arrays": [RNG.standard_normal((2, 3)) for _ in range(3)],
}


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_default_collate_equals_pytorch(kind):
    samples = SAMPLES[kind]
    assert_same(data.default_collate(samples), tdata.default_collate(samples))


def test_default_collate_of_tensors_and_errors():
    g = [gradc.tensor([1.0, 2.0]), gradc.tensor([3.0, 4.0])]
    t = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])]
    assert_same(data.default_collate(g), tdata.default_collate(t))
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        data.default_collate([[1, 2], [3]])
    with pytest.raises(TypeError, match="default_collate: batch must contain tensors"):
        data.default_collate([object(), object()])
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        data.default_collate([gradc.zeros(2), gradc.zeros(3)])


def tensor_datasets(n=11):
    x = RNG.standard_normal((n, 3)).astype(np.float32)
    y = np.arange(n)
    return (data.TensorDataset(gradc.from_numpy(x), gradc.from_numpy(y)),
            tdata.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))


@pytest.mark.parametrize("batch_size, drop_last", [(4, False), (4, True), (1, False), (11, False), (20, True)])
def test_sequential_batches_equal_pytorch(batch_size, drop_last):
    dg, dt = tensor_datasets()
    lg = data.DataLoader(dg, batch_size=batch_size, drop_last=drop_last)
    lt = tdata.DataLoader(dt, batch_size=batch_size, drop_last=drop_last)
    assert len(lg) == len(lt)
    batches_g, batches_t = list(lg), list(lt)
    assert len(batches_g) == len(batches_t)
    for a, b in zip(batches_g, batches_t):
        assert_same(a, b)


class Squares(data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"x": np.full(2, i, dtype=np.float32), "y": i * i}


class SquaresT(tdata.Dataset):
    __init__, __len__, __getitem__ = Squares.__init__, Squares.__len__, Squares.__getitem__


def test_map_dataset_sampler_batch_sampler_and_no_auto_batching():
    order = [5, 0, 3, 3, 1]
    for kwargs in (dict(batch_size=2, sampler=order), dict(batch_sampler=[[1, 2], [0], [4, 4, 4]]),
                   dict(batch_size=None), dict(batch_size=3, collate_fn=lambda b: [s["y"] for s in b])):
        lg, lt = data.DataLoader(Squares(6), **kwargs), tdata.DataLoader(SquaresT(6), **kwargs)
        assert len(lg) == len(lt)
        for a, b in zip(lg, lt, strict=True):
            assert_same(a, b)


class Stream(data.IterableDataset):
    def __iter__(self):
        return iter(range(7))


class StreamT(tdata.IterableDataset):
    __iter__ = Stream.__iter__


@pytest.mark.parametrize("kwargs", [dict(batch_size=3), dict(batch_size=3, drop_last=True), dict(batch_size=None)])
def test_iterable_dataset_batches(kwargs):
    got = [to_numpy(b) for b in data.DataLoader(Stream(), **kwargs)]
    want = [to_numpy(b) for b in tdata.DataLoader(StreamT(), **kwargs)]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert_same_plain(a, b)
    with pytest.raises(ValueError, match="expected unspecified shuffle option"):
        data.DataLoader(Stream(), shuffle=True)


def test_shuffle_is_deterministic_with_a_generator_and_with_manual_seed():
    dg, _ = tensor_datasets(23)

    def epoch(loader):
        return np.concatenate([y.numpy() for _, y in loader])

    a = data.DataLoader(dg, batch_size=5, shuffle=True, generator=np.random.default_rng(7))
    b = data.DataLoader(dg, batch_size=5, shuffle=True, generator=np.random.default_rng(7))
    first, second = epoch(a), epoch(a)
    np.testing.assert_array_equal(first, epoch(b))  # same generator state -> same order
    np.testing.assert_array_equal(second, epoch(b))
    assert sorted(first) == list(range(23)) and not np.array_equal(first, second)  # a new permutation per epoch
    assert not np.array_equal(first, np.arange(23))
    gradc.manual_seed(3)
    c = epoch(data.DataLoader(dg, batch_size=5, shuffle=True))
    gradc.manual_seed(3)
    np.testing.assert_array_equal(c, epoch(data.DataLoader(dg, batch_size=5, shuffle=True)))
    # x rows stay paired with their labels
    x, y = next(iter(a))
    np.testing.assert_array_equal(x.numpy(), dg.tensors[0].numpy()[y.numpy()])


def test_samplers_equal_pytorch_where_deterministic():
    assert list(data.SequentialSampler(range(5))) == list(tdata.SequentialSampler(range(5)))
    for n, bs, drop in [(10, 3, False), (10, 3, True), (9, 3, True)]:
        g = data.BatchSampler(data.SequentialSampler(range(n)), bs, drop)
        t = tdata.BatchSampler(tdata.SequentialSampler(range(n)), bs, drop)
        assert list(g) == list(t) and len(g) == len(t)
    sampler = data.RandomSampler(range(6), num_samples=15, generator=np.random.default_rng(0))
    drawn = list(sampler)
    assert len(sampler) == 15 and len(drawn) == 15 and sorted(drawn[:6]) == list(range(6))
    with_replacement = list(data.RandomSampler(range(4), replacement=True, num_samples=50,
                                               generator=np.random.default_rng(0)))
    assert len(with_replacement) == 50 and set(with_replacement) <= set(range(4))
    assert sorted(data.SubsetRandomSampler([3, 8, 9], generator=np.random.default_rng(1))) == [3, 8, 9]
    weighted = list(data.WeightedRandomSampler([0.0, 1.0, 0.0], 5, generator=np.random.default_rng(0)))
    assert weighted == [1] * 5
    with pytest.raises(ValueError, match="batch_size should be a positive integer value"):
        data.BatchSampler(range(3), 0, False)
    with pytest.raises(ValueError, match="sampler option is mutually exclusive with shuffle"):
        data.DataLoader(range(3), sampler=[0, 1], shuffle=True)
    with pytest.raises(ValueError, match="batch_sampler option is mutually exclusive"):
        data.DataLoader(range(3), batch_sampler=[[0]], batch_size=2)
    with pytest.raises(ValueError, match="num_workers option should be non-negative"):
        data.DataLoader(range(3), num_workers=-1)


@pytest.mark.parametrize("lengths", [[3, 5, 3], [0.5, 0.3, 0.2], [0.25, 0.25, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]])
def test_random_split_sizes_equal_pytorch_and_partition(lengths):
    dg, dt = tensor_datasets(11)
    parts = data.random_split(dg, lengths, generator=np.random.default_rng(0))
    torch_parts = tdata.random_split(dt, lengths, generator=torch.Generator().manual_seed(0))
    assert [len(p) for p in parts] == [len(p) for p in torch_parts]
    indices = sorted(i for p in parts for i in p.indices)
    assert indices == list(range(11))
    again = data.random_split(dg, lengths, generator=np.random.default_rng(0))
    assert [p.indices for p in parts] == [p.indices for p in again]
    x, y = parts[0][0]
    assert int(y.item()) == parts[0].indices[0]
    # batches of a split (and of a split of a split) are the samples at the split's indices
    nested = data.Subset(parts[0], [1, 0])
    for part in (parts[0], nested):
        expected = [dg[i] for i in range(len(dg))]
        indices = part.indices if part is parts[0] else [parts[0].indices[i] for i in part.indices]
        xb, yb = next(iter(data.DataLoader(part, batch_size=len(part))))
        np.testing.assert_array_equal(yb.numpy(), indices)
        np.testing.assert_array_equal(xb.numpy(), np.stack([expected[i][0].numpy() for i in indices]))
    with pytest.raises(ValueError, match="Sum of input lengths does not equal"):
        data.random_split(dg, [3, 3])


def test_subset_and_concat():
    ds = Squares(5) + Squares(3)
    assert len(ds) == 8 and ds[6]["y"] == 1 and ds[-1]["y"] == 4
    sub = data.Subset(Squares(10), [9, 2, 4])
    assert len(sub) == 3 and sub[0]["y"] == 81
    batches = list(data.DataLoader(sub, batch_size=2))
    assert batches[0]["y"].tolist() == [81, 4] if hasattr(batches[0]["y"], "tolist") else True
    np.testing.assert_array_equal(batches[0]["y"].numpy(), [81, 4])

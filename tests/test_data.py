"""gradc.data: shuffled, seeded mini-batches and the progress bar."""

from __future__ import annotations

import io

import numpy as np
import pytest

import gradc
from gradc.data import DataLoader, batches, progress


def arrays(n: int = 23):
    return np.arange(n * 3, dtype=np.float32).reshape(n, 3), np.arange(n)


def test_one_epoch_covers_every_item_once_with_a_smaller_last_batch():
    x, y = arrays()
    loader = DataLoader(x, y, batch_size=5, seed=0)
    got = list(loader)
    assert len(loader) == len(got) == 5
    assert [len(b[1]) for b in got] == [5, 5, 5, 5, 3]
    labels = np.concatenate([b[1] for b in got])
    assert sorted(labels) == list(range(23)) and not np.array_equal(labels, np.arange(23))
    for bx, by in got:  # rows stay paired with their labels
        np.testing.assert_array_equal(bx, x[by])
        assert bx.flags.c_contiguous


def test_drop_last_and_no_shuffle():
    x, y = arrays()
    loader = DataLoader(x, y, batch_size=5, shuffle=False, drop_last=True)
    got = [b[1] for b in loader]
    assert len(loader) == 4 and len(got) == 4
    np.testing.assert_array_equal(np.concatenate(got), np.arange(20))


def test_seeding():
    x, y = arrays()
    first = [b[1] for b in DataLoader(x, y, batch_size=4, seed=3)]
    again = [b[1] for b in DataLoader(x, y, batch_size=4, seed=3)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    loader = DataLoader(x, y, batch_size=4, seed=3)
    epoch1, epoch2 = [b[1] for b in loader], [b[1] for b in loader]
    assert not all(np.array_equal(a, b) for a, b in zip(epoch1, epoch2))  # a new order each epoch
    gradc.manual_seed(9)
    a = [b[1] for b in batches(x, y, batch_size=4)]
    gradc.manual_seed(9)
    b = [b[1] for b in batches(x, y, batch_size=4)]
    assert all(np.array_equal(u, v) for u, v in zip(a, b))


def test_bad_input():
    x, y = arrays()
    with pytest.raises(ValueError, match="array 1 has 22 items along axis 0, array 0 has 23"):
        DataLoader(x, y[:-1])
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        DataLoader(x, batch_size=0)
    with pytest.raises(ValueError, match="at least one array"):
        DataLoader()


def test_progress_bar_draws_on_its_stream():
    stream = io.StringIO()
    bar = progress(range(10), desc="epoch 1", width=10, stream=stream, interval=0.0)
    items = []
    for i in bar:
        bar.postfix = f"loss {i}"
        items.append(i)
    assert items == list(range(10))
    text = stream.getvalue()
    assert text.endswith("\n")
    final = text.rstrip("\n").split("\r")[-1]
    assert final.startswith("epoch 1 [##########] 10/10") and final.endswith("loss 9")
    quiet = io.StringIO()
    assert list(progress(range(3), stream=quiet, enabled=False)) == [0, 1, 2]
    assert quiet.getvalue() == ""

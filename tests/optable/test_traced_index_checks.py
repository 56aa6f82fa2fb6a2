"""Compiled scatters and one_hot check their index values (the eager checks are in the op table)."""

import numpy as np
import pytest

import gradc


@pytest.mark.parametrize("backend", ["native", "interp"])
def test_compiled_scatter_add_refuses_an_out_of_range_index(backend):
    gradc.set_backend(backend)
    try:
        f = gradc.compile(lambda x, i: gradc.scatter_add(x, 0, i, x[:1]))
        x = np.ones((3, 4))
        np.testing.assert_array_equal(f(x, np.array([[0, 2, 1, 0]])).sum(axis=0), [4.0, 4.0, 4.0, 4.0])
        with pytest.raises(IndexError, match="index 5 is out of bounds"):
            f(x, np.array([[0, 5, 1, 0]]))
    finally:
        gradc.set_backend("auto")


def test_compiled_one_hot_and_index_add_refuse_out_of_range_indices():
    one_hot = gradc.compile(lambda i: gradc.nn.functional.one_hot(i, 3))
    np.testing.assert_array_equal(one_hot(np.array([0, 2])), [[1, 0, 0], [0, 0, 1]])
    with pytest.raises(IndexError, match="index 3 is out of bounds"):
        one_hot(np.array([0, 3]))
    index_add = gradc.compile(lambda x, i, s: gradc.index_add(x, 0, i, s))
    with pytest.raises(IndexError, match="index -1 is out of bounds"):
        index_add(np.zeros((3, 2)), np.array([0, -1]), np.ones((2, 2)))

"""Regression: grad/value_and_grad/hessian of an integer input blamed the output.

`gradc.grad(f)(int_array)` raised "grad requires a function with one scalar floating point output; got
i64[]": the output check ran before the input check, and an integer input makes the output integer too.
Fixed in gradc/api.py by checking argnums (the input dtypes) first.
"""

import numpy as np
import pytest

import gradc


@pytest.mark.parametrize("transform", [gradc.grad, gradc.value_and_grad, gradc.hessian])
def test_integer_input_is_named_as_the_problem(transform):
    with pytest.raises(TypeError, match=r"grad requires real floating point inputs; argument 0 is i64\[3\]"):
        transform(lambda x: (x * x).sum())(np.arange(3))

"""gradc: compile models into native gradient functions.

`import gradc as torch` covers PyTorch's autograd tutorial; `gradc.trace`, `gradc.grad`,
`gradc.value_and_grad` and `gradc.compile` work on plain Python functions of tensors.
"""

import builtins

from gradc import autograd, data, functional, methods, nn, optim  # noqa: F401  (methods binds Tensor operators)
from gradc.api import compile, grad, hessian, jacobian, make_ir, set_backend, trace, value_and_grad, vjp  # noqa: F401
from gradc.factories import (  # noqa: F401
    arange,
    eye,
    from_numpy,
    full,
    manual_seed,
    ones,
    ones_like,
    rand,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)
from gradc.functional import (  # noqa: F401
    abs,
    amax,
    argmax,
    clamp,
    exp,
    expand,
    flatten,
    gather,
    log,
    log_softmax,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    mm,
    permute,
    pow,
    reciprocal,
    relu,
    reshape,
    sigmoid,
    softmax,
    sqrt,
    squeeze,
    sum,
    t,
    tanh,
    transpose,
    unsqueeze,
    where,
)
from gradc.grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
from gradc.ir.core import bool_ as bool  # noqa: F401
from gradc.ir.core import float32, float64, int64  # noqa: F401
from gradc.loops import scan  # noqa: F401
from gradc.printing import printoptions, set_printoptions  # noqa: F401
from gradc.tensor import Tensor  # noqa: F401
from gradc.train import compile_step  # noqa: F401

float = float32
double = float64
long = int64
add, sub, mul, div, neg = functional.add, functional.sub, functional.mul, functional.div, functional.neg


def is_tensor(obj: object) -> builtins.bool:
    """torch.is_tensor."""
    return isinstance(obj, Tensor)

__version__ = "0.1.0"

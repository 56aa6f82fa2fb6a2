"""gradc: compile models into native gradient functions.

`import gradc as torch` covers PyTorch's autograd tutorial; `gradc.trace`, `gradc.grad`,
`gradc.value_and_grad` and `gradc.compile` work on plain Python functions of tensors.
"""

import builtins

import gradc.accelerator as accelerator  # noqa: F401
import gradc.backends as backends  # noqa: F401
import gradc.cuda as cuda  # noqa: F401
import gradc.tensor_protocol  # noqa: F401  (binds the rest of Tensor's protocol)
from gradc import autograd, data, functional, methods, nn, optim, utils  # noqa: F401  (methods binds Tensor operators)
from gradc.api import compile, grad, hessian, jacobian, make_ir, set_backend, trace, value_and_grad, vjp  # noqa: F401
from gradc.creation import (  # noqa: F401
    as_tensor,
    empty,
    empty_like,
    full_like,
    linspace,
    logspace,
    normal,
    rand_like,
    randint,
    randint_like,
    randperm,
)
from gradc.device import (  # noqa: F401
    are_deterministic_algorithms_enabled,
    device,
    get_default_device,
    get_default_dtype,
    set_default_device,
    set_default_dtype,
    use_deterministic_algorithms,
)
from gradc.dtypes import bfloat16, complex64, complex128, finfo, float16, iinfo  # noqa: F401
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
    amin,
    aminmax,
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
from gradc.indexing import index_select, multinomial, topk  # noqa: F401
from gradc.ir.core import bool_ as bool  # noqa: F401
from gradc.ir.core import float32, float64, int8, int16, int32, int64, uint8  # noqa: F401
from gradc.loops import scan  # noqa: F401
from gradc.printing import printoptions, set_printoptions  # noqa: F401
from gradc.promotion import promote_types  # noqa: F401
from gradc.promotion import torch_result_type as result_type  # noqa: F401
from gradc.random import Generator, default_generator, get_rng_state, initial_seed, seed, set_rng_state  # noqa: F401
from gradc.serialization import load, save  # noqa: F401
from gradc.shape_ops import (  # noqa: F401
    cat,
    chunk,
    concat,
    concatenate,
    logsumexp,
    masked_fill,
    narrow,
    norm,
    repeat_interleave,
    split,
    stack,
    std,
    tril,
    triu,
    unbind,
    var,
)
from gradc.tensor import Tensor  # noqa: F401
from gradc.tensor_protocol import Size  # noqa: F401
from gradc.train import compile_step  # noqa: F401
from gradc.trig import cos, sin  # noqa: F401

float = float32
double = float64
long = int64
half, short, cfloat, cdouble = float16, int16, complex64, complex128
int = int32  # noqa: A001  (torch.int is torch.int32)
add, sub, mul, div, neg = functional.add, functional.sub, functional.mul, functional.div, functional.neg


def is_tensor(obj: object) -> builtins.bool:
    """torch.is_tensor."""
    return isinstance(obj, Tensor)

from gradc.intdiv import FUNCTIONS as _INTDIV  # noqa: E402
from gradc.movement import FUNCTIONS as _MOVEMENT  # noqa: E402
from gradc.pointwise import FUNCTIONS as _POINTWISE  # noqa: E402
from gradc.scans import FUNCTIONS as _SCANS  # noqa: E402

globals().update({**_POINTWISE, **_SCANS, **_MOVEMENT, **_INTDIV})  # torch.floor, torch.cumsum, torch.sort, ...

__version__ = "0.1.0"

from gradc import distributed  # noqa: E402,F401  (imports mpi4py only in init_process_group)

# the out= keyword (a wrapper around the front-end functions; methods are unaffected)
from gradc.outparam import with_out as _with_out  # noqa: E402

add, sub, mul, div, matmul, mm = (_with_out(f) for f in (add, sub, mul, div, matmul, mm))

"""Module and Parameter: PyTorch's torch.nn.Module API on gradc tensors.

Attributes that are Parameters, Modules or registered buffers are tracked in insertion order, so
`named_parameters()` and `state_dict()` give PyTorch's names (`0.weight`, `fc1.bias`, ...) for the
same architecture, and a state_dict moves between gradc and PyTorch as numpy arrays.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from gradc.tensor import Tensor, zero_grads


class Parameter(Tensor):
    """A Tensor that a Module registers as a parameter; requires grad unless told otherwise."""

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        if data is None:
            array = np.zeros((0,), dtype=np.float32)
        elif isinstance(data, Tensor):
            array = data._concrete("Parameter()")  # shares memory, as torch.nn.Parameter does
        else:
            array = np.ascontiguousarray(data)
            if array.dtype == np.float64 and not isinstance(data, np.ndarray):
                array = array.astype(np.float32)
        self._init(array, None)
        if requires_grad:
            self._set_requires_grad()

    @property
    def data(self) -> Tensor:
        """The values without autograd history, sharing memory (`p.data`)."""
        return Tensor._from_array(self._data)

    @data.setter
    def data(self, value: Any) -> None:
        array = value._concrete("Parameter.data") if isinstance(value, Tensor) else np.asarray(value)
        self._data = np.ascontiguousarray(array, dtype=self._data.dtype)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol: int) -> Any:
        return (Parameter, (self._data.copy(), self.requires_grad))


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    return lines[0] if len(lines) == 1 else "\n".join([lines[0]] + [" " * spaces + line for line in lines[1:]])


class Module:
    """Base class of layers and models: subclasses set attributes in __init__ and define forward()."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())

    # --- attribute registry
    def _registry(self) -> tuple[dict, dict, dict]:
        try:
            return self.__dict__["_parameters"], self.__dict__["_buffers"], self.__dict__["_modules"]
        except KeyError:
            raise AttributeError(f"cannot assign parameters or submodules before {type(self).__name__}."
                                 f"__init__() calls super().__init__()") from None

    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if isinstance(value, Parameter):
            params, buffers, modules = self._registry()
            buffers.pop(name, None), modules.pop(name, None), d.pop(name, None)
            params[name] = value
        elif isinstance(value, Module):
            params, buffers, modules = self._registry()
            params.pop(name, None), buffers.pop(name, None), d.pop(name, None)
            modules[name] = value
        elif name in d.get("_parameters", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                "(gradc.nn.Parameter or None expected)")
            d["_parameters"][name] = None
        elif name in d.get("_modules", ()):
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                "(gradc.nn.Module or None expected)")
            d["_modules"][name] = None
        elif name in d.get("_buffers", ()):
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                "(gradc.Tensor or None expected)")
            d["_buffers"][name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # only called when normal lookup fails: look in the registries
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            if table in d and name in d[table]:
                return d[table][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        for table in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(table, ()):
                del self.__dict__[table][name]
                return
        object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            "(gradc.nn.Parameter or None required)")
        self._registry()[0][name] = param

    def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
        """A non-trainable tensor saved in the state_dict (unless persistent=False)."""
        self._registry()[1][name] = tensor
        if not persistent:
            self.__dict__.setdefault("_non_persistent", set()).add(name)

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        self._registry()[2][name] = module

    # --- calling
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # --- traversal
    def named_modules(self, memo: set | None = None, prefix: str = "") -> Iterator[tuple[str, Module]]:
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        return (m for _, m in self.named_modules())

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        return (m for _, m in self.named_children())

    def _named_members(self, table: str, prefix: str, recurse: bool) -> Iterator[tuple[str, Tensor]]:
        seen = set()
        modules = self.named_modules(prefix=prefix) if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, table).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))  # a shared parameter is listed once, as in PyTorch
                yield (f"{module_prefix}.{name}" if module_prefix else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Parameter]]:
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix: str = "", recurse: bool = True) -> Iterator[tuple[str, Tensor]]:
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
        return (b for _, b in self.named_buffers(recurse=recurse))

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # --- modes and gradients
    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        zero_grads(self.parameters(), set_to_none)

    # --- state
    def state_dict(self, prefix: str = "", keep_vars: bool = False) -> OrderedDict[str, Any]:
        """Parameters and persistent buffers by dotted name, as numpy arrays (copies) or Tensors."""
        out: OrderedDict[str, Any] = OrderedDict()
        for module_prefix, module in self.named_modules(prefix=prefix.rstrip(".")):
            skip = module.__dict__.get("_non_persistent", set())
            for table in (module._parameters, module._buffers):
                for name, value in table.items():
                    if value is None or name in skip:
                        continue
                    key = f"{module_prefix}.{name}" if module_prefix else name
                    out[key] = value if keep_vars else value._data.copy()
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> tuple[list, list]:
        """Copy arrays (numpy, gradc or torch tensors) into the parameters and buffers, in place.

        Shapes must match exactly; with strict=True the keys must match too. Every problem is listed
        in one RuntimeError, naming the key and both shapes, as PyTorch does.
        """
        own = self.state_dict(keep_vars=True)
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        arrays = {}
        for key, target in own.items():
            if key not in state_dict:
                continue
            array = _as_array(state_dict[key], key)
            if array.shape != target._data.shape:
                errors.append(f"size mismatch for {key}: copying a param with shape {list(array.shape)} from "
                              f"checkpoint, the shape in current model is {list(target._data.shape)}.")
            else:
                arrays[key] = array
        if strict:
            if unexpected:
                errors.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ".")
            if missing:
                errors.insert(0, "Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ".")
        if errors:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
        for key, array in arrays.items():
            target = own[key]
            target._data[...] = array.astype(target._data.dtype, copy=False)
            target._bump_version()
        return missing, unexpected

    # --- printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, module in self._modules.items():
            lines.append(f"({name}): " + _addindent(repr(module), 2))
        head = type(self).__name__ + "("
        if not lines:
            return head + ")"
        if len(lines) == 1 and not self._modules:
            return head + lines[0] + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))

    # --- compilation (gradc.compile(module) comes here)
    def _gradc_compile(self) -> Callable[..., Any]:
        from gradc.train import CompiledModule
        return CompiledModule(self)


def _as_array(value: Any, key: str) -> np.ndarray:
    if isinstance(value, Tensor):
        return value._concrete(f"state_dict[{key!r}]")
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as e:  # pragma: no cover - exotic objects
        raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, not an array") from e

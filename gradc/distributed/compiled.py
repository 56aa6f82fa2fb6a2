"""compile_step on a DistributedDataParallel model: native backward, one allreduce, native update.

The step is split in two compiled functions around the communication:
  1. forward + adjoint (the same joint Function compile_step builds) -> loss and gradients, which are
     copied into ONE contiguous buffer per dtype;
  2. MPI Allreduce(SUM) of that buffer, in place (blocking);
  3. the optimizer's `_update` on all parameters, compiled as one function reading the summed
     gradients (divided by the world size inside it, fused with the update) and writing parameters
     and state in place (donated results).

mode="buckets" instead allreduces ~bucket_cap_mb buckets (reverse parameter order) with Iallreduce
and runs a compiled update per bucket as soon as that bucket arrives, overlapping the later buckets'
communication with the earlier buckets' updates. `gradc bench --ranks 2` (gradc.bench.distributed)
measures both: over four full 2-rank runs here neither was consistently faster (W7 2.1/2.2, 2.6/2.5,
4.0/4.4, 3.1/3.0 steps/s buffer/buckets; W6 200/180, 476/430, 439/441, 275/321), because W7's gradient is
98% one tensor (fc1.weight, which a bucket cannot split) and MPICH progresses a nonblocking collective
only inside MPI calls, which the native update makes none of. The single buffer, one MPI call, is the
default.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from gradc import functional as F
from gradc.api import argument_array, compile_function_or_interp, optimize
from gradc.distributed import process_group as pg
from gradc.grad_mode import enable_grad
from gradc.ir.core import Function, TensorType, Value, float64
from gradc.ir.passes.ad import ad
from gradc.nn.ops import noise_arrays
from gradc.optim import Optimizer
from gradc.tensor import Tensor, Trace, tracing
from gradc.train import CompiledStep, _dtype, _Spec, _store_updates, _value_name

__all__ = ["DistributedCompiledStep", "compile_ddp_step"]


class _Segment:
    """A group of trainable parameters sharing a flat gradient buffer and one compiled update."""

    def __init__(self, members: list[int], step: DistributedCompiledStep) -> None:
        self.members = members  # indices into step.trainable
        tensors = [step.tensors[step.trainable[j][0]] for j in members]
        dtypes = {t._data.dtype for t in tensors}
        if len(dtypes) != 1:
            raise ValueError("a gradient buffer holds one dtype")
        sizes = [t._data.size for t in tensors]
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.buffer = np.zeros(offsets[-1], dtype=dtypes.pop())
        self.views = [self.buffer[a:b].reshape(t.shape) for a, b, t in zip(offsets[:-1], offsets[1:], tensors)]
        self.update: Callable | None = None  # the compiled update, built with the step's specialization
        self.swap: list[Tensor] = []  # parameters, then their optimizer state: the update's inputs and results
        self.structure: list = []  # the groups' compiled-in choices (flags, zero weight decay, ...) at build time
        self.groups: list[dict] = []  # the parameter groups whose learning rates the update reads
        self.n_params = 0
        self.request: Any = None


class DistributedCompiledStep(CompiledStep):
    """`step(x, y) -> local loss` on this rank's shard; gradients averaged over ranks before the update."""

    def __init__(self, ddp: Any, loss_fn: Callable[[Tensor, Tensor], Tensor], optimizer: Optimizer,
                 mode: str = "buffer", bucket_cap_mb: float | None = None) -> None:
        if mode not in ("buffer", "buckets"):
            raise ValueError(f"mode must be 'buffer' or 'buckets', got {mode!r}")
        super().__init__(ddp.module, loss_fn, optimizer)
        self.ddp, self.mode = ddp, mode
        self.bucket_cap = int((ddp.bucket_cap_mb if bucket_cap_mb is None else bucket_cap_mb) * 1024 * 1024)
        self.comm = pg.comm()
        self.world_size = self.comm.Get_size()
        self.segments = self._segments()
        # seconds spent per phase, summed over steps (gradc.bench.distributed reads them)
        self.timings = {"backward": 0.0, "allreduce": 0.0, "wait": 0.0, "step": 0.0, "steps": 0}
        self.measure_wait = False

    def __repr__(self) -> str:
        return (f"<gradc.compile_step of DistributedDataParallel({type(self.model).__name__}) with "
                f"{type(self.optimizer).__name__}, {self.world_size} ranks>")

    def _segments(self) -> list[_Segment]:
        order = list(range(len(self.trainable)))
        if self.mode == "buffer":  # one buffer per dtype
            by_dtype: dict[Any, list[int]] = {}
            for j in order:
                by_dtype.setdefault(self.tensors[self.trainable[j][0]]._data.dtype, []).append(j)
            return [_Segment(js, self) for js in by_dtype.values()]
        segments, current, size, dtype = [], [], 0, None
        for j in reversed(order):
            data = self.tensors[self.trainable[j][0]]._data
            if current and (size + data.nbytes > self.bucket_cap or data.dtype != dtype):
                segments.append(_Segment(current, self))
                current, size = [], 0
            current.append(j)
            size += data.nbytes
            dtype = data.dtype
        if current:
            segments.append(_Segment(current, self))
        return segments

    # --- building
    def _build(self, x: np.ndarray, y: np.ndarray) -> _Spec:
        forward = optimize(self._forward(TensorType(x.shape, _dtype(x)), TensorType(y.shape, _dtype(y))))
        n_noise = forward.meta["num_noise"]
        joint = optimize(ad(forward, [i for i, _ in self.trainable], seed="ones"))
        grad_fn = compile_function_or_interp(joint)  # (tensors, x, y, noise) -> (loss, *grads)
        for segment in self.segments:
            self._build_update(segment)
        noise = joint.params[len(joint.params) - n_noise:] if n_noise else []
        # results: loss, the running stats batch norm updates (forward.meta["updated_buffers"]), the gradients
        return _Spec(grad_fn, joint, noise, True, forward.meta.get("updated_buffers", []))

    def _build_update(self, segment: _Segment) -> None:
        """One compiled update of the segment's parameters from its summed gradients (mean taken inside)."""
        opt = self.optimizer
        trainable = [self.trainable[j] for j in segment.members]
        groups = {id(g): g for _, g in trainable}
        group_index = {gid: k for k, gid in enumerate(groups)}
        states = [opt.state_for(self.tensors[i], g) for i, g in trainable]
        state_names = [opt._state_names(g) for _, g in trainable]
        p_values = [Value(self.tensors[i]._type(), name=_value_name(self.names[i])) for i, _ in trainable]
        g_values = [Value(self.tensors[i]._type(), name=_value_name(self.names[i]) + "_grad") for i, _ in trainable]
        s_values = [[Value(s[n]._type(), name=f"{_value_name(self.names[i])}_{n}") for n in names]
                    for (i, _), s, names in zip(trainable, states, state_names)]
        hyper_names = [opt.hyper_names(g) for g in groups.values()]
        hyper_values = [Value(TensorType((len(names),), float64), name=f"hyper{k}")
                        for k, names in enumerate(hyper_names)]
        trace = Trace()
        with tracing(trace), enable_grad():
            hyper = [opt.hyper_dict(names, Tensor._from_value(v)) for names, v in zip(hyper_names, hyper_values)]
            new_params, new_states = [], []
            for (i, group), p, g, values, names in zip(trainable, p_values, g_values, s_values, state_names):
                grad = F.div(Tensor._from_value(g), float(self.world_size))  # ReduceOp.AVG, as PyTorch DDP
                new_p, new_s = opt._update(group, Tensor._from_value(p), grad,
                                           {n: Tensor._from_value(v) for n, v in zip(names, values)},
                                           hyper[group_index[id(group)]])
                new_params.append(trace.lift(new_p))
                new_states += [trace.lift(new_s[n]) if n in new_s else v for n, v in zip(names, values)]
        flat_states = [v for vs in s_values for v in vs]
        params = p_values + flat_states + hyper_values + g_values
        fn = optimize(Function("ddp_update", params, trace.builder.ops, new_params + new_states))
        n = len(trainable)
        segment.swap = [self.tensors[i] for i, _ in trainable] + \
            [s[name] for s, names in zip(states, state_names) for name in names]
        donate = {r: r for r in range(len(segment.swap))}  # result r is input r's new value
        segment.update = compile_function_or_interp(fn, donate)
        segment.groups = list(groups.values())
        segment.structure = [opt.structure(g) for g in segment.groups]
        segment.n_params = n

    # --- the step
    def __call__(self, x: Any, y: Any) -> np.ndarray:
        if not self.ddp.require_backward_grad_sync:
            raise RuntimeError("a compiled DistributedDataParallel step updates the parameters, so it cannot "
                               "accumulate gradients under no_sync(); use the eager loop (backward, step) there")
        x = x if type(x) is np.ndarray else argument_array(x, 0)
        y = y if type(y) is np.ndarray else argument_array(y, 1)
        spec = self._last
        if spec is None or self._last_key != (x.shape, x.dtype, y.shape, y.dtype, self.model.training):
            spec = self._specialize(x, y)
            self._last, self._last_key = spec, (x.shape, x.dtype, y.shape, y.dtype, self.model.training)
        args = [t._data for t in self.tensors]
        args.append(x)
        args.append(y)
        if spec.noise:
            args += noise_arrays(spec.noise)
        clock, timings = time.perf_counter, self.timings
        t0 = clock()
        out = spec.fn(*args)
        nb = len(spec.buffers)
        loss, grads = out[0], out[1 + nb:]
        if nb:  # running stats: each rank keeps its own, as PyTorch DDP between broadcasts
            _store_updates(spec.buffers, out[1:1 + nb])
        MPI = pg.mpi()
        t1 = clock()
        timings["backward"] += t1 - t0
        if self.mode == "buffer":
            for segment in self.segments:
                for j, view in zip(segment.members, segment.views):
                    np.copyto(view, grads[j])
                t2 = clock()
                if self.measure_wait:  # benchmarks: wait for the slowest rank first, time the allreduce alone
                    self.comm.Barrier()
                    t3 = clock()
                    timings["wait"] += t3 - t2
                    t2 = t3
                self.comm.Allreduce(MPI.IN_PLACE, segment.buffer, MPI.SUM)
                timings["allreduce"] += clock() - t2
                self._update(segment)
        else:
            for segment in self.segments:
                for j, view in zip(segment.members, segment.views):
                    np.copyto(view, grads[j])
                t2 = clock()
                segment.request = self.comm.Iallreduce(MPI.IN_PLACE, segment.buffer, MPI.SUM)
                timings["allreduce"] += clock() - t2
            for segment in self.segments:
                t2 = clock()
                segment.request.Wait()
                timings["allreduce"] += clock() - t2
                segment.request = None
                self._update(segment)
        timings["step"] += clock() - t0
        timings["steps"] += 1
        return loss

    def _update(self, segment: _Segment) -> None:
        opt = self.optimizer
        opt._opt_called = True  # the step counts as optimizer.step() for lr_scheduler's order check
        if [opt.structure(g) for g in segment.groups] != segment.structure:
            self._build_update(segment)  # a flag flipped or a weight decay / momentum became (non)zero
        # hyperparameters (lr, betas, momentum, ...) are runtime inputs: a schedule never recompiles
        hyper = [np.array(opt.hyper_values(g), dtype=np.float64) for g in segment.groups]
        args = [t._data for t in segment.swap] + hyper + segment.views
        out = segment.update(*args)
        out = out if isinstance(out, (list, tuple)) else (out,)
        if not all(o is a for o, a in zip(out, args)):
            _store_updates(segment.swap, out)
        for p in segment.swap[:segment.n_params]:
            p._version += 1


def compile_ddp_step(ddp: Any, loss_fn: Callable[[Tensor, Tensor], Tensor], optimizer: Optimizer,
                     mode: str = "buffer", bucket_cap_mb: float | None = None) -> DistributedCompiledStep:
    """compile_step for a DistributedDataParallel model (what gradc.compile_step returns for one)."""
    return DistributedCompiledStep(ddp, loss_fn, optimizer, mode, bucket_cap_mb)

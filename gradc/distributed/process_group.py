"""The default process group on MPI: init_process_group("mpi"), rank, world size, the abort hook.

mpi4py is imported only when a process group is made, so `import gradc` never needs MPI. Once the
group has more than one rank, an uncaught exception on any rank prints its traceback and calls
MPI_Abort, ending the whole job with a non-zero exit instead of leaving the other ranks waiting in a
collective (what `python -m mpi4py script.py` does).
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

__all__ = ["init_process_group", "destroy_process_group", "is_initialized", "is_available", "is_mpi_available",
           "get_rank", "get_world_size", "get_backend", "barrier", "comm", "mpi"]

INSTALL_HINT = 'pip install -e ".[distributed]"  (or: pip install mpi4py mpich)'
NOT_INITIALIZED = ("Default process group has not been initialized, please make sure to call "
                   "init_process_group.")


# what launchers put in the environment: torchrun's names <- (MPICH/Intel MPI hydra, Open MPI, Slurm)
_LAUNCHER_VARIABLES = {
    "RANK": ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"),
    "WORLD_SIZE": ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"),
    "LOCAL_RANK": ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK"),
    "LOCAL_WORLD_SIZE": ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"),
}


def torchrun_environment(environ: Any = os.environ) -> None:
    """Under mpiexec, set RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (where unset) from the MPI
    launcher's variables, so scripts written for torchrun that read them before init_process_group run."""
    for name, sources in _LAUNCHER_VARIABLES.items():
        if name not in environ:
            value = next((environ[s] for s in sources if s in environ), None)
            if value is not None:
                environ[name] = value


torchrun_environment()


class _Group:
    comm: Any = None  # the MPI communicator (a duplicate of COMM_WORLD) while initialized
    rank = 0
    size = 1
    previous_excepthook: Any = None


_group = _Group()


def mpi() -> Any:
    """mpi4py's MPI module, or a RuntimeError naming the extra to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise RuntimeError(f"gradc.distributed needs mpi4py and an MPI library, which are not installed ({e}); "
                           f"install them with: {INSTALL_HINT}") from e
    except (RuntimeError, OSError) as e:  # mpi4py present but its MPI shared library cannot be loaded
        raise RuntimeError(f"gradc.distributed could not load an MPI library ({e}); install one with: "
                           f"{INSTALL_HINT}") from e
    return MPI


def is_available() -> bool:
    """True when mpi4py can be imported (torch.distributed.is_available)."""
    try:
        mpi()
    except RuntimeError:
        return False
    return True


is_mpi_available = is_available


def is_initialized() -> bool:
    return _group.comm is not None


def comm() -> Any:
    """The group's MPI communicator; ValueError (PyTorch's words) before init_process_group."""
    if _group.comm is None:
        raise ValueError(NOT_INITIALIZED)
    return _group.comm


def init_process_group(backend: str | None = "mpi", init_method: str | None = None, timeout: Any = None,
                       world_size: int = -1, rank: int = -1, store: Any = None, group_name: str = "",
                       abort_on_exception: bool = True, **kwargs: Any) -> None:
    """Join the job started by mpiexec; rank and world size come from MPI (given ones must agree)."""
    if backend is None:
        backend = "mpi"
    if str(backend).lower() not in ("mpi", "gloo"):  # gloo, PyTorch's CPU backend, runs on MPI here
        raise ValueError(f"gradc.distributed runs on MPI (backend 'mpi', or 'gloo' as an alias), got "
                         f"backend={backend!r}; launch with: mpiexec -n N python script.py")
    if _group.comm is not None:
        raise ValueError("trying to initialize the default process group twice!")
    MPI = mpi()
    if not MPI.Is_initialized():
        MPI.Init_thread(MPI.THREAD_SERIALIZED)
    world = MPI.COMM_WORLD
    _group.rank, _group.size = world.Get_rank(), world.Get_size()
    if abort_on_exception and _group.size > 1 and _group.previous_excepthook is None:
        # first: a rank that fails from here on (even the checks below) must not leave the others in Dup
        _group.previous_excepthook = sys.excepthook
        sys.excepthook = _abort_on_exception
    if world_size not in (-1, None) and world_size != world.Get_size():
        raise ValueError(f"world_size={world_size} was given but MPI started {world.Get_size()} processes")
    if rank not in (-1, None) and rank != world.Get_rank():
        raise ValueError(f"rank={rank} was given but MPI says this process is rank {world.Get_rank()}")
    _group.comm = world.Dup()  # our own context: user MPI traffic on COMM_WORLD cannot match ours
    _group.rank, _group.size = _group.comm.Get_rank(), _group.comm.Get_size()
    if _group.size > 1 and not os.environ.get("GRADC_NUM_THREADS", "").strip():
        # like torchrun's OMP_NUM_THREADS: ranks sharing a node split its cores instead of oversubscribing
        node = world.Split_type(MPI.COMM_TYPE_SHARED)
        threads = max(1, (os.cpu_count() or 1) // node.Get_size())
        node.Free()
        os.environ["GRADC_NUM_THREADS"] = str(threads)
        if not os.environ.get("OPENBLAS_NUM_THREADS", "").strip():
            limit_blas_threads(threads)  # numpy's own BLAS (eager matmuls) would spin on the shared cores


_SET_THREADS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads")


def limit_blas_threads(threads: int) -> None:
    """Set the thread count of every OpenBLAS this process has loaded (numpy's), where it can be found."""
    import ctypes
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line}
    except OSError:
        return
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SET_THREADS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes, fn.restype = [ctypes.c_int], None
                fn(threads)
                break


def _abort_on_exception(exc_type: type, exc: BaseException, tb: Any) -> None:
    """sys.excepthook: print the error, then end every rank of the job (MPI_Abort)."""
    try:
        sys.stdout.flush()
        previous = _group.previous_excepthook
        if previous is None or previous is sys.__excepthook__:
            # one write, so that the ranks' tracebacks do not interleave line by line on mpiexec's stderr
            text = "".join(traceback.format_exception(exc_type, exc, tb))
            os.write(2, f"[gradc.distributed] rank {_group.rank} of {_group.size} raised; aborting the job\n"
                        f"{text}".encode(errors="replace"))
        else:
            sys.stderr.write(f"[gradc.distributed] rank {_group.rank} of {_group.size} raised; aborting the job\n")
            previous(exc_type, exc, tb)
        sys.stderr.flush()
        time.sleep(0.2)  # let mpiexec forward the output before the abort tears the job down
    finally:
        if _group.size > 1:
            mpi().COMM_WORLD.Abort(1)


def destroy_process_group(group: Any = None) -> None:
    """Leave the default group (MPI itself is finalized by mpi4py when the process exits)."""
    if _group.comm is None:
        raise ValueError(NOT_INITIALIZED)
    _group.comm.Free()
    _group.comm, _group.rank, _group.size = None, 0, 1
    if _group.previous_excepthook is not None:
        sys.excepthook = _group.previous_excepthook
        _group.previous_excepthook = None


def get_rank(group: Any = None) -> int:
    comm()
    return _group.rank


def get_world_size(group: Any = None) -> int:
    comm()
    return _group.size


def get_backend(group: Any = None) -> str:
    comm()
    return "mpi"


def barrier(group: Any = None, async_op: bool = False, device_ids: Any = None) -> None:
    comm().Barrier()

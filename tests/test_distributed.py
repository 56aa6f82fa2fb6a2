"""gradc.distributed, DistributedDataParallel and DistributedSampler.

The multi-rank checks run in ONE `mpiexec -n 2` launch (tests/distributed/worker.py, under a timeout so a
hang fails the test instead of CI) and are reported per check; the fault cases each get their own launch,
run side by side. Without mpi4py or mpiexec those tests skip; the rest need no MPI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gradc
from gradc.utils.data.distributed import DistributedSampler

ROOT = Path(__file__).resolve().parent.parent
WORKERS = Path(__file__).resolve().parent / "distributed"
TIMEOUT = 90  # seconds for one launch; a hang fails the test
WORKER_CHECKS = ["collectives_all_reduce", "collectives_broadcast_gather_scatter", "collectives_reduce_gather_objects",
                 "collectives_mismatch_raises_before_communicating", "ddp_broadcasts_rank0_at_construction",
                 "ddp_shape_mismatch_names_the_parameter", "ddp_eager_equals_one_process",
                 "ddp_compiled_equals_one_process", "ddp_compiled_cnn_step_equals_one_process",
                 "ddp_compiled_param_groups_and_frozen_parameters",
                 "ddp_no_sync_accumulation_equals_one_process",
                 "ddp_with_distributed_sampler_equals_one_process",
                 "ddp_unused_parameter_gets_the_same_grad_everywhere"]


def mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"  # pip's mpich installs it next to the interpreter
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def needs_mpi() -> str:
    try:
        import mpi4py  # noqa: F401  (imported only: mpi4py.MPI would make this process an MPI singleton)
    except ImportError as e:
        pytest.skip(f"mpi4py is not installed ({e}): pip install -e \".[distributed]\"")
    launcher = mpiexec()
    if launcher is None:
        pytest.skip("mpiexec not found (pip install -e \".[distributed]\")")
    return launcher


def launch(args: list[str], ranks: int = 2) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "GRADC_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.Popen([needs_mpi(), "-n", str(ranks), sys.executable, *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # mpiexec and its ranks: the session this launch started
        out, err = proc.communicate()
        pytest.fail(f"mpiexec did not finish within {timeout} s (a hang)\nstdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory) -> dict:
    outdir = tmp_path_factory.mktemp("ranks")
    code, out, err = finish(launch([str(WORKERS / "worker.py"), str(outdir)]))
    assert code == 0, f"the worker launch failed ({code})\nstdout:\n{out}\nstderr:\n{err}"
    return {r: json.loads((outdir / f"rank{r}.json").read_text()) for r in range(2)}


@pytest.mark.parametrize("check", WORKER_CHECKS)
def test_two_ranks(worker_results, check):
    for rank, results in worker_results.items():
        assert check in results, f"rank {rank} did not run {check}"
        assert results[check] == "ok", f"rank {rank}:\n{results[check]}"


def test_worker_list_is_complete():
    defined = re.findall(r"^@check\ndef (\w+)", (WORKERS / "worker.py").read_text(), re.MULTILINE)
    assert sorted(defined) == sorted(WORKER_CHECKS)


FAULTS = {  # mode -> what stderr must show
    "raise_while_others_wait": "RuntimeError: boom on rank 1",
    "raise_in_training": "mat1 and mat2 shapes cannot be multiplied (4x7 and 6x4)",
    "mismatched_collective": "rank 0: all_reduce(op=SUM) on float32[3]; rank 1: all_reduce(op=SUM) on float32[4]",
    "mismatched_model": "parameter 'weight' has shape [3, 5] (float32) on rank 0 but shape [4, 5] (float32) on rank 1",
    "bad_rank_argument": "rank=0 was given but MPI says this process is rank 1",
}


def test_a_failing_rank_ends_the_job():
    started = time.monotonic()
    procs = {mode: launch([str(WORKERS / "fault_worker.py"), mode]) for mode in FAULTS}
    try:
        for mode, proc in procs.items():
            code, out, err = finish(proc)
            assert code != 0, f"{mode}: the job exited 0\n{out}\n{err}"
            assert FAULTS[mode] in err, f"{mode}: the error is not on stderr\n{err}"
            assert "finished normally" not in out
    finally:
        for proc in procs.values():  # a failed check leaves no launch behind
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.communicate()
    assert time.monotonic() - started < TIMEOUT


def test_missing_mpi4py_names_the_extra(monkeypatch):
    import gradc.distributed as dist
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    assert not dist.is_available()
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[distributed\]"'):
        dist.init_process_group("mpi")
    assert not dist.is_initialized()


def test_uninitialized_and_bad_backend():
    import gradc.distributed as dist
    msg = "Default process group has not been initialized"
    for call in (dist.get_rank, dist.get_world_size, dist.barrier, lambda: dist.all_reduce(gradc.ones(2)),
                 lambda: gradc.nn.parallel.DistributedDataParallel(gradc.nn.Linear(2, 2))):
        with pytest.raises(ValueError, match=msg):
            call()
    with pytest.raises(ValueError, match="runs on MPI"):
        dist.init_process_group("nccl")


# --- DistributedSampler (no MPI needed: num_replicas and rank given)
def test_sampler_index_assignment_matches_pytorch():
    torch_sampler = pytest.importorskip("torch.utils.data.distributed").DistributedSampler
    for n in (0, 1, 5, 10, 11):
        for world in (1, 2, 3, 4):
            for drop_last in (False, True):
                for rank in range(world):
                    ours = DistributedSampler(range(n), world, rank, shuffle=False, drop_last=drop_last)
                    theirs = torch_sampler(range(n), world, rank, shuffle=False, drop_last=drop_last)
                    assert list(ours) == list(theirs) and len(ours) == len(theirs), (n, world, rank, drop_last)


def test_sampler_shuffle_shards_and_epochs():
    n, world = 11, 3
    samplers = [DistributedSampler(list(range(n)), world, r, shuffle=True, seed=3) for r in range(world)]
    first = [list(s) for s in samplers]
    assert all(len(f) == 4 for f in first)
    assert set(sum(first, [])) == set(range(n))  # padded to 12 by repeating the head of the permutation
    order = np.random.default_rng(3).permutation(n).tolist()
    order += order[:1]
    assert first == [order[r::world] for r in range(world)]
    assert [list(s) for s in samplers] == first  # the same epoch gives the same order
    for s in samplers:
        s.set_epoch(1)
    assert [list(s) for s in samplers] != first
    dropped = [list(DistributedSampler(range(n), world, r, seed=3, drop_last=True)) for r in range(world)]
    assert all(len(d) == 3 for d in dropped) and len(set(sum(dropped, []))) == 9
    with pytest.raises(ValueError, match=r"Invalid rank 3, rank should be in the interval \[0, 2\]"):
        DistributedSampler(range(n), 3, 3)
    with pytest.raises(RuntimeError, match="init_process_group"):
        DistributedSampler(range(n))


# --- the backward hooks DDP builds on
def test_post_accumulate_grad_hook_and_end_of_backward_callback():
    from gradc.autograd import hooks
    w = gradc.ones(3, requires_grad=True)
    seen, ended = [], []

    def hook(t):
        seen.append(t.grad.numpy().copy())
        if not ended:
            hooks.queue_callback(lambda: ended.append(len(seen)))

    handle = w.register_post_accumulate_grad_hook(hook)
    (w * 2).sum().backward()
    (w * 3).sum().backward()
    np.testing.assert_array_equal(seen[0], [2, 2, 2])
    np.testing.assert_array_equal(seen[1], [5, 5, 5])  # called after accumulation
    assert ended == [1]
    handle.remove()
    (w * 2).sum().backward()
    assert len(seen) == 2
    with pytest.raises(RuntimeError, match="non-leaf"):
        (w * 2).register_post_accumulate_grad_hook(hook)


def test_example_script_matches_one_process():
    code, out, err = finish(launch([str(ROOT / "examples" / "train_ddp.py"), "--quick", "--verify"]))
    assert code == 0, f"{out}\n{err}"
    diff = float(re.search(r"max \|DDP - one process\| over the parameters: (\S+)", out).group(1))
    assert diff < 1e-5, out
    assert out.count("epoch ") == 2


def test_hooks_run_last_layer_first():
    """DDP's buckets start in reverse parameter order: backward reaches the leaves last-used first."""
    gradc.manual_seed(0)
    model = gradc.nn.Sequential(gradc.nn.Linear(3, 4), gradc.nn.ReLU(), gradc.nn.Linear(4, 2))
    order = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda t, name=name: order.append(name))
    model(gradc.ones(5, 3)).sum().backward()
    assert order == ["2.bias", "2.weight", "0.bias", "0.weight"]

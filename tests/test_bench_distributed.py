"""`gradc bench --ranks 2`: the data-parallel benchmark's command line, end to end in quick mode.

The quick run launches `mpiexec -n 1` and `mpiexec -n 2` of W6 and W7 (gradc.bench.distributed) under a
subprocess timeout, so a hang fails the test; its numbers are not checked (a shared machine), only that the
report has every workload, path and rank count with efficiencies and the allreduce comparison. Without
mpi4py or mpiexec the command must stop with one line naming the `distributed` extra and exit code 2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gradc import cli, extras
from gradc.bench import distributed, scaling

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 240  # seconds: ~45 s on the 2-core machine under load; a hang fails instead of stalling CI


def test_quick_run_reports_both_workloads_ranks_and_efficiencies(tmp_path):
    if not extras.installed("mpi4py") or distributed.mpiexec() is None:
        pytest.skip('needs mpi4py and mpiexec: pip install -e ".[distributed]"')
    out_json = tmp_path / "ranks.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "gradc.cli", "bench", "--ranks", "2", "--quick", "--json",
                             str(out_json)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the command, mpiexec and the ranks: the session it started
        out, err = proc.communicate()
        pytest.fail(f"gradc bench --ranks 2 --quick did not finish in {TIMEOUT} s\n{out}\n{err}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{out}\n{err}"
    for name in distributed.WORKLOADS:
        for path in distributed.PATHS:
            assert re.search(rf"^{name} +{path} +1 +[\d.]+ \[[\d.]+\]", out, re.M), (name, path, out)
            row = re.search(rf"^{name} +{path} +2 +[\d.]+ \[[\d.]+\] +(\d+)% \[\d+%\] +(\d+)% \[\d+%\] +(\d+)%",
                            out, re.M)  # eff. and eff. interleaved (median [best round]), CPU eff.
            assert row and all(int(e) > 0 for e in row.groups()), (name, path, out)
        assert re.search(rf"^{name} +allreduce of [\d.]+ MB at 2 ranks: .* bare mpi4py Allreduce alone "
                         r"[\d.]+ ms median.*: [\d.]+x \(median of the back-to-back pairs' ratios [\d.]+x\)$",
                         out, re.M), out
        assert re.search(rf"^{name} +[\d.]+ +[\d.]+ +10 Gb/s( +\d+%){{{len(scaling.RANKS)}}}$", out, re.M), out
        assert re.search(rf"^{name} .* shm +\d+%  <- T_ar", out, re.M), out
    assert re.search(r"bare mpi4py Allreduce at 2 ranks, ms median by bytes: 0.004 MB [\d.]+", out), out
    doc = json.loads(out_json.read_text())
    assert sorted(doc["runs"]) == ["1", "2"]
    for ranks, run in doc["runs"].items():
        assert run["ranks"] == int(ranks) and len(run["threads_per_rank"]) == int(ranks)
        assert run["gradc_threads"] == "1" and run["blas_threads"] in (1, None)
        for threads in run["threads_per_rank"]:  # one thread computes; any other (MPI's) stays idle
            busy = sorted(threads.values())
            assert all(s < 0.1 * max(busy[-1], 1) for s in busy[:-1]), threads
        w7 = run["workloads"]["W7"]
        assert w7["grad_bytes"] == 1_199_882 * 4  # PyTorch's MNIST example net, float32


def test_missing_mpi4py_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setattr(extras, "installed", lambda module: module != "mpi4py")
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--ranks", "2"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == 'gradc bench: error: --ranks needs mpi4py: pip install -e ".[distributed]"', err


def test_missing_mpiexec_is_one_line_naming_the_extra(monkeypatch, capsys):
    monkeypatch.setattr(extras, "installed", lambda module: True)
    monkeypatch.setattr(distributed, "mpiexec", lambda: None)
    assert cli.main(["bench", "--ranks", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mpiexec" in err and '".[distributed]"' in err, err


@pytest.mark.parametrize("argv, message", [
    (["--ranks", "1"], "--ranks must be at least 2"),
    (["--ranks", "2", "--workloads", "W1"], "--ranks runs the workloads W6, W7, not W1"),
])
def test_bad_ranks_arguments_are_usage_errors(argv, message, capsys):
    assert cli.main(["bench", *argv]) == 2
    assert message in capsys.readouterr().err

"""The GEMM libraries behind matmul kernels (OpenBLAS, MKL) and the per-shape choice between them
(gradc/codegen/gemm_choice.py): every path against numpy, the calibration file, determinism."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import gradc
from gradc.codegen import gemm_choice, mkl

needs_mkl = pytest.mark.skipif(not mkl.available(), reason="MKL is not installed (pip install gradc[mkl])")

# (m, k, n): odd sizes around the vector widths, a row vector, zero-size dims, and one product large
# enough to be split across threads (column / row blocks: strided views of C)
SHAPES = [(7, 17, 33), (33, 257, 17), (1, 257, 33), (17, 33, 1), (257, 7, 17), (0, 17, 33), (7, 0, 33),
          (96, 300, 160)]


def _matmul(ta: bool, tb: bool):
    def f(a, b):
        return (a.T if ta else a) @ (b.T if tb else b)
    return gradc.compile(f)


@pytest.fixture
def library(request, monkeypatch, tmp_path):
    """GRADC_BLAS set for the test (a fresh kernel cache directory: no entry of another library is reused)."""
    if request.param == "mkl" and not mkl.available():
        pytest.skip("MKL is not installed (pip install gradc[mkl])")
    monkeypatch.setenv("GRADC_BLAS", request.param)
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    gemm_choice.reset()
    yield request.param
    gemm_choice.reset()


@pytest.mark.parametrize("library", ["openblas", "mkl", "auto"], indirect=True)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_every_gemm_path_matches_numpy(library, dtype, ta, tb):
    rng = np.random.default_rng(1)
    f = _matmul(ta, tb)
    for m, k, n in SHAPES:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
        want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
        got = np.asarray(f(a, b))
        assert got.shape == want.shape and got.dtype == dtype
        tol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1, k) ** 0.5, err_msg=f"{m}x{k}x{n}")
        spec = f.lower(a, b)
        if m * n * k >= 4096 and library != "auto":  # large enough for BLAS: the fused text names the library
            assert f"{library}" in spec.as_text("fused").splitlines()[-1]


@needs_mkl
def test_choices_are_measured_once_stored_and_reused(monkeypatch, tmp_path):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRADC_BLAS", raising=False)
    monkeypatch.setattr(gemm_choice, "considers_mkl", lambda: True)
    gemm_choice.reset()
    first = gemm_choice.choose(np.float32, 64, 256, 784, False, False)
    assert first in gemm_choice.PROVIDERS
    assert list(gemm_choice.measured()) == ["f:64x256x784:nn"]
    saved = json.loads((tmp_path / gemm_choice.CHOICES_FILE).read_text())
    assert saved["choices"] == {"f:64x256x784:nn": first} and saved["identity"] == gemm_choice.identity()

    gemm_choice.reset()  # a new process: the file answers, nothing is measured
    monkeypatch.setattr(gemm_choice, "measure", lambda *a: pytest.fail("measured a stored shape again"))
    assert gemm_choice.choose(np.float32, 64, 256, 784, False, False) == first


@needs_mkl
@pytest.mark.parametrize("content", ["{not json", '{"identity": {"cpu": "other"}, "choices": {"x": "mkl"}}',
                                     '{"identity": null, "choices": {"f:1x1x1:nn": "cuda"}}', '[]'])
def test_a_corrupt_or_foreign_choices_file_is_measured_again_and_rewritten(monkeypatch, tmp_path, content):
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRADC_BLAS", raising=False)
    monkeypatch.setattr(gemm_choice, "considers_mkl", lambda: True)
    (tmp_path / gemm_choice.CHOICES_FILE).write_text(content)
    gemm_choice.reset()
    calls = []
    monkeypatch.setattr(gemm_choice, "measure", lambda *a: calls.append(a) or (2.0, 1.0))
    assert gemm_choice.choose(np.float64, 33, 17, 257, True, False) == "mkl"  # MKL measured twice as fast
    assert len(calls) == 1
    saved = json.loads((tmp_path / gemm_choice.CHOICES_FILE).read_text())
    assert saved["choices"] == {"d:33x17x257:tn": "mkl"}
    gemm_choice.reset()


@needs_mkl
@pytest.mark.parametrize("t_mkl, want", [(0.97, "openblas"), (0.91, "openblas"), (0.85, "mkl")])
def test_mkl_is_chosen_only_by_a_clear_margin(monkeypatch, tmp_path, t_mkl, want):
    # a near tie stays on OpenBLAS: MKL's first call in a process costs ~80 ms (its kernel library loads)
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRADC_BLAS", raising=False)
    monkeypatch.setattr(gemm_choice, "considers_mkl", lambda: True)
    gemm_choice.reset()
    monkeypatch.setattr(gemm_choice, "measure", lambda *a: (1.0, t_mkl))
    assert gemm_choice.choose(np.float32, 64, 256, 10, False, True) == want
    gemm_choice.reset()


@needs_mkl
@pytest.mark.parametrize("cpu, considered", [("znver3", False), ("znver5", False), ("sapphirerapids", True),
                                             ("skylake-avx512", True), ("haswell", True)])
def test_mkl_is_not_measured_on_amd_cpus(monkeypatch, tmp_path, cpu, considered):
    from gradc.codegen import jit
    monkeypatch.setenv("GRADC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GRADC_BLAS", raising=False)
    monkeypatch.setattr(jit, "host_cpu", lambda: (cpu, ""))
    gemm_choice.reset()
    monkeypatch.setattr(gemm_choice, "measure", lambda *a: (2.0, 1.0))  # MKL twice as fast, if asked
    assert gemm_choice.considers_mkl() is considered
    assert gemm_choice.choose(np.float32, 64, 256, 784, False, False) == ("mkl" if considered else "openblas")
    monkeypatch.setenv("GRADC_BLAS", "mkl")
    assert gemm_choice.choose(np.float32, 64, 256, 784, False, False) == "mkl"  # forcing works everywhere
    gemm_choice.reset()


def test_gradc_blas_is_checked_and_forces_the_library(monkeypatch):
    monkeypatch.setenv("GRADC_BLAS", "cublas")
    with pytest.raises(ValueError, match="GRADC_BLAS must be auto, openblas or mkl"):
        gemm_choice.choose(np.float32, 8, 8, 8, False, False)
    monkeypatch.setenv("GRADC_BLAS", "openblas")
    assert gemm_choice.choose(np.float32, 64, 256, 784, False, False) == "openblas"
    assert not mkl.available()  # openblas keeps MKL out entirely


@pytest.mark.parametrize("library", ["openblas", "mkl", "auto"], indirect=True)
def test_results_are_bitwise_reproducible_with_one_and_two_threads(library, monkeypatch):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((256, 384)).astype(np.float32)
    b = rng.standard_normal((384, 320)).astype(np.float32)
    results = []
    for threads in ("1", "2", "1"):
        monkeypatch.setenv("GRADC_NUM_THREADS", threads)
        f = gradc.compile(lambda x, y: gradc.tanh(x @ y))
        results.append(np.asarray(f(a, b)).copy())
    # the same library computes each block of C the same way whichever thread claims it
    assert all(np.array_equal(results[0], r) for r in results[1:])
    np.testing.assert_allclose(results[0], np.tanh(a.astype(np.float64) @ b), rtol=1e-4, atol=1e-4)


def test_the_environment_variable_is_part_of_the_kernel_cache_key(monkeypatch):
    from gradc.codegen import options
    monkeypatch.setenv("GRADC_BLAS", "openblas")
    with_openblas = options()
    monkeypatch.setenv("GRADC_BLAS", "mkl")
    assert options() != with_openblas
    assert os.environ["GRADC_BLAS"] == "mkl"


@needs_mkl
def test_a_cached_kernel_that_calls_mkl_loads_in_a_new_process(tmp_path):
    import subprocess
    import sys
    program = (
        "import numpy as np, gradc\n"
        "from gradc.codegen import STATS\n"
        "f = gradc.compile(lambda a, b: a @ b)\n"
        "a = np.arange(64 * 784, dtype=np.float32).reshape(64, 784) % 7\n"
        "b = np.arange(784 * 256, dtype=np.float32).reshape(784, 256) % 5\n"
        "assert np.array_equal(np.asarray(f(a, b)), a @ b)\n"
        "print(STATS['compiled'], STATS['loaded'], f.lower(a, b).as_text('fused').splitlines()[-1])\n")
    env = dict(os.environ, GRADC_CACHE_DIR=str(tmp_path), GRADC_BLAS="mkl")
    runs = [subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr[-2000:] for r in runs]
    first, second = (r.stdout.split() for r in runs)
    assert first[:2] == ["1", "0"] and second[:2] == ["0", "1"]  # compiled, then loaded from disk
    assert second[-1] == "mkl"


def test_perf_map_names_the_compiled_kernels(tmp_path):
    import subprocess
    import sys
    program = ("import os, numpy as np, gradc\n"
               "f = gradc.compile(lambda a, b: gradc.tanh(a @ b))\n"
               "f(np.ones((8, 16), np.float32), np.ones((16, 9), np.float32))\n"
               "print(open(f'/tmp/perf-{os.getpid()}.map').read())\n"
               "os.remove(f'/tmp/perf-{os.getpid()}.map')\n")
    env = dict(os.environ, GRADC_PERF_MAP="1", GRADC_CACHE="0")
    out = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    assert rows and all(len(r) == 3 and r[2].startswith("gradc:") and int(r[0], 16) and int(r[1], 16) for r in rows)
    assert any(r[2].endswith("_entry") for r in rows) and any("_k" in r[2] for r in rows)


@pytest.mark.parametrize("ta,tb", [(True, False), (False, True), (False, False), (True, True)])
def test_a_depth_split_gemm_is_exact_and_the_same_on_one_and_two_threads(ta, tb, monkeypatch):
    """A small-C, long-depth GEMM (a weight gradient) runs as fuse.GEMM_K_PARTS products over depth slices,
    the last one shorter here, summed in a fixed order: the same bits on 1 and 2 threads, float32-exact."""
    from gradc.ir.passes import fuse
    monkeypatch.setattr(fuse, "GEMM_K_SPLIT_MIN_MNK", 1)
    m, n, kk = 24, 17, 4 * 501 + 3
    rng = np.random.default_rng(4)
    a = rng.standard_normal((kk, m) if ta else (m, kk)).astype(np.float32)
    b = rng.standard_normal((n, kk) if tb else (kk, n)).astype(np.float32)
    results = []
    for threads in ("1", "2"):
        monkeypatch.setenv("GRADC_NUM_THREADS", threads)
        f = gradc.compile(lambda x, y: (x.T if ta else x) @ (y.T if tb else y))
        results.append(np.asarray(f(a, b)).copy())
        assert "_gemm_depth" in f.specialize([a, b]).as_text("llvm")
    assert np.array_equal(results[0], results[1])
    want = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b)
    np.testing.assert_allclose(results[0], want, rtol=1e-4, atol=1e-4)

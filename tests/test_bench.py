"""gradc.bench: the shared workloads, the cross-check that refuses a wrong engine, and `gradc bench`."""

import json
import textwrap

import numpy as np
import pytest
from bench_helpers import COLUMNS, TINY, gradc_cli

from gradc.bench import engines, report, runner, workloads
from gradc.bench.workloads import WORKLOADS


class WrongNumpy(engines.NumpyEngine):
    """The numpy engine with its first gradient off by 1%: the cross-check must refuse to time it."""
    name = "numpy-wrong"

    def prepare(self, workload, arrays):
        step = super().prepare(workload, arrays)

        def wrong():
            loss, grads = step()
            return loss, (grads[0] * 1.01, *grads[1:])
        return wrong


def central_differences(f, arrays, index, eps=1e-6):
    x = arrays[index]
    grad = np.zeros_like(x)
    for k in range(x.size):
        for sign in (1, -1):
            shifted = [a.copy() for a in arrays]
            shifted[index].flat[k] += sign * eps
            grad.flat[k] += sign * f(*shifted)[0] / (2 * eps)
    return grad


def test_seed_reference_matches_central_differences_in_float64():
    w = WORKLOADS["W1"]
    arrays = [a.astype(np.float64) for a in w.arrays()]
    _, grads = w.reference(*arrays)
    for g, i in zip(grads, w.argnums()):
        np.testing.assert_allclose(g, central_differences(w.reference, arrays, i), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("wid", list(WORKLOADS))
def test_gradc_interpreter_agrees_with_the_hand_written_reference(wid):
    result = runner.run_one(engines.get("gradc-interp"), WORKLOADS[wid], TINY)
    assert result.status == "ok", result.note
    assert result.max_rel_err < 1e-4 and result.median_us > 0 and result.first_call_ms > 0


def test_w5_as_a_scan_traces_one_loop_and_runs_natively():
    import gradc
    w = WORKLOADS["W5S"]
    fn = gradc.value_and_grad(w.bind(gradc), argnums=w.argnums())
    spec = fn.lower(*w.arrays())
    assert [op.name for op in spec.traced.ops].count("scan") == 1  # not 32 unrolled steps
    result = runner.run_one(engines.get("gradc-native"), w, TINY)
    assert result.status == "ok", result.note
    assert result.max_rel_err < 1e-4


def test_workloads_have_the_sizes_of_the_spec():
    data, params = WORKLOADS["W2"].make()
    assert data[0].shape == (64, 784) and data[1].dtype == np.int64 and params[0].shape == (784, 256)
    assert WORKLOADS["W3"].make()[0][0].shape == (1_000_000,)
    assert [p.shape for p in WORKLOADS["W4"].make()[1][::2]] == [(1024, 1024), (1024, 1024), (1024, 10)]
    xs, h0 = WORKLOADS["W5"].make()[0]
    assert xs.shape == (32, 16, 32) and h0.shape == (16, 64) and not h0.any()
    assert all(a.dtype in (np.float32, np.int64) for w in WORKLOADS.values() for a in w.arrays())
    np.testing.assert_array_equal(WORKLOADS["W2"].arrays()[2], WORKLOADS["W2"].arrays()[2])  # fixed seed


def test_a_wrong_engine_is_reported_as_a_mismatch_without_a_time():
    result = runner.run_one(WrongNumpy(), WORKLOADS["W1"], TINY)
    assert result.status == "mismatch"
    assert "grad 0" in result.note and result.median_us is None and result.min_us is None
    assert 5e-3 < result.max_rel_err < 2e-2  # a 1% error on the largest element


def test_compare_tolerates_float32_rounding_but_not_shape_or_nan_errors():
    ref = (np.float64(1.0), [np.array([1.0, -2.0, 1e-9])])
    assert runner.compare((np.float32(1.0000001), [np.array([1.0, -2.0, 0.0], np.float32)]), ref)[0]
    assert not runner.compare((1.0, [np.array([1.0, -2.0])]), ref)[0]
    assert not runner.compare((1.0, [np.array([1.0, np.nan, 0.0])]), ref)[0]
    assert not runner.compare((1.0, []), ref)[0]


def test_unknown_workload_and_engine_names_are_refused():
    with pytest.raises(ValueError, match="unknown workload 'W10'"):
        workloads.select("W1,W10")
    with pytest.raises(ValueError, match="unknown engine 'tensorflow'"):
        engines.get("tensorflow")


def test_report_derives_speedups_and_percent_of_limit():
    doc = {"meta": {"date": "d", "machine": "m", "threads": 2, "thread_settings": "s", "timing": "t"},
           "limits": {"memory_bandwidth_gbs": 10.0, "memory_test": "x", "blas": "b", "workloads": {"W1": {
               "min_bytes": 180, "bandwidth_bound_us": 0.01, "ctypes_pointers": 7, "ctypes_floor_us": 0.5,
               "bound_us": 0.5}}},
           "results": [runner.Result("W1", "gradc-native", "ok", median_us=2.0, min_us=1.9, first_call_ms=9.0,
                                     max_rel_err=1e-7).to_json(),
                       runner.Result("W1", "jax", "ok", median_us=11.0, min_us=10.0, first_call_ms=900.0,
                                     max_rel_err=1e-7).to_json(),
                       runner.Result("W1", "torch", "mismatch", note="grad 0 differs").to_json(),
                       runner.Result("W1", "autograd", "skipped", note="autograd is not installed").to_json()]}
    report.add_derived(doc)
    rows = {r["engine"]: r for r in doc["results"]}
    assert rows["jax"]["native_speedup"] == pytest.approx(5.5)
    assert rows["gradc-native"]["percent_of_limit"] == pytest.approx(25.0)
    assert rows["torch"]["native_speedup"] is None
    text = report.format_table(doc)
    assert "5.50x" in text and "MISMATCH: grad 0 differs" in text and "SKIPPED: autograd is not installed" in text
    assert "25% of the limit (empty ctypes call" in text and "FAILED" in text
    assert report.any_failed(doc)
    assert "W1 speedup over jax: 5.50 (goal >= 10) NOT met" in text
    assert "W1 time / empty ctypes call: 4.00 (goal <= 2) NOT met" in text


def test_bench_quick_json_has_every_column(tmp_path):
    out = tmp_path / "bench.json"
    proc = gradc_cli("bench", "--quick", "--workloads", "W1", "--engines", "gradc-interp,numpy", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert [(r["workload"], r["engine"]) for r in doc["results"]] == [("W1", "gradc-interp"), ("W1", "numpy")]
    for r in doc["results"]:
        assert set(r) == COLUMNS and r["status"] == "ok" and 0 < r["min_us"] <= r["median_us"]
    assert doc["meta"]["threads"] == 2 and "OPENBLAS_NUM_THREADS=2" in doc["meta"]["thread_settings"]
    lim = doc["limits"]
    assert lim["memory_bandwidth_gbs"] > 0 and lim["workloads"]["W1"]["ctypes_floor_us"] > 0
    assert "threads: 2 for every engine" in proc.stdout and "gradc-interp" in proc.stdout
    assert "bench: 3/3" in proc.stderr  # the progress (plain lines when stderr is not a terminal)


def test_bench_fails_loudly_on_a_wrong_engine(tmp_path):
    wrong = tmp_path / "wrong_engine.py"
    wrong.write_text(textwrap.dedent('''
        from gradc.bench.engines import NumpyEngine

        class Wrong(NumpyEngine):
            name = "wrong"

            def prepare(self, workload, arrays):
                step = super().prepare(workload, arrays)
                return lambda: (step()[0] + 1.0, step()[1])
    '''))
    out = tmp_path / "bench.json"
    proc = gradc_cli("bench", "--quick", "--workloads", "W1", "--engines", f"numpy,{wrong}:Wrong", "--json", str(out))
    assert proc.returncode == 1
    assert "MISMATCH" in proc.stdout and "loss differs from the numpy reference" in proc.stdout
    rows = {r["engine"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["numpy"]["status"] == "ok"
    assert rows["wrong"]["status"] == "mismatch" and rows["wrong"]["median_us"] is None


def test_bench_usage_errors_exit_2_without_traceback():
    for args in (["--engines", "tensorflow"], ["--workloads", "W10"], ["--threads", "0"]):
        proc = gradc_cli("bench", "--quick", *args)
        assert proc.returncode == 2, args
        assert "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_plot_writes_a_png_when_matplotlib_is_installed(tmp_path):
    pytest.importorskip("matplotlib")
    doc = {"meta": {"threads": 2, "date": "d"}, "results": [
        runner.Result("W1", "numpy", "ok", median_us=14.0, min_us=13.0).to_json(),
        runner.Result("W1", "jax", "ok", median_us=11.0, min_us=10.0).to_json(),
        runner.Result("W3", "numpy", "ok", median_us=2e4, min_us=1.9e4).to_json()]}
    path = tmp_path / "bench.png"
    report.plot(doc, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

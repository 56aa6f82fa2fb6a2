"""W6 "train-step" in gradc.bench: the shared definition, its numpy Adam reference, the cross-check that refuses
a wrong training step, the report's target line, and `gradc bench --workloads W6`."""

import json
import textwrap

import numpy as np
import pytest
from bench_helpers import COLUMNS, TINY, gradc_cli

from gradc.bench import engines, report, runner, train_step, workloads
from gradc.bench.train_step import W6

NUMPY_ADAM = '''
import numpy as np
from gradc.bench import train_step
from gradc.bench.engines import Engine


class NumpyAdam(Engine):
    """A float32 numpy training step; `bias_correction=False` is the classic Adam bug."""
    name = "numpy-adam"
    bias_correction = True

    def train_step(self, x, labels, state):
        p = {k: v.copy() for k, v in state.items()}
        m = {k: np.zeros_like(v) for k, v in p.items()}
        v = {k: np.zeros_like(a) for k, a in p.items()}
        t = [0]
        (b1, b2), lr, eps = train_step.BETAS, train_step.LR, train_step.EPS

        def step():
            t[0] += 1
            loss, grads = train_step.loss_and_grads(x, labels, p)
            c1, c2 = (1 - b1 ** t[0], 1 - b2 ** t[0]) if self.bias_correction else (1.0, 1.0)
            for k, g in grads.items():
                g = g.astype(np.float32)
                m[k] = b1 * m[k] + (1 - b1) * g
                v[k] = b2 * v[k] + (1 - b2) * g * g
                p[k] = (p[k] - (lr / c1) * m[k] / (np.sqrt(v[k]) / np.sqrt(c2) + eps)).astype(np.float32)
            return np.float32(loss)
        return train_step.TrainStep(step, lambda: p)


class Wrong(NumpyAdam):
    name = "wrong-adam"
    bias_correction = False
'''


@pytest.fixture(scope="module")
def numpy_adam(tmp_path_factory):
    path = tmp_path_factory.mktemp("engines") / "numpy_adam.py"
    path.write_text(textwrap.dedent(NUMPY_ADAM))
    return path


def test_w6_is_the_w2_model_in_pytorch_layout_and_in_the_default_set():
    x, labels, state = W6.initial()
    (x2, labels2), (w1, b1, w2, b2) = workloads.WORKLOADS["W2"].make()
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(state["0.weight"], w1.T)
    assert [state[k].shape for k in train_step.NAMES] == [(256, 784), (256,), (10, 256), (10,)]
    assert all(a.dtype == np.float32 for a in state.values()) and labels.dtype == np.int64
    loss, grads = train_step.loss_and_grads(x, labels, state)
    ref_loss, ref_grads = workloads.mlp_small_reference(x2, labels2, w1, b1, w2, b2)
    assert loss == pytest.approx(float(ref_loss), rel=1e-6)
    np.testing.assert_allclose(grads["0.weight"], ref_grads[0].T, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(grads["2.bias"], ref_grads[3], rtol=1e-4, atol=1e-7)
    assert [w.id for w in workloads.select(None)] == ["W1", "W2", "W3", "W4", "W5", "W5S", "W6", "W7", "W7G", "W8",
                                                      "W9"]
    assert workloads.select("w6") == [W6] and workloads.by_id("W6") is W6


def test_reference_adam_first_step_moves_every_weight_with_a_gradient_by_lr():
    x, labels, state = W6.initial()
    losses, after = train_step.reference(x, labels, state, 1)
    _, grads = train_step.loss_and_grads(x.astype(np.float64), labels, {k: v.astype(np.float64)
                                                                         for k, v in state.items()})
    g = grads["2.weight"]
    moved = after["2.weight"] - state["2.weight"]
    big = np.abs(g) > 1e-4  # Adam's first step is lr * g / (|g| + eps): -lr * sign(g) where |g| >> eps
    np.testing.assert_allclose(moved[big], -train_step.LR * np.sign(g[big]), rtol=1e-3)
    losses5, _ = train_step.reference(x, labels, state, 5)
    assert losses5[0] == losses[0] and losses5[-1] < losses5[0]  # training lowers the loss


def test_float32_numpy_adam_passes_and_a_missing_bias_correction_is_a_mismatch_without_a_time(numpy_adam):
    good = engines.load_custom(f"{numpy_adam}:NumpyAdam")
    result = runner.run_one(good, W6, TINY)
    assert result.status == "ok", result.note
    assert result.max_rel_err < runner.RTOL / 3 and result.median_us > 0 and result.first_call_ms > 0

    wrong = engines.load_custom(f"{numpy_adam}:Wrong")
    result = runner.run_one(wrong, W6, TINY)
    assert result.status == "mismatch" and result.median_us is None and result.min_us is None
    assert "after 5 steps: parameter" in result.note and "numpy Adam reference" in result.note
    assert result.max_rel_err > 1e-2


def test_check_training_refuses_wrong_counts_names_and_nan():
    ref = ([1.0, 0.9], {"w": np.array([1.0, 2.0])})
    assert runner.check_training([1.0, 0.9], {"w": np.array([1.0, 2.0])}, ref)[0]
    assert not runner.check_training([1.0], {"w": np.array([1.0, 2.0])}, ref)[0]
    assert not runner.check_training([1.0, 0.9], {"v": np.array([1.0, 2.0])}, ref)[0]
    ok, _, where = runner.check_training([1.0, 0.9], {"w": np.array([1.0, np.nan])}, ref)
    assert not ok and where == "parameter w has non-finite values"
    ok, _, where = runner.check_training([1.0, 0.8], {"w": np.array([1.0, 2.0])}, ref)
    assert not ok and where == "the step losses"


def test_engines_without_a_training_step_are_skipped_with_a_note():
    assert {n for n, e in engines.ENGINES.items() if e.trains()} == {"gradc-native", "gradc-eager", "torch",
                                                                    "torch-compile", "jax"}
    assert set(W6.step_engines) == {"gradc-native", "gradc-eager", "torch", "torch-compile", "jax"}

    class NoCompiledStep:  # a training workload whose step table has no torch.compile entry
        id, kind, step_engines = "WX", "train", ("torch",)
    assert engines.get("torch-compile").unsupported(NoCompiledStep()) == "WX has no torch-compile training step"
    assert engines.get("torch").unsupported(NoCompiledStep()) is None
    result = runner.run_one(engines.get("numpy"), W6, TINY)
    assert result.status == "skipped" and "numpy has no training step" in result.note
    assert engines.get("numpy").unsupported(workloads.WORKLOADS["W2"]) is None


def test_report_judges_the_w6_target_against_the_fastest_peer():
    doc = {"meta": {"date": "d", "machine": "m", "threads": 2, "thread_settings": "s", "timing": "t"},
           "results": [runner.Result("W6", "gradc-native", "ok", median_us=500.0, min_us=490.0, first_call_ms=200.0,
                                     max_rel_err=1e-5).to_json(),
                       runner.Result("W6", "torch", "ok", median_us=1000.0, min_us=900.0, first_call_ms=900.0,
                                     max_rel_err=3e-5).to_json(),
                       runner.Result("W6", "jax", "ok", median_us=700.0, min_us=650.0, first_call_ms=900.0,
                                     max_rel_err=4e-5).to_json()]}
    text = report.format_table(report.add_derived(doc))
    assert "W6 training steps/s over the fastest peer (jax): 1.40 (goal >= 1.6) NOT met" in text
    assert "steps/s (median): gradc-native 2,000, torch 1,000, jax 1,429" in text
    assert "W6 train-step" in text
    doc["results"][2]["median_us"] = 850.0
    assert "(jax): 1.70 (goal >= 1.6) met" in report.format_table(report.add_derived(doc))


def test_bench_quick_w6_gradc_native_json_has_every_column(tmp_path):
    out = tmp_path / "bench.json"
    proc = gradc_cli("bench", "--quick", "--workloads", "W6", "--engines", "gradc-native", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    (row,) = doc["results"]
    assert set(row) == COLUMNS and row["workload"] == "W6" and row["engine"] == "gradc-native"
    assert row["status"] == "ok" and 0 < row["min_us"] <= row["median_us"] and row["max_rel_err"] < 1e-3
    assert row["first_call_ms"] > 0 and row["first_call_cached_ms"] > 0 and row["native_speedup"] == 1.0
    lim = doc["limits"]["workloads"]["W6"]
    assert lim["gemm_bound_us"] > 0 and lim["ctypes_pointers"] == 36 and row["percent_of_limit"] > 0
    assert "W6 train-step" in proc.stdout and "steps/s (median): gradc-native" in proc.stdout


def test_bench_w6_fails_loudly_on_a_wrong_engine(numpy_adam, tmp_path):
    out = tmp_path / "bench.json"
    proc = gradc_cli("bench", "--quick", "--workloads", "W6", "--engines",
                     f"{numpy_adam}:NumpyAdam,{numpy_adam}:Wrong,numpy", "--json", str(out))
    assert proc.returncode == 1
    assert "MISMATCH: after 5 steps" in proc.stdout
    rows = {r["engine"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["numpy-adam"]["status"] == "ok" and rows["numpy-adam"]["median_us"] > 0
    assert rows["wrong-adam"]["status"] == "mismatch" and rows["wrong-adam"]["median_us"] is None
    assert rows["numpy"]["status"] == "skipped"


def test_gradc_eager_row_runs_the_torch_rows_loop_and_matches_the_reference(monkeypatch):
    """gradc-eager and torch run ONE plain loop (eager_loop.plain_step): count its calls per library."""
    from gradc.bench import eager_loop
    built = []
    real = eager_loop.plain_step

    def spy(model, loss_fn, opt, inputs, target):
        built.append(type(model).__module__.split(".")[0])
        return real(model, loss_fn, opt, inputs, target)
    monkeypatch.setattr(eager_loop, "plain_step", spy)
    result = runner.run_one(engines.get("gradc-eager"), W6, TINY)
    assert result.status == "ok", result.note
    assert result.max_rel_err < 1e-3 and result.first_call_ms > 0 and result.second_call_ms > 0
    assert built == ["gradc"]
    pytest.importorskip("torch")
    assert runner.run_one(engines.get("torch"), W6, TINY).status == "ok" and built == ["gradc", "torch"]


def test_report_gives_the_eager_rows_ratios_to_torch_and_compile_step():
    rows = [("gradc-native", 400.0), ("gradc-eager", 800.0), ("torch", 1000.0)]
    doc = {"meta": {"date": "d", "machine": "m", "threads": 2, "thread_settings": "s", "timing": "t"},
           "results": [runner.Result("W6", e, "ok", median_us=t, min_us=t, first_call_ms=1.0, second_call_ms=2.0,
                                     max_rel_err=1e-5).to_json() for e, t in rows]}
    text = report.format_table(report.add_derived(doc))
    assert "1.25x torch eager's steps/s, 2.00x compile_step's step time" in text and "2.0 ms" in text


def test_gradc_eager_engine_runs_the_value_and_grad_workloads_eagerly():
    result = runner.run_one(engines.get("gradc-eager"), workloads.WORKLOADS["W2"], TINY)
    assert result.status == "ok" and result.max_rel_err < 1e-3, result.note

"""`gradc bench --model` and `gradc check`: the import hook, the cross-check, the coverage report, bad specs."""

from __future__ import annotations

import io
import os
import sys
import textwrap

import numpy as np
import pytest

from gradc.bench.usermodel import child, coverage, engines, loader
from gradc.bench.usermodel import run as model_run
from gradc.bench.usermodel import spec as specs
from gradc.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = textwrap.dedent('''
    import torch
    import torch.nn as nn
    from torch.nn import functional as F

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(7, 9)
            self.fc2 = nn.Linear(9, 3)

        def forward(self, x):
            return self.fc2(torch.tanh(F.relu(self.fc1(x))))

    def factory():
        return Tiny()

    NOT_A_MODEL = 3

    def not_a_module():
        return 3
''')

UNSUPPORTED = textwrap.dedent('''
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.extra = nn.NoSuchLayer(3)

        def forward(self, x):
            y = self.fc(x)
            z = y.no_such_method(1)
            z = z.another_missing()
            return F.no_such_function(z)
''')

ONLY_TENSOR_METHODS = textwrap.dedent('''
    import torch.nn as nn

    class Methods(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(x).no_such_method(2).second_missing()
''')


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ----------------------------------------------------------------------------- the import hook

def test_gradc_load_maps_torch_inside_the_file_only(tmp_path):
    import gradc
    path = write(tmp_path, "tiny.py", TINY)
    module = loader.load_file(path, "gradc")
    assert module.torch is gradc and module.nn is gradc.nn and module.F is gradc.nn.functional
    model = module.Tiny()
    assert isinstance(model, gradc.nn.Module)
    assert "torch" not in sys.modules or sys.modules["torch"] is not gradc  # the process's torch is untouched


def test_torch_and_gradc_loads_live_side_by_side(tmp_path):
    torch = pytest.importorskip("torch")
    import gradc
    a = loader.load_file(write(tmp_path, "a.py", TINY), "gradc")
    b = loader.load_file(write(tmp_path, "b.py", TINY.replace("Linear(9, 3)", "Linear(9, 5)")), "torch")
    assert a.torch is gradc and b.torch is torch and sys.modules["torch"] is torch
    assert isinstance(b.Tiny(), torch.nn.Module) and not isinstance(a.Tiny(), torch.nn.Module)
    assert a.Tiny().fc2.weight.shape == (3, 9) and tuple(b.Tiny().fc2.weight.shape) == (5, 9)
    assert torch.nn.functional.relu(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]  # torch itself still works


def test_two_loads_of_one_file_share_no_state(tmp_path):
    path = write(tmp_path, "counter.py", "import torch\nCALLS = []\n")
    a, b = loader.load_file(path, "gradc"), loader.load_file(path, "gradc")
    a.CALLS.append(1)
    assert b.CALLS == [] and a is not b


def test_same_weights_give_the_same_forward(tmp_path):
    torch = pytest.importorskip("torch")
    path = write(tmp_path, "tiny.py", TINY)
    tm, _ = loader.build_model(path, "Tiny", "torch", seed=3)
    gm, _ = loader.build_model(path, "factory", "gradc", seed=3)
    engines.load_weights(gm, {k: v.numpy() for k, v in tm.state_dict().items()}, "gradc")
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    import gradc
    np.testing.assert_allclose(gm(gradc.from_numpy(x)).detach().numpy(), tm(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- the cross-check

def _prepared(tmp_path, spec):
    folder = str(tmp_path / "work")
    os.makedirs(folder)
    model_run.prepare(spec, folder)
    return folder


def test_every_gradc_engine_agrees_with_torch(tmp_path):
    pytest.importorskip("torch")
    spec = specs.BenchSpec(f"{write(tmp_path, 'tiny.py', TINY)}:Tiny", ["f32[17,7]"], "i64[17]:3")
    folder = _prepared(tmp_path, spec)
    ref = child.run_engine("torch-eager", spec, folder, quick=True, threads=1, first_only=False)
    assert ref["status"] == "ok", ref
    for engine in ("gradc-eager", "gradc-step", "gradc-interp"):
        got = child.run_engine(engine, spec, folder, quick=True, threads=1, first_only=False)
        assert got["status"] == "ok", got
        np.testing.assert_allclose(got["losses"], ref["losses"], rtol=1e-4)
        assert got["median_us"] > 0 and got["first_step_ms"] > 0
    from gradc import api
    api.set_backend("auto")  # gradc-interp switched this process to the interpreter


def test_a_wrong_engine_is_reported_per_parameter(tmp_path, monkeypatch):
    spec = specs.BenchSpec(f"{write(tmp_path, 'tiny.py', TINY)}:Tiny", ["f32[9,7]"], "i64[9]:3")
    folder = _prepared(tmp_path, spec)
    ref = child.run_engine("gradc-eager", spec, folder, quick=True, threads=1, first_only=False)
    assert ref["status"] == "ok", ref
    right = engines.gradients

    def wrong(*args, **kwargs):
        loss, grads = right(*args, **kwargs)
        grads["fc1.bias"] = grads["fc1.bias"] * 1.01  # one parameter's gradient off by 1%
        return loss, grads
    monkeypatch.setattr(engines, "gradients", wrong)
    got = child.run_engine("gradc-step", spec, folder, quick=True, threads=1, first_only=False)
    assert got["status"] == "mismatch"
    assert "fc1.bias: gradient differs" in got["note"] and "fc2.weight" not in got["note"]
    assert "median_us" not in got  # a disagreeing engine gets no time


def test_check_gradients_names_every_problem():
    ref = (1.0, {"a": np.ones(3), "b": np.ones(2)})
    assert child.check_gradients((1.0, {"a": np.ones(3), "b": np.ones(2)}), ref) == []
    problems = child.check_gradients((1.1, {"a": np.ones(3) * 2, "c": np.ones(1)}), ref)
    assert any(p.startswith("loss") for p in problems)
    assert "a: gradient differs" in " ".join(problems) and "b: no gradient" in problems
    assert any(p.startswith("c:") for p in problems)


# ----------------------------------------------------------------------------- the coverage report

def test_coverage_names_the_missing_calls_and_lines(tmp_path):
    path = write(tmp_path, "odd.py", UNSUPPORTED)
    cov = coverage.check(specs.BenchSpec(f"{path}:Odd", ["f32[4,8]"], "i64[4]:8"))
    found = dict(cov.missing)
    assert found["torch.nn.NoSuchLayer"] == 10
    assert found["torch.nn.functional.no_such_function"] == 16
    assert not cov.runnable
    report = cov.report()
    assert report.startswith("gradc cannot run Odd yet: torch.nn.NoSuchLayer (odd.py:10)")


def test_coverage_finds_every_missing_tensor_method_in_one_run(tmp_path):
    path = write(tmp_path, "methods.py", ONLY_TENSOR_METHODS)
    cov = coverage.check(specs.BenchSpec(f"{path}:Methods", ["f32[4,8]"], "i64[4]:4"))
    assert cov.missing == [("Tensor.no_such_method", 10), ("Tensor.second_missing", 10)]
    from gradc.tensor import Tensor
    assert not hasattr(Tensor, "no_such_method")  # the placeholders are gone again


def test_check_command_exit_codes(tmp_path, capsys):
    good = write(tmp_path, "tiny.py", TINY)
    assert main(["check", f"{good}:Tiny", "--input", "f32[4,7]", "--target", "i64[4]:3"]) == 0
    assert "gradc can run Tiny" in capsys.readouterr().out
    odd = write(tmp_path, "methods.py", ONLY_TENSOR_METHODS)
    assert main(["check", f"{odd}:Methods", "--input", "f32[4,8]", "--target", "i64[4]:4"]) == 2
    assert "Tensor.no_such_method (methods.py:10)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- bad specs

@pytest.mark.parametrize("argv, words", [
    (["--input", "f32[4,7", "--target", "i64[4]:3"], "--input 'f32[4,7': expected DTYPE[DIMS]"),
    (["--input", "f16[4,7]", "--target", "i64[4]:3"], "expected DTYPE[DIMS]"),
    (["--input", "f32[4,7]", "--target", "f32[4]:3"], "a class count (:N) needs i64 targets"),
    (["--input", "f32[4,0]", "--target", "i64[4]:3"], "dimensions must be at least 1"),
    (["--input", "f32[4,7]"], "give both --input and --target"),
    (["--input", "f32[4,7]", "--target", "i64[4]:3", "--loss", "hinge"], "--loss 'hinge': expected one of"),
])
def test_bad_specs_get_one_line_errors(tmp_path, capsys, argv, words):
    good = write(tmp_path, "tiny.py", TINY)
    assert main(["bench", "--model", f"{good}:Tiny", "--quick", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("target, words", [
    ("Missing", "has no 'Missing' (classes defined there: Tiny)"),
    ("NOT_A_MODEL", "is a int, not an nn.Module subclass or a factory"),
    ("not_a_module", "returned a int, not an nn.Module"),
])
def test_a_name_that_is_not_a_model(tmp_path, capsys, target, words):
    good = write(tmp_path, "tiny.py", TINY)
    assert main(["check", f"{good}:{target}", "--input", "f32[4,7]", "--target", "i64[4]:3"]) == 2
    out = capsys.readouterr()
    assert words in out.out + out.err


def test_files_that_are_not_torch_models(tmp_path, capsys):
    plain = write(tmp_path, "plain.py", "import numpy\nclass Net: pass\n")
    assert main(["bench", "--model", f"{plain}:Net", "--input", "f32[2,2]", "--target", "i64[2]:2"]) == 2
    assert "does not import torch" in capsys.readouterr().err
    assert main(["bench", "--model", f"{tmp_path}/nowhere.py:Net"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["bench", "--model", "model_without_name.py"]) == 2
    assert "expected FILE.py:NAME" in capsys.readouterr().err


def test_bench_model_end_to_end(tmp_path):
    good = write(tmp_path, "tiny.py", TINY)
    out, err = io.StringIO(), io.StringIO()
    import argparse
    args = argparse.Namespace(command="bench", model=f"{good}:Tiny", input=["f32[8,7]"], target="i64[8]:3",
                              batch=None, loss="cross_entropy", optimizer="sgd", lr=0.1, seed=1, threads=1,
                              quick=True, engines="gradc-eager,gradc-step", json=str(tmp_path / "out.json"),
                              plot=None)
    assert model_run.bench_command(args, out, err) == 0, out.getvalue() + err.getvalue()
    table = out.getvalue()
    assert "| gradc-eager |" in table and "| gradc-step |" in table and "1.00x" in table
    import json
    doc = json.loads((tmp_path / "out.json").read_text())
    step = next(r for r in doc["results"] if r["engine"] == "gradc-step")
    assert step["status"] == "ok" and step["first_step_cached_ms"] > 0 and doc["meta"]["reference"] == "gradc-eager"


MODELS = os.path.join(ROOT, "examples", "models")


@pytest.mark.parametrize("model, inputs, target, loss", [
    ("mlp.py:MLP", ["f32[16,784]"], "i64[16]:10", "cross_entropy"),
    ("mlp_norm.py:NormMLP", ["f32[4,512]"], "i64[4]:32", "cross_entropy"),
    ("cnn.py:Net", ["f32[2,1,28,28]"], "i64[2]:10", "nll"),
    ("gpt.py:GPT", [], None, "gpt.py:loss"),
    ("lstm.py:LSTMLM", [], None, "lstm.py:loss"),
])
def test_the_example_models_run_on_gradc(model, inputs, target, loss):
    loss = os.path.join(MODELS, loss) if loss.endswith(":loss") else loss
    spec = specs.BenchSpec(os.path.join(MODELS, model), inputs, target, batch=2 if not inputs else None, loss=loss)
    cov = coverage.check(spec)
    assert cov.ok, cov.report()

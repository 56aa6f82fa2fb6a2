"""`gradc ir FILE.py:FUNCTION --arg ... [--grad ...] --stage ...`: every stage, and clear usage errors."""

import os
import subprocess
import sys
import textwrap

import pytest

from gradc import api, cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = textwrap.dedent('''
    import gradc

    def mlp(x, labels, w, b):
        return gradc.nn.functional.cross_entropy(gradc.relu(x @ w + b), labels)

    def two_outputs(x):
        return gradc.tanh(x), x.sum()

    not_a_function = 3
''')
MLP_ARGS = ["--arg", "f32[4,6]", "--arg", "i64[4]", "--arg", "f32[6,3]", "--arg", "f32[3]"]


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(MODEL)
    return str(path)


def run_ir(capsys, *argv):
    code = cli.main(["ir", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_stage_ir_prints_the_traced_function(model, capsys):
    code, out, err = run_ir(capsys, f"{model}:mlp", *MLP_ARGS)
    assert code == 0, err
    assert out.startswith("func @mlp(%x: f32[4,6], %labels: i64[4], %w: f32[6,3], %b: f32[3]) -> f32[] {")
    assert "matmul %x, %w : f32[4,3]" in out and "relu" in out and "gather" in out


def test_stage_ad_prints_the_joint_function_with_the_gradients(model, capsys):
    code, out, err = run_ir(capsys, f"{model}:mlp", *MLP_ARGS, "--grad", "2,3", "--stage", "ad")
    assert code == 0, err
    head = out.splitlines()[0]
    assert head.startswith("func @mlp_grad(") and head.endswith("-> (f32[], f32[6,3], f32[3]) {")


def test_stage_mlir_without_and_with_grad(model, capsys):
    code, out, _ = run_ir(capsys, f"{model}:mlp", *MLP_ARGS, "--stage", "mlir")
    assert code == 0 and out.startswith("func.func @mlp(") and "linalg.matmul" in out
    code, out, _ = run_ir(capsys, f"{model}:mlp", *MLP_ARGS, "--grad", "2", "--stage", "mlir")
    assert code == 0 and "-> (tensor<f32>, tensor<6x3xf32>) {" in out.splitlines()[0]


def test_multiple_outputs_and_scalar_specs(model, capsys):
    code, out, err = run_ir(capsys, f"{model}:two_outputs", "--arg", "f64[]")
    assert code == 0, err
    assert out.splitlines()[0] == "func @two_outputs(%x: f64[]) -> (f64[], f64[]) {"


@pytest.mark.parametrize("stage", ["fused", "llvm", "asm"])
def test_native_stages(model, capsys, stage):
    code, out, err = run_ir(capsys, f"{model}:mlp", *MLP_ARGS, "--grad", "2,3", "--stage", stage)
    if not api.native_available():
        assert code == 1 and "native compiler" in err
        pytest.skip("gradc's native compiler is not available")
    assert code == 0, err
    assert out.strip()
    if stage == "llvm":
        assert "define" in out


@pytest.mark.parametrize("target, argv, message", [
    ("{model}", [], "expected FILE.py:FUNCTION"),
    ("{model}:", [], "expected FILE.py:FUNCTION"),
    ("{dir}/missing.py:mlp", [], "no such file"),
    ("{model}:nope", [], "has no 'nope' (functions there: mlp, two_outputs)"),
    ("{model}:not_a_function", ["--arg", "f32[2]"], "not a function"),
    ("{model}:mlp", ["--arg", "f32[4,6]"], "mlp takes 4 positional argument(s), got 1 --arg"),
    ("{model}:mlp", ["--arg", "f32(4,6)"], "bad --arg 'f32(4,6)'"),
    ("{model}:mlp", ["--arg", "x32[4]"], "bad --arg 'x32[4]'"),
    ("{model}:mlp", ["--arg", "f32[4,a]"], "dimensions must be non-negative integers"),
    ("{model}:mlp", MLP_ARGS + ["--grad", "w"], "bad --grad 'w'"),
    ("{model}:mlp", MLP_ARGS + ["--stage", "ad"], "give --grad"),
])
def test_usage_errors_exit_2_with_one_line(model, tmp_path, capsys, target, argv, message):
    code, out, err = run_ir(capsys, target.format(model=model, dir=tmp_path), *argv)
    assert code == 2 and out == ""
    assert message in err and err.startswith("gradc ir: error:") and err.count("\n") == 1


def test_a_file_that_fails_to_import_is_a_usage_error(tmp_path, capsys):
    bad = tmp_path / "broken.py"
    bad.write_text("def f(x):\n    return x +\n")
    code, _, err = run_ir(capsys, f"{bad}:f", "--arg", "f32[2]")
    assert code == 2 and "failed to import: SyntaxError" in err


def test_a_tracing_error_is_reported_without_a_traceback(model, capsys):
    code, _, err = run_ir(capsys, f"{model}:mlp", "--arg", "f32[4,6]", "--arg", "i64[4]", "--arg", "f32[5,3]",
                          "--arg", "f32[3]")
    assert code == 1 and err.startswith("gradc ir: error:") and "Traceback" not in err


def test_the_command_line_entry_point(model):
    env = dict(os.environ, PYTHONPATH=ROOT)
    ok = subprocess.run([sys.executable, "-m", "gradc.cli", "ir", f"{model}:mlp", *MLP_ARGS, "--stage", "ir"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0 and ok.stdout.startswith("func @mlp(")
    bad = subprocess.run([sys.executable, "-m", "gradc.cli", "ir", "nowhere.py:f", "--arg", "f32[2]"],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "no such file: nowhere.py" in bad.stderr and "Traceback" not in bad.stderr

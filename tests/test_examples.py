"""The examples' handling of missing optional peers, in process (fast; tests/test_readme.py runs them for real
in fresh venvs without and with PyTorch): one line naming the extra, exit code 2, no traceback."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from gradc import extras

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    """Import examples/NAME.py as the script would run it: with examples/ on the path for its shared helpers."""
    if str(EXAMPLES) not in sys.path:
        sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    """without(*modules): extras.installed() reports these peers missing and every other one installed (the
    examples check their peers before importing any, so this holds in an environment without them too)."""
    def hide(*modules: str) -> None:
        monkeypatch.setattr(extras, "installed", lambda m: m not in modules)
    return hide


def test_require_names_the_extra(without, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    without("torch")
    with pytest.raises(SystemExit) as exc:
        extras.require("torch", "--engine torch", prog="x.py")
    assert exc.value.code == 2
    assert capsys.readouterr().err == 'x.py: error: --engine torch needs PyTorch: pip install -e ".[compare]"\n'
    monkeypatch.setattr(extras, "installed", lambda module: True)
    assert extras.require("torch", "--engine torch") is None and capsys.readouterr().err == ""


@pytest.mark.parametrize("argv,module,extra", [(["--engine", "torch"], "torch", "compare"),
                                               (["--engine", "both"], "torch", "compare"),
                                               ([], "sklearn", "examples"),
                                               (["--plot", "x.png"], "matplotlib", "examples")])
def test_train_digits_missing_peer(argv, module, extra, without, capsys: pytest.CaptureFixture) -> None:
    without(module)
    with pytest.raises(SystemExit) as exc:
        load("train_digits").main(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and f'pip install -e ".[{extra}]"' in err, err


def test_train_digits_plot_without_torch_plots_gradc(without, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("sklearn")  # this one trains and plots for real
    pytest.importorskip("matplotlib")
    without("torch")
    path = tmp_path / "curves.png"
    code = load("train_digits").main(["--plot", str(path), "--epochs", "2", "--no-bar"])
    out = capsys.readouterr().out
    assert code == 1  # 2 epochs stay below the 95% bar: the exit code says so
    assert "the PyTorch curve needs gradc[compare]" in out and "[torch]" not in out and path.stat().st_size > 0


def test_bench_train_step_without_peers(without, capsys: pytest.CaptureFixture) -> None:
    without("torch", "jax")
    assert load("bench_train_step").main(["--quick"]) == 2
    out, err = capsys.readouterr()
    assert 'torch          skipped: PyTorch is not installed (pip install -e ".[compare]")' in out
    assert "gradc-native" in out and "check ok" in out
    assert err.startswith("bench_train_step.py: error: no peer to compare against") and len(err.splitlines()) == 1

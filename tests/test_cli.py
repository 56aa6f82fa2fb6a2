"""The gradc command."""

import io
import subprocess
import sys

from gradc import cli


def test_demo_prints_tutorial_values_and_ir():
    out = io.StringIO()
    assert cli.demo(out) == 0
    text = out.getvalue()
    assert "loss = tensor(1.3475, grad_fn=<BinaryCrossEntropyWithLogitsBackward0>)" in text
    assert "[0.3133, 0.0832, 0.2035]" in text
    assert "func @tutorial_loss(" in text and "func @tutorial_loss_grad(" in text
    assert "time per value_and_grad call" in text


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "gradc.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "demo" in result.stdout

"""The README check (marker `readme`, runs in CI): every command the README shows works on a fresh machine.

Every fenced shell command of README.md and every command line of an `examples/*.py` docstring is looked up
in CHECKS (a command in no entry fails `test_every_documented_command_has_a_check`: add one) and run in a
FRESH virtual environment on a clean copy of the repository (`git archive` of the tracked files, with their
uncommitted edits), from the same package sources as CI, asserting its exit code and the output the README
promises. A command's `pip install ... &&` part is run for real: it is its environment (one per distinct
install line, built once per session). Each entry gives its quick form for CI; GRADC_README_FULL=1 runs the
documented forms instead. The README's ```python snippets run in the `pip install -e .` environment, and a
comment `# EXPR: VALUE` or `# EXPR rows: VALUE` in them is a claim that is checked to the digits shown.
MISSING_PEER_CHECKS run examples where an optional peer is missing: one line naming the extra, exit code 2.

Adding a command to the README or to an example's docstring: add one line to CHECKS.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FULL = os.environ.get("GRADC_README_FULL", "") not in ("", "0")
TIMEOUT_S = 3600 if FULL else 900


@dataclass(frozen=True)
class Check:
    """How one documented command is checked."""
    expect: tuple[str, ...]  # regexes that must all be found in its stdout + stderr
    env: str | None = None  # its environment's install line; None: the command's own `pip install ... &&` part
    quick: str | None = None  # what CI runs in its place (None: the command as documented)
    full: str | None = None  # what GRADC_README_FULL=1 runs (None: the command as documented)


def C(*expect: str, env: str | None = None, quick: str | None = None, full: str | None = None) -> Check:
    return Check(tuple(expect), env, quick, full)


BASE = "pip install -e ."
EXAMPLES = 'pip install -e ".[examples]"'
EXAMPLES_TORCH = 'pip install -e ".[examples,compare]"'
ACCURACY = r"final test accuracy (9[5-9]|100)\.\d%"  # the script also exits 1 below 95%
CNN_ACCURACY = r"final test accuracy (9\d|100)\.\d%"  # --quick trains 3 epochs (~95%); the full run reaches ~99%
DISTRIBUTED = 'pip install -e ".[distributed]"'
GPT_TRAINED = r"train loss [\d.]+ -> [\d.]+, val loss [\d.]+"
DDP_EPOCH = r"epoch 1: loss [\d.]+ +accuracy [\d.]+ +\d+ samples/s on 2 rank\(s\)"
# The README's test command: the install runs for real; the suite is not run from inside itself. Collecting
# all of it imports every test module (a test dependency missing from the `test` extra fails collection);
# test_tutorial.py then runs the README's tutorial under the installed pytest. Full variant: the whole suite
# except this check.
PYTEST_QUICK = "python -m pytest --collect-only && python -m pytest tests/test_tutorial.py"

# documented command -> its check. ONE LINE PER COMMAND.
CHECKS: dict[str, Check] = {
    "pip install -e . && gradc demo": C(r"w\.grad =", r"time per value_and_grad call: native"),
    'pip install -e ".[test]" && python -m pytest': C(r"\d+ tests collected", r"\d+ passed", quick=PYTEST_QUICK,
                                                      full='python -m pytest -m "not readme"'),
    'pip install -e ".[examples,compare]" && python examples/train_digits.py --engine both --plot digits.png':
        C(r"\[torch\]", ACCURACY, r"gradc compile_step: [\d.]+x PyTorch eager", "saved digits.png"),
    "python examples/train_digits.py": C(r"\[gradc\]", ACCURACY, env=EXAMPLES),
    "python examples/train_digits.py --plot curves.png": C(r"the PyTorch curve needs gradc\[compare\]", ACCURACY,
                                                           "saved curves.png", env=EXAMPLES),
    "python examples/train_digits.py --engine torch": C(r"\[torch\]", ACCURACY, env=EXAMPLES_TORCH),
    "python examples/bench_train_step.py [--repeats 7] [--steps 300] [--quick]":
        C(r"gradc-native .* check ok", r"torch .* check ok", r"jax .* check ok", r"gradc / fastest peer \(\w+\)",
          env=EXAMPLES_TORCH, quick="python examples/bench_train_step.py --quick",
          full="python examples/bench_train_step.py"),
    "python examples/train_digits_cnn.py": C(r"\[gradc\]", CNN_ACCURACY, env=EXAMPLES,
                                             quick="python examples/train_digits_cnn.py --quick"),
    "python examples/train_digits_cnn.py --quick": C(r"\[gradc\]", CNN_ACCURACY, env=EXAMPLES),
    "python examples/train_digits_cnn.py --engine eager":
        C(r"\[eager\]", CNN_ACCURACY, env=EXAMPLES, quick="python examples/train_digits_cnn.py --engine eager --quick"),
    "python examples/train_digits_cnn.py --engine torch":
        C(r"\[torch\]", CNN_ACCURACY, env=EXAMPLES_TORCH,
          quick="python examples/train_digits_cnn.py --engine torch --quick"),
    "python examples/train_digits_cnn.py --engine both --plot curves.png":
        C(r"\[gradc\]", r"\[torch\]", r"gradc compile_step: [\d.]+x PyTorch eager", "saved curves.png",
          env=EXAMPLES_TORCH, quick="python examples/train_digits_cnn.py --engine both --plot curves.png --quick"),
    "python examples/train_char_gpt.py": C(r"\[gradc\]", GPT_TRAINED, r"sample:", env=BASE,
                                           quick="python examples/train_char_gpt.py --quick"),
    "python examples/train_char_gpt.py --quick": C(r"\[gradc\]", GPT_TRAINED, env=BASE),
    "python examples/train_char_gpt.py --engine both --plot gpt.png":
        C(r"\[torch\]", r"gradc compile_step: [\d.]+x PyTorch eager", "saved gpt.png", env=EXAMPLES_TORCH,
          quick="python examples/train_char_gpt.py --engine both --plot gpt.png --quick"),
    "mpiexec -n 2 python examples/train_ddp.py --quick": C(DDP_EPOCH, env=DISTRIBUTED),
    "gradc bench --ranks 2": C(r"W7 +compiled-buffer +2 +[\d.]+ \[[\d.]+\] +\d+% \[\d+%\] +\d+% \[\d+%\]",
                               r"W6 +eager +2 ", r"W7 +allreduce of 4\.80 MB at 2 ranks: .*bare mpi4py Allreduce",
                               r"W7 .* shm +\d+%  <- T_ar", env=DISTRIBUTED, quick="gradc bench --ranks 2 --quick"),
    "gradc bench --model examples/models/mlp.py:MLP --input 'f32[64,784]' --target 'i64[64]:10'":
        C(r"\| gradc-step \| [\d.,]+ (us|ms) \|", r"cross-check: loss and every gradient", env=BASE,
          quick="gradc bench --model examples/models/mlp.py:MLP --input 'f32[64,784]' --target 'i64[64]:10' "
                "--quick --engines gradc-eager,gradc-step"),
    "gradc check examples/models/cnn.py:Net --input 'f32[64,1,28,28]' --target 'i64[64]:10' --loss nll":
        C(r"gradc can run Net: every torch name it uses exists in gradc", env=BASE),
    "mpiexec -n 2 python examples/train_ddp.py --eager --verify":
        C(DDP_EPOCH, r"max \|DDP - one process\| over the parameters: \d\.\d+e-(0[6-9]|[1-9]\d)", env=DISTRIBUTED,
          quick="mpiexec -n 2 python examples/train_ddp.py --eager --verify --quick"),
    # several machines cannot be had here: the same hostfile mechanism, with this machine as the one host
    "mpiexec -n 8 -hostfile hosts python examples/train_ddp.py":
        C(DDP_EPOCH, env=DISTRIBUTED,
          quick="printf 'localhost:2\\n' > hosts && mpiexec -n 2 -hostfile hosts python examples/train_ddp.py --quick",
          full="printf 'localhost:2\\n' > hosts && mpiexec -n 2 -hostfile hosts python examples/train_ddp.py"),
}

# (environment, command, what the one line on stderr says): a missing peer -> that line, exit code 2
COMPARE_HINT, EXAMPLES_HINT = r'pip install -e "\.\[compare\]"', r'pip install -e "\.\[examples\]"'
MISSING_PEER_CHECKS: list[tuple[str, str, str]] = [
    (EXAMPLES, "python examples/train_digits.py --engine torch", "--engine torch needs PyTorch: " + COMPARE_HINT),
    (BASE, "python examples/train_digits.py", "needs scikit-learn: " + EXAMPLES_HINT),
    (BASE, "python examples/bench_train_step.py --quick", "no peer to compare against: .*" + COMPARE_HINT),
]

# a ```python snippet (by its first line) -> the install line of the environment it runs in (default: BASE)
SNIPPET_ENVS: dict[str, str] = {}

SHELL_LANGS = {"bash", "sh", "shell", "console"}
COMMAND_WORDS = {"python", "python3", "pip", "gradc", "mpiexec", "mpirun"}  # what starts a docstring command


# ----------------------------------------------------------------------------- extraction


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every ``` block of a markdown text."""
    blocks = re.finditer(r"^```([^\n`]*)\n(.*?)^```", text, re.M | re.S)
    return [(m.group(1).strip().lower(), m.group(2)) for m in blocks]


def strip_comment(line: str) -> str:
    """A shell line without its trailing `# comment` (a # outside quotes, after a blank)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def shell_lines(body: str) -> list[str]:
    """The commands of a shell block: comments and `$ ` prompts dropped, backslash continuations joined."""
    out, pending = [], ""
    for raw in body.splitlines():
        line = strip_comment(raw.strip().removeprefix("$ "))
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            out.append(line)
    return out


def docstring_commands(source: str) -> list[str]:
    """Command lines of a module docstring: indented lines whose first word is in COMMAND_WORDS."""
    doc = ast.get_docstring(ast.parse(source), clean=False) or ""  # a module docstring: not indented
    lines = [strip_comment(line.strip()) for line in doc.splitlines() if line.startswith("    ")]
    return [line for line in lines if line.split(" ", 1)[0] in COMMAND_WORDS]


def documented_commands(root: Path = ROOT) -> dict[str, str]:
    """Every documented command -> where it is shown (README.md first, then the examples)."""
    found: dict[str, str] = {}
    for lang, body in fenced_blocks((root / "README.md").read_text()):
        if lang in SHELL_LANGS:
            for line in shell_lines(body):
                found.setdefault(line, "README.md")
    for path in sorted((root / "examples").glob("*.py")):
        for line in docstring_commands(path.read_text()):
            found.setdefault(line, f"examples/{path.name}")
    return found


def split_install(command: str) -> tuple[str | None, str]:
    """'pip install X && run' -> ('pip install X', 'run'); a command without an install part -> (None, command)."""
    head, sep, rest = command.partition(" && ")
    return (head.strip(), rest.strip()) if sep and head.startswith("pip install") else (None, command)


CLAIM = re.compile(r"#\s*(?P<expr>[A-Za-z_][\w.]*)(?P<rows> rows)?:\s*"
                   r"(?P<value>\[[-\d.,\s]*\]|-?[\d.]+(?:e-?\d+)?)\s*$")


def snippet_claims(code: str) -> list[tuple[str, bool, str]]:
    """(expression, every row?, value as written) of each `# EXPR: VALUE` / `# EXPR rows: VALUE` comment."""
    return [(m["expr"], bool(m["rows"]), m["value"]) for line in code.splitlines() if (m := CLAIM.search(line))]


def claim_holds(written: str, rows: bool, value: object) -> bool:
    """`value` shows as `written` to the digits written (each row of it, for a `rows` claim)."""
    want, got = np.array(json.loads(written), dtype=float), np.array(value, dtype=float)
    if rows and got.ndim != 2 or not rows and got.size != want.size:
        return False
    numbers = re.findall(r"-?[\d.]+(?:e-?\d+)?", written)  # each to its own digits
    tol = np.array([0.5 * 10.0 ** -len(n.split(".")[1].split("e")[0]) if "." in n else 0.5 for n in numbers])
    return bool(np.all(np.abs((got if rows else got.reshape(want.shape)) - want) <= tol.reshape(want.shape) + 1e-12))


def python_snippets(root: Path = ROOT) -> list[str]:
    return [body for lang, body in fenced_blocks((root / "README.md").read_text()) if lang in ("python", "py")]


# ----------------------------------------------------------------------------- tests of the extraction (fast)


def test_extraction() -> None:
    text = ("a\n```bash\npip install -e . && gradc demo   # run it\n$ python x.py --a 'b # c' \\\n  --d\n# note\n```\n"
            "```python\nx = 1  # x: 1\n```\n")
    assert fenced_blocks(text)[0][0] == "bash"
    assert shell_lines(fenced_blocks(text)[0][1]) == ["pip install -e . && gradc demo", "python x.py --a 'b # c' --d"]
    assert split_install("pip install -e . && gradc demo") == ("pip install -e .", "gradc demo")
    assert split_install("python a.py && python b.py") == (None, "python a.py && python b.py")
    doc = '"""Title.\n\n    python examples/a.py --x   # why\n    not a command\nprose python b.py\n"""\n'
    assert docstring_commands(doc) == ["python examples/a.py --x"]
    assert snippet_claims("loss.backward()   # w.grad rows: [0.3133, 0.0832]\ny = 2  # y: 2.50\n# the IR") == [
        ("w.grad", True, "[0.3133, 0.0832]"), ("y", False, "2.50")]
    assert claim_holds("[0.3133, 0.08]", True, [[0.31334, 0.0849]] * 5)
    assert not claim_holds("[0.3133, 0.08]", True, [[0.31334, 0.0851]] * 5)
    assert not claim_holds("[0.3133, 0.08]", True, [0.3133, 0.08])  # rows of a matrix
    assert claim_holds("2.50", False, 2.504) and not claim_holds("2.50", False, 2.506)


def unchecked_commands(root: Path = ROOT) -> list[str]:
    return [f"{where}: {cmd}" for cmd, where in documented_commands(root).items() if cmd not in CHECKS]


def test_a_new_command_without_a_check_is_reported(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("```bash\npip install -e . && gradc demo\ngradc bench --model x  # new\n```\n")
    (tmp_path / "examples").mkdir()
    (tmp_path / "examples" / "new.py").write_text('"""New.\n\n    python examples/new.py --quick\n"""\n')
    assert unchecked_commands(tmp_path) == ["README.md: gradc bench --model x",
                                            "examples/new.py: python examples/new.py --quick"]


def test_every_documented_command_has_a_check() -> None:
    missing = unchecked_commands()
    assert not missing, ("commands shown in the docs that the README check does not know; add one line each to "
                         "CHECKS in tests/test_readme.py:\n  " + "\n  ".join(missing))


def test_every_check_is_documented() -> None:
    stale = [cmd for cmd in CHECKS if cmd not in documented_commands()]
    assert not stale, "CHECKS entries for commands no longer shown in the docs; remove them:\n  " + "\n  ".join(stale)
    for cmd, check in CHECKS.items():
        assert (split_install(cmd)[0] is None) != (check.env is None), (
            f"{cmd!r}: give env= exactly when the command has no `pip install ... &&` part of its own")


def test_readme_ir_samples_parse_back_to_themselves() -> None:
    """The README's untyped blocks are IR samples ('deterministic and parseable'): text -> parse -> print."""
    from gradc.ir.parser import parse_function
    from gradc.ir.printer import print_function
    from gradc.ir.verify import verify
    samples = [body for lang, body in fenced_blocks((ROOT / "README.md").read_text()) if lang in ("", "text")]
    assert samples
    for body in samples:
        assert body.startswith("func @"), f"an untyped README block that is not IR; give it a check:\n{body}"
        fn = parse_function(body)
        verify(fn)
        assert print_function(fn).strip() == body.strip()


# ----------------------------------------------------------------------------- fresh environments


def clean_env(venv: Path, cache: Path) -> dict[str, str]:
    """The calling environment without anything that would leak this checkout or its interpreter in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTHON", "PYTEST", "GRADC_", "VIRTUAL_ENV", "CONDA", "PYENV_VERSION"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv),
               GRADC_CACHE_DIR=str(cache), MPLBACKEND="Agg", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    def tail(self, n: int = 4000) -> str:
        return (f"exit code {self.code} after {self.seconds:.0f} s\n--- stdout\n{self.out[-n:]}\n"
                f"--- stderr\n{self.err[-n:]}")


class Environment:
    """A fresh venv with a clean copy of the repository in which one install line was run."""

    def __init__(self, base: Path, install: str, archive: bytes) -> None:
        self.install = install
        self.copy, self.venv = base / "repo", base / "venv"
        start = time.perf_counter()
        self.copy.mkdir(parents=True)
        subprocess.run(["tar", "-x", "-C", str(self.copy)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(self.venv)], check=True, capture_output=True)
        self.env = clean_env(self.venv, base / "gradc-cache")
        self.built = self.run(install)
        self.built.seconds = time.perf_counter() - start  # venv + copy + install

    def run(self, command: str) -> Run:
        start = time.perf_counter()
        p = subprocess.run(["bash", "-c", command], cwd=self.copy, env=self.env, capture_output=True, text=True,
                           timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)
        return Run(p.returncode, p.stdout, p.stderr, time.perf_counter() - start)


class Environments:
    def __init__(self, base: Path) -> None:
        self.base, self.made = base, {}
        # the tracked files with their uncommitted edits (a stash commit, no ref touched), or HEAD; once per session
        tree = subprocess.run(["git", "stash", "create"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        self.archive = subprocess.run(["git", "archive", tree or "HEAD"], cwd=ROOT, capture_output=True,
                                      check=True).stdout

    def __call__(self, install: str) -> Environment:
        if install not in self.made:
            self.made[install] = Environment(self.base / f"env{len(self.made)}", install, self.archive)
        env = self.made[install]
        if env.built.code:
            pytest.fail(f"`{install}` failed in a fresh venv:\n{env.built.tail()}")
        return env


@pytest.fixture(scope="module")
def environments(tmp_path_factory: pytest.TempPathFactory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("the README check copies the repository with git: not a git checkout")
    base = tmp_path_factory.mktemp("readme")
    envs = Environments(base)
    yield envs
    for install, env in envs.made.items():
        print(f"\n[readme] environment `{install}`: {env.built.seconds:.1f} s (venv + copy + install)")
    shutil.rmtree(base, ignore_errors=True)  # each environment with PyTorch is ~2 GB


def check_output(run: Run, expect: tuple[str, ...], what: str) -> None:
    text = run.out + run.err
    missing = [e for e in expect if not re.search(e, text)]
    assert not missing, f"{what}: output lacks {missing}\n{run.tail()}"


@pytest.mark.readme
@pytest.mark.parametrize("command", list(CHECKS))
def test_documented_command(command: str, environments: Environments) -> None:
    check = CHECKS[command]
    install, documented = split_install(command)
    env = environments(install or check.env)
    form = (check.full if FULL else check.quick) or documented
    run = env.run(form)
    print(f"\n[readme] {form}: {run.seconds:.1f} s; last line: {(run.out.strip().splitlines() or [''])[-1]}")
    assert run.code == 0, f"`{form}` (for `{command}`) failed in `{env.install}`:\n{run.tail()}"
    assert "Traceback" not in run.err, run.tail()
    check_output(run, check.expect, form)


@pytest.mark.readme
@pytest.mark.parametrize("install,command,message", MISSING_PEER_CHECKS)
def test_missing_peer_is_one_line_and_exit_code_2(install: str, command: str, message: str,
                                                  environments: Environments) -> None:
    run = environments(install).run(command)
    print(f"\n[readme] {command} in `{install}`: {run.seconds:.1f} s")
    assert run.code == 2, run.tail()
    assert "Traceback" not in run.out + run.err, run.tail()
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), run.tail()


DRIVER = """
import json, sys
code, exprs = json.load(open(sys.argv[1]))
ns = {"__name__": "__main__"}
exec(compile(code, "README.md python snippet", "exec"), ns)
values = []
for expr in exprs:
    v = eval(expr, ns)
    v = v.detach().numpy() if hasattr(v, "detach") else v
    values.append(__import__("numpy").asarray(v, dtype=float).tolist())
print("CLAIMS=" + json.dumps(values))
"""


@pytest.mark.readme
@pytest.mark.parametrize("index", range(len(python_snippets())))
def test_readme_python_snippet(index: int, environments: Environments) -> None:
    code = python_snippets()[index]
    env = environments(SNIPPET_ENVS.get(code.splitlines()[0], BASE))
    claims = snippet_claims(code)
    (env.copy / "snippet.json").write_text(json.dumps([code, [expr for expr, _, _ in claims]]))
    (env.copy / "snippet_driver.py").write_text(DRIVER)
    run = env.run("python snippet_driver.py snippet.json")
    print(f"\n[readme] python snippet {index}: {run.seconds:.1f} s, {len(claims)} claims")
    assert run.code == 0, run.tail()
    values = json.loads(run.out.rsplit("CLAIMS=", 1)[1])
    for (expr, rows, written), value in zip(claims, values):
        assert claim_holds(written, rows, value), f"README says {expr}{' rows' if rows else ''}: {written}; got {value}"

"""The shape of the code: one option schema, one scale range per use, typed errors, import rules."""

from __future__ import annotations

import ast
import pickle
import re
import shlex
import subprocess
import sys
from dataclasses import fields

import pytest
import typer
from helpers import REPO
from PIL import Image

from drcn_plugin import errors, scales
from drcn_plugin.batch import collect_jobs
from drcn_plugin.cli import app
from drcn_plugin.errors import BadOptionError, Cancelled, DRCNError, OutputExistsError, one_line
from drcn_plugin.hub import SHIPPED
from drcn_plugin.training.config import TrainConfig, command_line, default_of, flag_of
from drcn_plugin.writing import Encoded, atomic_save

PACKAGE = REPO / "drcn_plugin"
FRONT_END = {"typer", "rich", "click", "drcn_plugin.cli", "drcn_plugin.cli_options",
             "drcn_plugin.cli_upscale", "drcn_plugin.cli_measure", "drcn_plugin.__main__",
             "drcn_plugin.terminal", "drcn_plugin.progress", "drcn_plugin.training",
             "drcn_plugin.integrations", "comfyui_nodes", "drcn_worker_client"}
# every top-level module of the package that is not a front end: new ones are covered too
CORE = sorted(p.stem for p in PACKAGE.glob("*.py")
              if f"drcn_plugin.{p.stem}" not in FRONT_END)


def _train_command():
    group = typer.main.get_command(app)
    return group.commands["train"]  # type: ignore[attr-defined]


def test_every_train_option_has_a_flag_and_the_cli_defaults_are_the_configs() -> None:
    params = {p.name: p for p in _train_command().params}
    default = TrainConfig()
    for f in fields(TrainConfig):
        assert f.metadata["help"], f"{f.name} has no help"
        assert f.name in params, f"drcn train has no option for {f.name}"
        param = params[f.name]
        assert flag_of(f) in param.opts and param.help == f.metadata["help"]
        assert not param.required, "a resume reads its run's options, --data included"
        assert param.default == getattr(default, f.name) == default_of(f), f.name
    assert set(params) == {f.name for f in fields(TrainConfig)} | {"resume", "overwrite"}


@pytest.mark.parametrize(("lr", "downscales"), [(0.01, [1.0, 0.75]),
                                                 (1.23456789e-4, [1.0, 0.7654321])])
def test_the_cards_command_line_rebuilds_the_config(lr: float, downscales: list[float]) -> None:
    """Every digit of a float option is written: six (``:g``) would name another run."""
    cfg = TrainConfig(data=["a", "b c"], scales=[2, 4], features=32, recursions=8, patch=48,
                      downscales=downscales, optimizer="sgd", lr=lr, lr_drops=[0.4],
                      test_data=["Set14"], degrade="jpeg:75", degrade_copies=2, minutes=5.0,
                      device="cuda", stop_at=9)
    text = command_line(cfg, steps=1234)
    assert text.startswith("drcn train --data a")
    args = shlex.split(text.replace("\\\n", " "))[2:]
    params = _train_command().make_context("train", args).params
    params.pop("resume")
    params.pop("overwrite")
    rebuilt = TrainConfig(**params)
    # Where to write, the device, the time budget and stop_at are the run's, not the recipe's.
    expected = TrainConfig(**{**vars(cfg), "steps": 1234, "minutes": 0.0, "device": "auto",
                              "stop_at": 0})
    assert rebuilt == expected


def test_gimp_plugin_scale_range_is_the_engines() -> None:
    source = (REPO / "gimp" / "drcn-super-resolution" / "drcn-super-resolution.py").read_text()
    call = re.search(r'add_double_argument\(\s*"scale",[^)]*\)', source)
    assert call is not None
    numbers = [float(v) for v in re.findall(r"\b\d+\.\d+\b", call.group(0))]
    low, high, default = numbers
    assert (low, high) == (scales.MIN_SCALE, scales.MAX_SCALE) and low <= default <= high


def test_gimp_plugin_offers_every_shipped_model() -> None:
    source = (REPO / "gimp" / "drcn-super-resolution" / "drcn-super-resolution.py").read_text()
    block = re.search(r"^MODELS = \((.*?)\)\n[A-Z]", source, re.S | re.M)
    assert block is not None
    assert re.findall(r'\(\s*"([^"]+)",', block.group(1)) == list(SHIPPED)


def _imports(path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = "drcn_plugin." + node.module if node.level and node.module else node.module
            if node.level and not node.module:
                base = "drcn_plugin"
            names.add(base or "")
            names |= {f"{base}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_front_end(module: str) -> None:
    names = _imports(PACKAGE / f"{module}.py")
    bad = {n for n in names for f in FRONT_END if n == f or n.startswith(f + ".")}
    assert not bad, f"{module} imports {bad}"


def test_importing_the_engine_loads_no_front_end() -> None:
    code = ("import sys, drcn_plugin.engine, drcn_plugin.evaluation, drcn_plugin.hub; "
            "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('typer', 'rich', 'click') or m.startswith(('drcn_plugin.training', "
            "'drcn_plugin.integrations', 'drcn_plugin.cli')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         timeout=120, check=True)
    assert out.stdout.strip() == ""


def test_training_data_does_not_import_the_engine() -> None:
    names = _imports(PACKAGE / "training" / "data.py")
    assert not {n for n in names if n.startswith(("drcn_plugin.engine", "drcn_plugin.evaluation"))}


def test_no_file_of_the_project_is_over_450_lines() -> None:
    try:  # the tracked files: tests, tools and benchmarks too, not a local venv
        tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=REPO, capture_output=True,
                                 text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        tracked = []
    files = [REPO / name for name in tracked] or list(PACKAGE.rglob("*.py"))
    long = [f"{p.relative_to(REPO)}: {n}" for p in files if p.is_file()
            and (n := len(p.read_text().splitlines())) > 450]
    assert not long, long


def test_no_tracked_text_file_keeps_a_merge_conflict() -> None:
    """A merge's conflict markers left in code, tests or the README (a table row twice)."""
    try:
        tracked = subprocess.run(["git", "ls-files", "*.py", "*.md", "*.toml", "*.sh", "*.json"],
                                 cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    marker = re.compile(r"^(<{7}|>{7}) ", re.MULTILINE)
    kept = [name for name in tracked if (REPO / name).is_file()
            and marker.search((REPO / name).read_text(errors="replace"))]
    assert not kept, kept


def test_cancelled_is_not_an_error_and_errors_share_a_base() -> None:
    assert not issubclass(Cancelled, DRCNError)
    public = [c for c in vars(errors).values()
              if isinstance(c, type) and issubclass(c, Exception) and c is not Cancelled]
    assert len(public) >= 8 and all(issubclass(c, DRCNError) for c in public)


def test_one_line_takes_the_first_line_or_the_type() -> None:
    assert one_line(ValueError("\n  first\nsecond")) == "first"
    assert one_line(KeyError()) == "KeyError"


class _UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("a __str__ that fails itself")


def test_an_exception_that_cannot_be_shown_is_named_by_its_type() -> None:
    # batch.run_job turns any exception into its file's line: one_line must not raise there
    assert one_line(_UnprintableError()) == "_UnprintableError"


def test_option_errors_survive_pickling_between_ranks() -> None:
    again = pickle.loads(pickle.dumps(BadOptionError("bad", option="scale")))
    assert (str(again), again.option) == ("bad", "scale")
    path = pickle.loads(pickle.dumps(OutputExistsError("x exists", path="x"))).path
    assert path == "x"


def _flag_texts(path) -> list[str]:
    """Message text in a module's raise statements and option-problem tables that names a flag."""
    texts = []
    for node in ast.walk(ast.parse(path.read_text())):
        parts = ast.walk(node.exc) if isinstance(node, ast.Raise) and node.exc else \
            node.elts if isinstance(node, ast.Tuple) else ()
        texts += [f"{path.name}:{c.lineno}: {c.value}" for c in parts
                  if isinstance(c, ast.Constant) and isinstance(c.value, str)
                  and re.search(r"(^|[\s(])--?[a-zA-Z]", c.value)]
    return texts


def test_no_library_message_names_a_command_line_flag() -> None:
    # Flags belong to the front ends (terminal.cli_message adds them): a library caller, the GIMP
    # worker and ComfyUI have none.
    fronts = {"cli.py", "cli_upscale.py", "cli_measure.py", "terminal.py"}
    found = [t for p in sorted(PACKAGE.rglob("*.py")) if p.name not in fronts
             for t in _flag_texts(p)]
    assert not found, "\n".join(found)


def test_library_messages_name_no_command_line_flag(tmp_path) -> None:
    caught: list[DRCNError] = []
    for bad in (dict(patch=3), dict(stride=0), dict(optimizer="rmsprop"), dict(scales=[9]),
                dict(degrade_copies=0), dict(data=[])):
        with pytest.raises(DRCNError) as info:
            TrainConfig(**{"data": ["x"], **bad}).check()
        caught.append(info.value)
    with pytest.raises(DRCNError) as info:
        collect_jobs([str(tmp_path)], 2.0, None, False, "", "gif")
    caught.append(info.value)
    (tmp_path / "out.json").write_text("{}")
    with pytest.raises(OutputExistsError) as info:
        atomic_save(Encoded(Image.new("L", (1, 1)), "PNG"), tmp_path / "out.json")
    caught.append(info.value)
    for e in caught:
        assert not re.search(r"(^|\s)--?[a-z]", str(e)), str(e)
    assert all(isinstance(e, BadOptionError) and e.option for e in caught[:5])


def test_the_public_api_loads_on_first_use() -> None:
    import drcn_plugin

    assert set(drcn_plugin.__all__) == set(drcn_plugin._HOME)
    assert all(getattr(drcn_plugin, name) is not None for name in drcn_plugin.__all__)
    cold = subprocess.run([sys.executable, "-c", "import sys, drcn_plugin; "
                           "print('torch' in sys.modules)"], capture_output=True, text=True,
                          timeout=120)
    assert cold.stdout.strip() == "False", cold.stderr  # `drcn` starts before torch loads


def test_the_public_names_are_listed_before_they_load() -> None:
    """``dir(drcn_plugin)``, which a REPL's or an editor's completion reads, lists the names
    that load on first use (PEP 562's ``__dir__`` beside its ``__getattr__``)."""
    code = ("import drcn_plugin; print(sorted(set(drcn_plugin.__all__) - set(dir(drcn_plugin))),"
            " 'Upscaler' in vars(drcn_plugin))")
    cold = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert cold.stdout.split("\n")[0] == "[] False", cold.stdout + cold.stderr


def test_ctrl_c_while_the_command_loads_is_no_traceback(monkeypatch, capsys) -> None:
    import importlib.abc

    from drcn_plugin.__main__ import main

    class Interrupted(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201 (importlib's)
            if name == "drcn_plugin.cli":
                raise KeyboardInterrupt  # as Ctrl-C during the seconds torch takes to load
            return None

    monkeypatch.delitem(sys.modules, "drcn_plugin.cli", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupted(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 130 and "Traceback" not in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("after", ["loaded", "broken"])
def test_a_ctrl_c_a_library_clears_while_the_command_loads_still_stops_it(monkeypatch,
                                                                         after: str) -> None:
    """torch's C start-up imports numpy and drops any error it raises: a Ctrl-C that lands
    there still ends the command with status 130 and no traceback, whether numpy loaded or,
    cut short, cannot load again."""
    import contextlib
    import signal
    import types

    from drcn_plugin import stops
    from drcn_plugin.__main__ import main

    ran: list[int] = []

    class Loading(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name != "main":  # the import machinery's own look-ups (__path__, ...)
                raise AttributeError(name)
            with contextlib.suppress(KeyboardInterrupt):  # as torch._C: the error is cleared
                signal.raise_signal(signal.SIGINT)
            if after == "broken":
                raise ImportError("cannot load module more than once per process")
            return lambda: ran.append(1)

    monkeypatch.setitem(sys.modules, "drcn_plugin.cli", Loading("drcn_plugin.cli"))
    monkeypatch.setattr(stops.os, "_exit", sys.exit)  # the process ends at once, as it should
    handlers = {s: signal.getsignal(s) for s in stops.stop_signals()}
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:  # pytest's own again, and no stop left counted for a later test
        for s, handler in handlers.items():
            signal.signal(s, handler)
        stops.arm_stops()
    assert (exit_.value.code, ran) == (130, [])


_CTRL_C_AT_IMPORT = '''
import importlib.abc, sys

class Interrupted(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "typer":  # the command line's first import that takes a while
            raise KeyboardInterrupt
        return None

sys.meta_path.insert(0, Interrupted())
'''


@pytest.mark.parametrize("module", ["drcn_plugin", "drcn_plugin.cli"])
def test_ctrl_c_while_python_m_loads_the_command_is_no_traceback(module: str, tmp_path) -> None:
    """``python -m`` runs the command's imports inside the guard the ``drcn`` script puts
    around them: a Ctrl-C while they load ends with status 130, not a traceback."""
    import os

    (tmp_path / "sitecustomize.py").write_text(_CTRL_C_AT_IMPORT)  # before the module is run
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    run = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": path})
    assert (run.returncode, run.stdout) == (130, ""), run.stderr
    assert "Traceback" not in run.stderr, run.stderr


_STOP_CLEARED_IN_C = '''
import contextlib, ctypes, importlib.abc, sys

class Cleared(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "typer":  # as torch's start-up: Python run from C, its interrupt cleared
            run = ctypes.pythonapi.PyRun_String
            run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
            run.restype = ctypes.py_object
            with contextlib.suppress(KeyboardInterrupt):
                run(b"import signal; signal.raise_signal(signal.SIGTERM)", 257, {}, {})
            raise ImportError("cannot load module more than once per process")
        return None

sys.meta_path.insert(0, Cleared())
'''


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_sigterm_cleared_while_the_command_loads_ends_it_as_sigterm(tmp_path) -> None:
    """Python takes an interrupt raised in Python that C code ran, then cleared, for one never
    handled, and ends the process by SIGINT at its exit: a SIGTERM's status stays 143."""
    import os

    (tmp_path / "sitecustomize.py").write_text(_STOP_CLEARED_IN_C)
    path = os.pathsep.join([str(tmp_path), *filter(None, [os.environ.get("PYTHONPATH")])])
    run = subprocess.run([sys.executable, "-m", "drcn_plugin", "--version"], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": path})
    assert (run.returncode, run.stdout, run.stderr) == (143, "", "")

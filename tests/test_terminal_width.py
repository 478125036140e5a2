"""The CLI's reports and results at any terminal width: a ``COLUMNS`` of 0, or one too narrow for
a table, must still show every error line, file name and score whole."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from drcn_plugin import cli_measure, terminal
from drcn_plugin.batch import Job, Outcome
from drcn_plugin.evaluation import ScaleResult
from drcn_plugin.progress import BatchProgress


def _console(monkeypatch: pytest.MonkeyPatch, columns: str, **kw: object) -> io.StringIO:
    """A CLI console writing to the returned buffer, made where ``COLUMNS`` is ``columns``."""
    out = io.StringIO()
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(terminal, "console", terminal._Console(file=out, stderr=True, **kw))
    return out


def test_a_width_of_zero_is_an_unknown_width(monkeypatch: pytest.MonkeyPatch) -> None:
    """``COLUMNS=0`` (a pty that reports no size passes it on) is an unknown width: an error
    line is still printed whole, not drawn zero columns wide."""
    out = _console(monkeypatch, "0")
    terminal.print_error("missing.png: no such file or folder")
    assert out.getvalue() == "error: missing.png: no such file or folder\n"


def test_eval_scores_stay_whole_in_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 30 columns each score is printed whole (not cut to ``16…``): it is the result."""
    out = io.StringIO()
    monkeypatch.setenv("COLUMNS", "30")
    monkeypatch.setattr(cli_measure, "result_console", terminal._Console(file=out))
    result = ScaleResult(2, 16.8712, 0.271834, 17.0248, 0.375512, 0.04, {})
    cli_measure._print_eval("drcn-lite", "drcn-lite on gt", {2: result})
    printed = out.getvalue()
    assert "…" not in printed
    for score in ("16.87", "0.2718", "17.02", "0.3755", "+0.15", "0.04"):
        assert score in printed, printed


def test_the_summary_names_each_file_in_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    """At 10 columns the summary still names each file, its status and size."""
    out = _console(monkeypatch, "10", force_terminal=False)
    outcomes = [Outcome(Job(Path(f"photo-{k}.png"), Path(f"out/photo-{k}.png")), "done",
                        in_size=(24, 20), out_size=(48, 40), seconds=0.1) for k in range(2)]
    upscaler = SimpleNamespace(device=torch.device("cpu"), dtype=torch.float32)
    BatchProgress.summary(terminal.console, outcomes, upscaler)
    rows = [line for line in out.getvalue().splitlines() if "photo-" in line]
    assert len(rows) == 2 and all("done" in r and "24x20" in r and "48x40" in r for r in rows), \
        out.getvalue()

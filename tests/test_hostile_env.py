"""The command in a hostile process environment: a working folder that no longer exists."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from drcn_plugin import stops


def test_a_deleted_working_folder_is_one_line_before_torch_loads(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Relative names cannot be found nor outputs placed beside them, and torch's MKL dies
    with 'Cannot load libtorch_cpu.so': the folder is named as what is wrong, before torch."""
    from drcn_plugin.__main__ import main

    def gone() -> str:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(os, "getcwd", gone)
    monkeypatch.setattr(sys, "argv", ["drcn", "--version"])
    handlers = {s: signal.getsignal(s) for s in stops.stop_signals()}
    try:
        with pytest.raises(SystemExit) as exit_:
            main()
    finally:  # pytest's own again
        for s, handler in handlers.items():
            signal.signal(s, handler)
        stops.arm_stops()
    captured = capsys.readouterr()
    assert (exit_.value.code, captured.out) == (2, "")
    assert captured.err == "error: the current folder no longer exists (it was deleted or moved "\
                           "away): cd into one that does\n"

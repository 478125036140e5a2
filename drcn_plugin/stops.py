"""The signals that stop a command cleanly, and the exit status they leave (no torch here: the
command's front end asks for it before the library is loaded)."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import NoReturn


def stop_signals() -> list[signal.Signals]:
    """SIGINT, SIGTERM and SIGHUP where the platform has them, less those this process was told
    to ignore (``nohup`` ignores SIGHUP, a background job SIGINT) or whose handler is not
    Python's: the signals a command may turn into a clean stop."""
    found = []
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) not in (signal.SIG_IGN, None):
            found.append(sig)
    return found


_STOPPED_BY = [int(signal.SIGINT)]  # the last stop signal, for the exit status
_TAKEN = [0]  # the stops the running command was sent since its first (a KeyboardInterrupt)
_FORCED_AT = 3  # the stop that ends a command still stopping at once (a cleanup stuck on a disk)


def record_stop(signum: int) -> None:
    """Remember ``signum`` as the signal that stops the command (SIGINT: a plain Ctrl-C)."""
    _STOPPED_BY[0] = signum


def arm_stops() -> None:
    """A command begins: no stop taken yet, and an interrupt is a plain Ctrl-C's until a stop
    signal comes."""
    record_stop(signal.SIGINT)
    _TAKEN[0] = 0


def interrupt(signum: int, frame: object = None) -> None:
    """A stop signal's handler: Ctrl-C's KeyboardInterrupt, the signal remembered. A stop that
    comes while the command is stopping (Ctrl-C pressed twice, SIGTERM after it) is passed over:
    raised again it cut into the cleanup and the command's line about the stop, which was then
    said twice; a third ends the process at once, as one does once the command has ended
    (:func:`end_on_stop`), so a cleanup stuck on a hung disk cannot hold the terminal."""
    _TAKEN[0] += 1
    if _TAKEN[0] >= _FORCED_AT:
        _end_now(_STOPPED_BY[0])
    if _TAKEN[0] > 1:
        return
    record_stop(signum)
    raise KeyboardInterrupt


def take_stops() -> None:
    """From here Ctrl-C, SIGTERM (a scheduler's stop, ``kill``) and SIGHUP (the terminal closed)
    take Ctrl-C's clean path (:func:`interrupt`), counted afresh: the write in progress is
    removed and nothing half-written stays; the exit status then names the signal
    (:func:`stopped_status`). Only the main thread can set handlers; others keep them."""
    import threading

    arm_stops()
    if threading.current_thread() is threading.main_thread():
        for sig in stop_signals():
            signal.signal(sig, interrupt)


def stop_taken() -> bool:
    """Whether a stop signal came since :func:`take_stops`, even one whose KeyboardInterrupt
    was cleared where it landed (torch's C start-up drops any error of numpy's import)."""
    return _TAKEN[0] > 0


def run_by_torchrun() -> bool:
    """Whether torchrun's agent started this process (it sends the SIGTERM that ends a job)."""
    return "TORCHELASTIC_RUN_ID" in os.environ


def stop_word() -> str:
    """How a command's line names its stop: "interrupted", or, for a SIGTERM from torchrun's
    agent, what it means there (torchrun sends it when the job is stopped, and to the other
    processes when one of them ends: the user then has not stopped anything)."""
    if _STOPPED_BY[0] == signal.SIGTERM and run_by_torchrun():
        return ("stopped by torchrun (SIGTERM: the job was stopped, or another of its processes "
                "ended; its output says why)")
    return "interrupted"


def stopped_status() -> int:
    """The exit status of a command a stop signal ended, as a shell reports a process that
    signal killed: 128 + its number (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP)."""
    return 128 + _STOPPED_BY[0]


def _end_now(signum: int, frame: object = None) -> NoReturn:
    """A stop signal's handler once the command has ended: the process ends at once with that
    signal's status, its standard streams flushed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream, or one this signal cut into
            stream.flush()
    os._exit(128 + signum)


def end_stopped() -> NoReturn:
    """End a command that a stop signal found loading, at once with that signal's status:
    torch's start-up clears an interrupt in numpy's import, or in Python run from C, which
    Python takes for one never handled and so ends by SIGINT (130 for a SIGTERM), and a half-
    loaded numpy can abort the interpreter's last clean-up; nothing is written yet."""
    _end_now(_STOPPED_BY[0])


def end_on_stop() -> None:
    """For a process whose command has ended: a stop signal that comes now (Ctrl-C pressed
    twice) ends it at once, where it would interrupt an exit handler with a traceback."""
    for sig in stop_signals():
        signal.signal(sig, _end_now)

"""Shared fixtures: the read-only project data in ../shared, tiny models, and a network guard."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import DATA, REFERENCE_WEIGHTS, seeded_drcn

from drcn_plugin.model import DRCN

# No tile-size measuring inside the tests (timing-dependent, slow) unless a test turns it on; and
# never the user's real cache folder.
os.environ["DRCN_TILE_TUNING"] = "0"
os.environ["DRCN_CACHE_DIR"] = os.path.join(tempfile.gettempdir(), f"drcn-test-cache-{os.getpid()}")


def _need(path: Path) -> Path:
    assert path.exists(), f"{path} is missing: the tests expect ../shared beside the checkout"
    return path


@pytest.fixture(scope="session")
def set5() -> Path:
    """The Set5 ground-truth folder."""
    return _need(DATA / "Set5")


@pytest.fixture(scope="session")
def set14() -> Path:
    """The Set14 ground-truth folder."""
    return _need(DATA / "Set14")


@pytest.fixture(scope="session")
def reference_weights() -> Path:
    """The folder holding the two reference .safetensors files."""
    return _need(REFERENCE_WEIGHTS)


@pytest.fixture
def tiny_model() -> DRCN:
    """``DRCN(features=8, recursions=3)``, seeded random weights, uneven ensemble, eval mode."""
    model = seeded_drcn()
    with torch.no_grad():
        model.ensemble.copy_(torch.rand(3) + 0.1)  # uneven, so depth weighting matters
        model.reconstruct[2].weight.mul_(5)  # make each depth's residual clearly non-zero
    return model.eval()


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A small seeded DRCN saved as ``.safetensors``: front ends load it by path, fast."""
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_file(seeded_drcn().state_dict(), str(path))
    return str(path)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test that opens a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every figure the chart functions save during the test, in order (PNGs still written)."""
    from drcn_plugin import charts

    figures: list = []
    save = charts.save_png

    def record(fig, path):
        figures.append(fig)
        save(fig, path)

    monkeypatch.setattr(charts, "save_png", record)
    return figures


@pytest.fixture
def no_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import matplotlib`` fail, as on an install without the [plot] extra."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's summary table wide enough for every note to stay on one line."""
    from drcn_plugin import terminal

    monkeypatch.setattr(terminal.console, "width", 400)


@pytest.fixture
def one_thread():
    """Tiny convolutions gain nothing from a second thread, and on a busy 2-core machine
    OpenMP threads waiting for each other make training over ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty input folder ``in/`` in the test's temporary directory."""
    d = tmp_path / "in"
    d.mkdir()
    return d


@pytest.fixture(scope="session")
def t12(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twelve T91 images: enough to learn from in a few seconds."""
    folder = tmp_path_factory.mktemp("t12")
    for p in sorted(_need(DATA / "T91").iterdir())[:12]:
        shutil.copy(p, folder)
    return folder

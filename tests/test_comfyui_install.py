"""``drcn comfyui install``: the node folder linked or copied into a (fake) ComfyUI, the package
installed into ComfyUI's Python, and nothing changed when a step fails."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from drcn_plugin.cli import app
from drcn_plugin.errors import DRCNError
from drcn_plugin.integrations import comfyui_install

ROOT = Path(__file__).resolve().parent.parent
NODES_DIR = ROOT / "comfyui_nodes"


def _fake_comfyui(root: Path) -> Path:
    (root / "custom_nodes").mkdir(parents=True)
    (root / "main.py").write_text("")
    return root


def _fake_python(tmp_path: Path, torch_version: str | None, package: Path | None = None) -> Path:
    """An 'interpreter' that answers the probe (its torch, and drcn_plugin imported from
    ``package``, if given) and records the pip call and its constraints."""
    exe = tmp_path / "fake-python"
    answer = json.dumps([torch_version, str(package / "__init__.py") if package else None])
    exe.write_text(f"#!/bin/sh\nif [ \"$1\" = \"-c\" ]; then echo '{answer}'; else "
                   f"echo \"$@\" > {tmp_path}/pip-args.txt; "
                   f"cat \"$5\" > {tmp_path}/pinned.txt; fi\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def this_copy_installed() -> None:
    """Skip unless the test's own Python imports this very checkout (from a neutral folder):
    given as ComfyUI's Python, it would otherwise get this checkout pip-installed into it for
    real, as from a second worktree over a shared environment."""
    _, origin = comfyui_install.probe_python(Path(sys.executable), Path(tempfile.gettempdir()))
    if not origin or Path(origin).resolve() != comfyui_install.PACKAGE / "__init__.py":
        pytest.skip(f"{sys.executable} imports drcn_plugin from {origin}, not this checkout")


@pytest.mark.usefixtures("this_copy_installed")
def test_install_links_nodes_and_skips_pip_when_already_there(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    done = comfyui_install.install(comfy, Path(sys.executable))
    dest = comfy / "custom_nodes" / "comfyui-drcn"
    assert done.linked and dest.is_symlink() and dest.resolve() == NODES_DIR.resolve()
    assert done.pip_command is None and (comfy / "models" / "drcn").is_dir()
    again = comfyui_install.install(comfy, Path(sys.executable), copy=True)
    assert not again.linked and not dest.is_symlink() and (dest / "drcn_nodes.py").is_file()
    assert comfyui_install.install(comfy, Path(sys.executable)).linked  # replaces the copy


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in for a Python")
def test_install_pins_comfyuis_torch(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    done = comfyui_install.install(comfy, _fake_python(tmp_path, "2.5.1+cu124"))
    assert (tmp_path / "pinned.txt").read_text() == "torch==2.5.1+cu124\n"
    args = (tmp_path / "pip-args.txt").read_text().split()
    assert args[:4] == ["-m", "pip", "install", "-c"] and args[5:] == ["-e", str(ROOT)]
    assert done.pip_command[-2:] == ["-e", str(ROOT)]


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in for a Python")
@pytest.mark.parametrize("copy", [False, True])
def test_the_nodes_are_those_of_the_package_comfyui_imports(tmp_path: Path, copy: bool) -> None:
    """Not this environment's: a link into it would break once it is removed, and its nodes
    would drift from ComfyUI's drcn-plugin when only this one is upgraded."""
    package = tmp_path / "comfyui-venv" / "site-packages" / "drcn_plugin"
    (package / "comfyui_nodes").mkdir(parents=True)
    (package / "comfyui_nodes" / "drcn_nodes.py").write_text("# ComfyUI's own version\n")
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    done = comfyui_install.install(comfy, _fake_python(tmp_path, "2.5.1+cpu", package), copy)
    dest = comfy / "custom_nodes" / "comfyui-drcn"
    assert done.pip_command and done.linked != copy
    assert (dest / "drcn_nodes.py").read_text() == "# ComfyUI's own version\n"


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in for a Python")
def test_install_refuses_a_python_without_torch(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    with pytest.raises(DRCNError, match="has no torch"):
        comfyui_install.install(comfy, _fake_python(tmp_path, None))
    assert not (tmp_path / "pip-args.txt").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-ins for a Python")
@pytest.mark.usefixtures("this_copy_installed")
def test_a_failed_install_leaves_comfyui_as_it_was(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    dest = comfy / "custom_nodes" / "comfyui-drcn"
    for bad, words in ((_fake_python(tmp_path, None), "has no torch"),
                       (Path("/bin/true"), "did not answer like a Python")):
        with pytest.raises(DRCNError, match=words):
            comfyui_install.install(comfy, bad)
        assert not dest.exists() and not dest.is_symlink()  # no nodes that cannot import
    comfyui_install.install(comfy, Path(sys.executable), copy=True)
    with pytest.raises(DRCNError, match="has no torch"):
        comfyui_install.install(comfy, _fake_python(tmp_path, None))
    assert (dest / "drcn_nodes.py").is_file() and not dest.is_symlink()  # the copy is kept
    _fake_python(tmp_path, "2.5.1+cpu")
    monkeypatch.chdir(tmp_path)  # a relative --python is the user's, not ComfyUI's folder's
    done = comfyui_install.install(comfy, Path("fake-python"))
    assert done.python == tmp_path / "fake-python" and (tmp_path / "pip-args.txt").is_file()


def test_a_wheel_install_reinstalls_from_where_it_came(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = tmp_path / "Down loads" / "drcn_plugin-0.1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(b"")

    class Dist:
        def read_text(self, name: str) -> str | None:
            return json.dumps({"url": wheel.as_uri()})

    monkeypatch.setattr(comfyui_install, "source_checkout", lambda: None)
    monkeypatch.setattr(comfyui_install.metadata, "distribution", lambda name: Dist())
    assert comfyui_install.package_spec() == [wheel.as_uri()]
    wheel.unlink()  # the downloaded wheel cleaned away since: pip would fail on its path
    assert comfyui_install.package_spec() == [f"drcn-plugin=={comfyui_install.__version__}"]


def test_install_refuses_other_folders(tmp_path: Path) -> None:  # both before pip runs
    with pytest.raises(DRCNError, match="is not a ComfyUI folder"):
        comfyui_install.install(tmp_path, Path(sys.executable))
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    (comfy / "custom_nodes" / "comfyui-drcn").mkdir()
    with pytest.raises(DRCNError, match="is not the DRCN nodes"):
        comfyui_install.install(comfy, Path(sys.executable))


def test_default_python_prefers_comfyuis_venv(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    assert comfyui_install.default_python(comfy) == Path(sys.executable)
    (comfy / "venv" / "bin").mkdir(parents=True)
    (comfy / "venv" / "bin" / "python").write_text("")
    assert comfyui_install.default_python(comfy) == comfy / "venv" / "bin" / "python"


@pytest.mark.usefixtures("this_copy_installed")
def test_cli_comfyui_install(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    runner = CliRunner()
    ok = runner.invoke(app, ["comfyui", "install", "--comfyui-dir", str(comfy),
                             "--python", sys.executable])
    assert ok.exit_code == 0, ok.output
    assert "drcn-plugin already installed" in ok.output
    bad = runner.invoke(app, ["comfyui", "install", "--comfyui-dir", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "is not a ComfyUI folder" in bad.output


@pytest.mark.skipif(sys.platform == "win32", reason="shell-script stand-in for a Python")
def test_a_nodes_folder_an_install_did_not_write_is_kept(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    dest = comfy / "custom_nodes" / "comfyui-drcn"
    (dest / ".git").mkdir(parents=True)  # a git clone of the nodes, with its history
    (dest / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (dest / "drcn_nodes.py").write_text("# edited\n")
    with pytest.raises(DRCNError, match=r"did not write \(.git/HEAD\).*move it away"):
        comfyui_install.install(comfy, _fake_python(tmp_path, "2.5.1+cpu"))
    assert not (tmp_path / "pip-args.txt").exists()  # refused before pip changed its Python
    assert (dest / ".git" / "HEAD").is_file() and not dest.is_symlink()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["comfyui-drcn"]
    (dest / ".git" / "HEAD").unlink()
    (dest / ".git").rmdir()  # now only the nodes' own file: an earlier copy, replaced
    comfyui_install.link_nodes(comfy, copy=True)
    (dest / "__pycache__").mkdir()  # what ComfyUI's Python writes
    (dest / "__pycache__" / "drcn_nodes.cpython-312.pyc").write_bytes(b"")
    assert comfyui_install.link_nodes(comfy, copy=True)[0] == dest
    assert sorted(p.name for p in dest.parent.iterdir()) == ["comfyui-drcn"]


@pytest.mark.parametrize("given", ["ComfyUI_windows_portable", "ComfyUI_windows_portable/ComfyUI/"
                                   "custom_nodes", "ComfyUI_windows_portable/ComfyUI/models/drcn"])
def test_a_folder_beside_comfyuis_is_refused_naming_comfyuis(tmp_path: Path, given: str) -> None:
    """The portable build's folder, or one inside ComfyUI's: the line says which to give."""
    comfy = _fake_comfyui(tmp_path / "ComfyUI_windows_portable" / "ComfyUI")
    (comfy / "models" / "drcn").mkdir(parents=True)
    for call in (comfyui_install.install, comfyui_install.remove_nodes):
        with pytest.raises(DRCNError) as info:
            call(tmp_path / given)
        assert str(info.value) == f"{tmp_path / given} is not a ComfyUI folder (needs main.py " \
            f"and custom_nodes/); ComfyUI's is {comfy}: give that"
    assert list((comfy / "custom_nodes").iterdir()) == []


def test_a_link_to_a_folder_not_the_nodes_is_kept(tmp_path: Path) -> None:
    """A user's link (to their own pack) under the nodes' name was replaced by an install and
    removed by an uninstall; one leading nowhere (into a venv since removed) is the installer's."""
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    dest = comfy / "custom_nodes" / "comfyui-drcn"
    (tmp_path / "my-pack").mkdir()
    dest.symlink_to(tmp_path / "my-pack", target_is_directory=True)
    for call in (comfyui_install.link_nodes, comfyui_install.remove_nodes):
        with pytest.raises(DRCNError, match="exists and is not the DRCN nodes: move it away"):
            call(comfy)
        assert dest.resolve() == tmp_path / "my-pack"
    dest.unlink()
    dest.symlink_to(tmp_path / "removed-venv" / "comfyui_nodes", target_is_directory=True)
    assert comfyui_install.link_nodes(comfy, copy=True)[0] == dest and not dest.is_symlink()


def test_a_python_that_cannot_run_is_named_in_plain_words(tmp_path: Path) -> None:
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    with pytest.raises(DRCNError) as info:
        comfyui_install.install(comfy, tmp_path / "no-python")
    assert str(info.value) == f"cannot run ComfyUI's Python {tmp_path / 'no-python'}: " \
        "No such file or directory"


def test_a_copy_made_by_a_version_without_the_install_record_is_updated(tmp_path: Path) -> None:
    """Versions before the .drcn-installed record had tests/ and workflows/ in the nodes; their
    copy was refused as holding files no install wrote."""
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    dest, _ = comfyui_install.link_nodes(comfy, copy=True)
    (dest / ".drcn-installed").unlink()
    for name in ("tests/comfy_client.py", "workflows/drcn_upscale_ui.json"):
        (dest / name).parent.mkdir(exist_ok=True)
        (dest / name).write_text("# an earlier version's\n")
    comfyui_install.link_nodes(comfy, copy=True)
    assert not (dest / "tests").exists() and not (dest / "workflows").exists()
    assert (dest / "drcn_nodes.py").read_bytes() == (NODES_DIR / "drcn_nodes.py").read_bytes()


def test_with_an_install_record_an_earlier_versions_file_name_is_a_users(tmp_path: Path) -> None:
    """Only a folder without the record may hold what versions before it wrote: with one, a
    file of such a name is not in it, so it is the user's (it was removed by the update)."""
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    dest, _ = comfyui_install.link_nodes(comfy, copy=True)
    (dest / "tests").mkdir()
    (dest / "tests" / "comfy_client.py").write_text("# my own client\n")
    with pytest.raises(DRCNError) as info:
        comfyui_install.link_nodes(comfy, copy=True)
    assert str(info.value) == f"{dest} holds files this installer did not write " \
        "(tests/comfy_client.py): move it away first"
    assert (dest / "tests" / "comfy_client.py").read_text() == "# my own client\n"


@pytest.mark.usefixtures("this_copy_installed")
@pytest.mark.parametrize("disabled", ["comfyui-drcn", "comfyui-drcn@unknown",
                                      "comfyui-drcn@1_0_2", "ComfyUI-DRCN@nightly"])
def test_a_copy_comfyui_manager_disabled_is_kept_and_named(tmp_path: Path,
                                                            disabled: str) -> None:
    """ComfyUI-Manager disables a pack by moving it into custom_nodes/.disabled/ (``@`` and its
    version appended by recent versions): the install leaves it, and says so once."""
    comfy = _fake_comfyui(tmp_path / "ComfyUI")
    copy = comfy / "custom_nodes" / ".disabled" / disabled
    copy.mkdir(parents=True)
    (copy / "drcn_nodes.py").write_text("# the disabled version\n")
    (comfy / "custom_nodes" / ".disabled" / "other-pack@1_0_0").mkdir()
    out = CliRunner().invoke(app, ["comfyui", "install", "--comfyui-dir", str(comfy),
                                   "--python", sys.executable])
    assert out.exit_code == 0, out.output
    assert " ".join(out.output.split("note: ")[1].split()) == "ComfyUI-Manager holds a " \
        f"disabled copy of the nodes in {copy}, left as it is and not updated; ComfyUI loads " \
        "the one installed now: remove the disabled one in the Manager rather than enable it"
    assert (copy / "drcn_nodes.py").read_text() == "# the disabled version\n"
    assert (comfy / "custom_nodes" / "comfyui-drcn").is_symlink()
    (copy / "drcn_nodes.py").unlink()  # another pack's folder of that name: not named
    again = comfyui_install.install(comfy, Path(sys.executable))
    assert again.disabled == [] and again.note() == ""

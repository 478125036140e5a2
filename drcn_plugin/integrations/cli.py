"""``drcn gimp install`` and ``drcn comfyui install``: the host applications' sub-commands."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from ..terminal import console, path_value, print_plain, user_errors

if TYPE_CHECKING:
    from .gimp_install import GimpProfile

gimp_app = typer.Typer(no_args_is_help=True, help="The GIMP 3 plug-in.")
comfyui_app = typer.Typer(no_args_is_help=True, help="The ComfyUI custom nodes.")


def _note(text: str) -> None:
    """Print ``text`` as a note: something the user must know, not a failure."""
    console.print(f"[yellow]note:[/] {escape(text)}", soft_wrap=True, highlight=False)


def _each_folder(profiles: list[GimpProfile], act: Callable[[Path], Path | None],
                 report: Callable[[GimpProfile, Path | None], None]) -> bool:
    """Run ``act`` on each GIMP user folder and ``report`` its result as it comes; a folder
    refused has its one line printed and neither stops nor hides the others' (True when one
    was)."""
    failed = False
    for profile in profiles:
        try:
            with user_errors():
                done = act(profile.path)
        except typer.Exit:
            failed = True
            continue
        report(profile, done)
    return failed


@gimp_app.command("install")
def gimp_install_cmd(
    gimp_dir: Annotated[Path | None, typer.Option(
        parser=path_value, help="GIMP 3 user folder (default: every one found: native, "
        "Flatpak, Snap, macOS, Windows; each GIMP 3.x has its own)")] = None,
) -> None:
    """Install the GIMP 3 plug-in; its worker will run on this Python."""
    from .gimp_install import GimpProfile, find_gimp_profiles, install

    with user_errors():  # a $GIMP3_DIRECTORY too long for the system, say
        profiles = [GimpProfile("given", gimp_dir)] if gimp_dir is not None \
            else find_gimp_profiles()
    if len(profiles) > 1:
        print_plain(f"found {len(profiles)} GIMP 3 user folders: "
                    + ", ".join(f"{p.kind} ({p.path})" for p in profiles)
                    + "; installing into each")
    elif gimp_dir is None and profiles[0].kind != "GIMP3_DIRECTORY" \
            and not profiles[0].path.is_dir():  # $GIMP3_DIRECTORY: every GIMP 3.x's
        _note(f"no GIMP 3 user folder found; making {profiles[0].path}, GIMP 3.0's (a later "
              "GIMP 3.x reads its own: run this again after its first start)")
    installed = []

    def report(profile: GimpProfile, dest: Path | None) -> None:
        installed.append(dest)
        print_plain(f"installed {dest} (worker Python: {sys.executable})")
        if profile.note():
            _note(profile.note())

    failed = _each_folder(profiles, install, report)
    if installed:
        console.print("restart GIMP to load it", highlight=False)
    if failed:
        raise typer.Exit(2)


@gimp_app.command("uninstall")
def gimp_uninstall_cmd(
    gimp_dir: Annotated[Path | None, typer.Option(
        parser=path_value, help="GIMP 3 user folder (default: every one found)")] = None,
) -> None:
    """Remove the GIMP 3 plug-in.

    A folder holding files no install wrote is left as it is."""
    from .gimp_install import GimpProfile, find_gimp_profiles, remove_plugin

    with user_errors():  # a $GIMP3_DIRECTORY too long for the system, say
        profiles = [GimpProfile("given", gimp_dir)] if gimp_dir is not None \
            else find_gimp_profiles()
    removed = []

    def report(profile: GimpProfile, dest: Path | None) -> None:
        if dest is not None:
            removed.append(dest)
            print_plain(f"removed {dest}")

    failed = _each_folder(profiles, remove_plugin, report)
    if removed:
        console.print("restart GIMP to unload it", highlight=False)
    elif not failed:
        print_plain("no DRCN plug-in to remove in " + ", ".join(str(p.path) for p in profiles))
    if failed:
        raise typer.Exit(2)


@comfyui_app.command("install")
def comfyui_install_cmd(
    comfyui_dir: Annotated[Path, typer.Option(
        parser=path_value, help="the ComfyUI folder (main.py, custom_nodes/)")],
    python: Annotated[Path | None, typer.Option(
        parser=path_value, help="ComfyUI's Python (default: its venv/ or .venv/, the portable "
        "build's python_embeded/, else this one)")] = None,
    copy: Annotated[bool, typer.Option(help="copy the nodes instead of linking them")] = False,
) -> None:
    """Put the DRCN nodes into ComfyUI.

    drcn-plugin is installed into ComfyUI's Python too, keeping the torch it has."""
    from .comfyui_install import install

    with user_errors():
        done = install(comfyui_dir, python, copy)
        print_plain(str(done))
    if done.note():
        _note(done.note())


@comfyui_app.command("uninstall")
def comfyui_uninstall_cmd(
    comfyui_dir: Annotated[Path, typer.Option(
        parser=path_value, help="the ComfyUI folder (main.py, custom_nodes/)")],
) -> None:
    """Remove the DRCN nodes from ComfyUI.

    models/drcn and the package in ComfyUI's Python stay."""
    from .comfyui_install import disabled_copies, disabled_note, remove_nodes

    with user_errors():
        dest = remove_nodes(comfyui_dir)
        disabled = disabled_copies(comfyui_dir.resolve() / "custom_nodes")
    print_plain(f"removed {dest}" if dest else
                f"no DRCN nodes to remove in {comfyui_dir / 'custom_nodes'}")
    if dest:
        print_plain("kept: your models in models/drcn, and drcn-plugin in ComfyUI's Python "
                    "(its pip uninstall drcn-plugin removes it); restart ComfyUI")
    if disabled:  # enabled again in the Manager, it would bring the nodes back
        _note(disabled_note(disabled, ": remove it in the Manager too for the nodes to be gone"))

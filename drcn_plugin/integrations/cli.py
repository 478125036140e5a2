"""``drcn gimp install`` and ``drcn comfyui install``: the host applications' sub-commands."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from ..terminal import console, path_value, print_plain, user_errors

gimp_app = typer.Typer(no_args_is_help=True, help="The GIMP 3 plug-in.")
comfyui_app = typer.Typer(no_args_is_help=True, help="The ComfyUI custom nodes.")


@gimp_app.command("install")
def gimp_install_cmd(
    gimp_dir: Annotated[Path | None, typer.Option(
        parser=path_value, help="GIMP 3 user folder (default: every one found: native, "
        "Flatpak, Snap, macOS, Windows)")] = None,
) -> None:
    """Install the GIMP 3 plug-in; its worker will run on this Python."""
    from .gimp_install import GimpProfile, find_gimp_profiles, install

    with user_errors():
        profiles = [GimpProfile("given", gimp_dir)] \
            if gimp_dir is not None else find_gimp_profiles()
        if len(profiles) > 1:
            print_plain(f"found {len(profiles)} GIMP 3 user folders: "
                        + ", ".join(f"{p.kind} ({p.path})" for p in profiles)
                        + "; installing into each")
        for profile in profiles:
            dest = install(profile.path)
            print_plain(f"installed {dest} (worker Python: {sys.executable})")
            if profile.note():
                console.print(f"[yellow]note:[/] {escape(profile.note())}", soft_wrap=True,
                              highlight=False)
    console.print("restart GIMP to load it", highlight=False)


@gimp_app.command("uninstall")
def gimp_uninstall_cmd(
    gimp_dir: Annotated[Path | None, typer.Option(
        parser=path_value, help="GIMP 3 user folder (default: every one found)")] = None,
) -> None:
    """Remove the GIMP 3 plug-in.

    A folder holding files no install wrote is left as it is."""
    from .gimp_install import GimpProfile, find_gimp_profiles, remove_plugin

    profiles = [GimpProfile("given", gimp_dir)] if gimp_dir is not None else find_gimp_profiles()
    removed, failed = 0, False
    for profile in profiles:  # each folder on its own: one refused never hides another's removal
        try:
            with user_errors():
                dest = remove_plugin(profile.path)
        except typer.Exit:
            failed = True
            continue
        if dest is not None:
            removed += 1
            print_plain(f"removed {dest}")
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


@comfyui_app.command("uninstall")
def comfyui_uninstall_cmd(
    comfyui_dir: Annotated[Path, typer.Option(
        parser=path_value, help="the ComfyUI folder (main.py, custom_nodes/)")],
) -> None:
    """Remove the DRCN nodes from ComfyUI.

    models/drcn and the package in ComfyUI's Python stay."""
    from .comfyui_install import remove_nodes

    with user_errors():
        dest = remove_nodes(comfyui_dir)
    print_plain(f"removed {dest}" if dest else
                f"no DRCN nodes to remove in {comfyui_dir / 'custom_nodes'}")
    if dest:
        print_plain("kept: your models in models/drcn, and drcn-plugin in ComfyUI's Python "
                    "(its pip uninstall drcn-plugin removes it); restart ComfyUI")

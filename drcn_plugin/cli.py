"""The ``drcn`` command line: the app, ``--scale 2 3 4`` expanded for click, and the entry point
that makes a usage mistake one line. Its commands are declared beside it (``upscale`` in
:mod:`.cli_upscale`, ``eval`` and ``compare`` in :mod:`.cli_measure`, the options they share in
:mod:`.cli_options`) and the sub-apps of training and the host integrations in their own
packages; all are only added here."""

from __future__ import annotations

if __name__ == "__main__":  # python -m drcn_plugin.cli: the drcn script, whose Ctrl-C guard
    from drcn_plugin.__main__ import main  # covers the imports below (torch takes seconds)
    raise SystemExit(main())

import os
import sys
from typing import Annotated

import typer
from PIL import Image
from typer.core import TyperGroup

from .cli_measure import compare, eval_cmd
from .cli_upscale import upscale
from .errors import reason
from .imagefile import memory_pixel_limit
from .integrations.cli import comfyui_app, gimp_app
from .stops import stopped_status
from .terminal import (
    PIPE_EXIT,
    ReaderGone,
    first_says_it,
    print_error,
    reader_gone,
    result_console,
    silence,
    unencodable_escaped,
)
from .training.cli import app as train_app

MULTI_SCALE_COMMANDS = {"eval", "train"}


def expand_multi_scale(argv: list[str]) -> list[str]:
    """Let ``eval``/``train`` take ``--scale 2 3 4`` (click wants ``--scale 2 --scale 3 ...``)."""
    if not MULTI_SCALE_COMMANDS.intersection(argv[:1]):
        return argv
    out: list[str] = []
    flag, values = None, 0
    for tok in argv:
        if flag is not None and (values == 0 or tok.isdigit()):
            out += [tok] if values == 0 else [flag, tok]
            values += 1
            continue
        if tok.startswith("--scale="):  # its first value is attached
            flag, values = "--scale", 1
        else:
            flag, values = (tok if tok in ("--scale", "-s") else None), 0
        out.append(tok)
    return out


class _Group(TyperGroup):
    """Typer's group, with ``--scale 2 3 4`` expanded before click parses it."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, expand_multi_scale(args))


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  pretty_exceptions_enable=False, rich_markup_mode=None)


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        result_console.print(f"drcn-plugin {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool | None, typer.Option(
        "--version", callback=_print_version, is_eager=True,
        help="print the version and exit")] = None) -> None:
    """DRCN super-resolution: upscale images, evaluate and train models."""


# --help lists the commands in this order
app.command("eval")(eval_cmd)
app.command()(upscale)
app.command()(compare)
app.add_typer(train_app)
app.add_typer(gimp_app, name="gimp")
app.add_typer(comfyui_app, name="comfyui")


def _command_path(args: list[str]) -> str:
    """``drcn`` and the (sub)commands that ``args`` name, for errors click raises without a
    context (an option missing its value)."""
    command, path = typer.main.get_command(app), ["drcn"]
    for arg in args:
        command = getattr(command, "commands", {}).get(arg)
        if command is None:
            break
        path.append(arg)
    return " ".join(path)


def _dashed_file(e: typer.TyperException) -> str:
    """For an unknown option that is a file's name (``-night.png``), how to name the file."""
    if type(e).__name__ != "NoSuchOption":  # typer's own copy of click's
        return ""
    named = next((a for a in sys.argv[1:] if a.startswith("-") and len(a) > 1
                  and os.path.lexists(a)), None)
    return "" if named is None else \
        f"; {named} is a file: name it ./{named}, or put -- before it"


def _usage_message(e: typer.TyperException) -> str:
    """``e``'s message, naming the value given where typer's check of a number says only what
    it should be (``Input should be a valid number``): the value is not always the one meant
    (``--scale -o out``: ``-o`` taken for the scale)."""
    cause = e.__cause__  # pydantic's ValidationError, which typer checks numbers with
    errors = cause.errors() if type(cause).__name__ == "ValidationError" else []
    given = f", got {errors[0]['input']!r}" if errors and "input" in errors[0] else ""
    return e.format_message() + given


def main() -> None:
    """Entry point of the ``drcn`` console script: a usage mistake is one line, like the
    library's errors, with the command's help named."""
    limit = Image.MAX_IMAGE_PIXELS  # put back on return: a caller in-process keeps its own
    Image.MAX_IMAGE_PIXELS = memory_pixel_limit()  # not Pillow's fixed one: what memory holds
    try:
        with unencodable_escaped(sys.stdout):
            code = app(standalone_mode=False, prog_name="drcn")
        if code == 130:  # typer's status for an interrupt; a stop signal names its own
            code = stopped_status()
    except ReaderGone:  # quietly, as SIGPIPE ends git or grep; a file the command wrote stays
        silence(sys.stdout)
        code = PIPE_EXIT
    except SystemExit as e:  # click ends a help whose reader left with status 1
        if e.code != 1 or not reader_gone():
            raise
        code = PIPE_EXIT
    except OSError as e:  # stdout failed outside a command's own checks (help to /dev/full)
        silence(sys.stdout)
        print_error(f"cannot write to stdout: {reason(e)}")
        code = 2
    except typer.Abort:
        print_error("aborted")
        code = 1
    except typer.TyperException as e:
        # NoArgsIsHelpError: the help it stands for is printed; a usage mistake is met alike by
        # every process of a torchrun job
        if type(e).__name__ != "NoArgsIsHelpError" and not first_says_it():
            ctx = getattr(e, "ctx", None)
            path = ctx.command_path if ctx else _command_path(sys.argv[1:])
            print_error(f"{_usage_message(e)} (see {path} --help){_dashed_file(e)}")
        code = e.exit_code
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    sys.exit(code if isinstance(code, int) else 0)

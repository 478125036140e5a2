"""``drcn train``: its options are built from :class:`TrainConfig`'s fields, never listed again."""

from __future__ import annotations

import inspect
import os
import shlex
import signal
import typing
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer

from ..devices import Dist
from ..errors import (
    EMPTY_PATH,
    BadOptionError,
    DivergedError,
    InputGoneError,
    OutputExistsError,
)
from ..scales import exact_text
from ..stops import stop_word, stopped_status, take_stops
from ..terminal import (
    OVERWRITE_HINT,
    console,
    later_process,
    path_value,
    print_error,
    print_plain,
    stopped_cleanly,
    user_errors,
)
from .config import (
    FOLDER_OPTIONS,
    MODEL_OPTIONS,
    TrainConfig,
    check_options,
    default_of,
    flag_of,
)
from .runfolder import check_run_folder, resume_point

app = typer.Typer()

# Option types a command line can hold for each config field type (Literals become choices).
_CLI_TYPES = {bool: bool, int: int, float: float, str: str}
# Where an option the user gave comes from (typer's vendored click.core.ParameterSource, by name:
# typer does not export the enum).
_GIVEN = ("COMMANDLINE", "ENVIRONMENT")
_FLAGS = {f.name: flag_of(f) for f in fields(TrainConfig)}  # each config option's flag


def _cli_type(annotation: Any) -> Any:
    if typing.get_origin(annotation) is list:
        return list[_cli_type(typing.get_args(annotation)[0])]
    return _CLI_TYPES.get(annotation, str)


def config_parameters() -> list[inspect.Parameter]:
    """One keyword parameter per config field: its flag, short flag, help and default."""
    hints = typing.get_type_hints(TrainConfig)
    params = []
    for f in fields(TrainConfig):
        flag = flag_of(f)
        if hints[f.name] is bool:  # a switch: --name/--no-name
            flag += "/--no-" + flag.removeprefix("--")
        decls = [flag] + ([f.metadata["short"]] if f.metadata["short"] else [])
        info = typer.Option(*decls, help=f.metadata["help"])
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY,
                                        default=default_of(f),
                                        annotation=Annotated[_cli_type(hints[f.name]), info]))
    return params


def _with_config_options(command: typing.Callable[..., None]) -> typing.Callable[..., None]:
    """Give ``command(resume, **config)`` the config's options, then its own."""
    own = list(inspect.signature(command, eval_str=True).parameters.values())
    params = config_parameters() + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own
                                    if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def given_options(ctx: typer.Context, options: dict[str, Any]) -> set[str]:
    """The options the user typed (or set in the environment), even at their default: a resume
    names those its checkpoint overrides."""
    return {name for name in options
            if getattr(ctx.get_parameter_source(name), "name", None) in _GIVEN}


@app.command("train")
@_with_config_options
def train_cmd(
    ctx: typer.Context,
    resume: Annotated[bool, typer.Option(
        help="continue the run in OUT exactly (its last checkpoint), or with a new --lr, "
        "--steps or --val-every")] = False,
    overwrite: Annotated[bool, typer.Option(
        help="start over in an OUT that holds a run (its checkpoints and log are removed)")]
    = False,
    **options: Any,
) -> None:
    """Train DRCN (recursive supervision, multi-scale).

    Works under torchrun with DDP."""
    take_stops()  # during the steps a signal stops the run at a step boundary instead
    out = Path(options["out"])
    try:  # from here (the trainer's imports take seconds) an interrupt is one line
        _train(ctx, resume, overwrite, options)
    except KeyboardInterrupt:
        if not (later_process() and stopped_status() == 128 + signal.SIGINT):  # Ctrl-C reaches
            # every process of a torchrun job: the first says it; a SIGTERM may be this one's
            print_error(f"{stop_word()}: " + ("--resume continues from the last checkpoint"
                                              if resume_point(out) is not None else
                                              "no checkpoint was written yet"))
        raise typer.Exit(stopped_status()) from None


def _train(ctx: typer.Context, resume: bool, overwrite: bool, options: dict[str, Any]) -> None:
    """``drcn train``'s work: options checked, the run, and its one-line outcome."""
    from ..progress import TrainProgress
    from .trainer import train

    with user_errors({OutputExistsError: "continue it with --resume, or start over with "
                                         "--overwrite"}):
        given = given_options(ctx, options)
        for name in sorted(given & {"val_data", *MODEL_OPTIONS}):
            if options[name] == "":  # "" is also these options' "not given"
                raise BadOptionError(EMPTY_PATH, option=name)
        cfg = TrainConfig(**options)
        check_options(cfg, resume, given)  # before the progress bar appears
        check_run_folder(cfg, resume, overwrite)
        out, job = Path(cfg.out), Dist.from_env()
        with TrainProgress(console, enabled=job.main) as bar:
            try:
                log = train(cfg, resume, bar.update, overwrite, given)
            except DivergedError as e:  # its advice in this command's options
                raise DivergedError(f"{e} ({diverged_advice(e, out, job)})", e.rate,
                                    e.resumable) from None
            except InputGoneError as e:
                new = "NEW_FOLDER" if e.option in FOLDER_OPTIONS else "NEW_PATH"
                raise InputGoneError(e.missing, e.role, e.option, "give their new place with "
                                     f"{_FLAGS[e.option]} {new}") from None
        if log.get("weights"):
            print_plain(f"wrote {out / log['weights']} and its model card "
                        f"({log['step']} steps, {log['steps_per_s']} steps/s)")
        elif log.get("nothing_to_do"):
            where = "past" if log["step"] > cfg.stop_at else "at"
            console.print(f"already at step {log['step']}, {where} --stop-at {cfg.stop_at}: "
                          "nothing to do; give a later --stop-at or none", markup=False,
                          soft_wrap=True)
        elif "stopped_at" in log:
            console.print(f"stopped at step {log['stopped_at']}; continue with --resume")
            if log.get("interrupted"):
                raise typer.Exit(stopped_status())


def diverged_advice(error: DivergedError, out: Path, job: Dist) -> str:
    """The command that goes on from a diverged run with its lower rate: the resume of the run in
    ``out``, launched as ``job`` was (a one-machine torchrun job as docs/training.md starts one;
    a job over several machines by its own launch), or, with no checkpoint kept, the same
    command."""
    if not error.resumable:
        return f"the same command with --lr {exact_text(error.rate)}"
    again = f"drcn train --resume --out {shlex.quote(str(out))} --lr {exact_text(error.rate)}"
    per_machine = os.environ.get("LOCAL_WORLD_SIZE", "")  # torchrun's processes on this machine
    if job.world > 1 and per_machine.isdigit() and int(per_machine) < job.world:
        return f"the job's torchrun launch of {again}"
    return f"torchrun --nproc-per-node {job.world} --no-python {again}" if job.world > 1 \
        else again


@app.command("plot-train")
def plot_train_cmd(
    run: Annotated[Path, typer.Argument(
        parser=path_value, help="a run folder (its log.json) or a training log file")],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", parser=path_value,
        help="PNG to write (default: curves.png in the run folder, NAME-curves.png "
        "beside a NAME.log.json)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing --output")] = False,
) -> None:
    """Redraw a training run's curves from its log.

    Loss, validation PSNR, learning rate and alpha, one panel each."""
    from ..charts import redraw_training_curves

    take_stops()
    with user_errors(OVERWRITE_HINT), stopped_cleanly([]):  # its one file is written last
        written = redraw_training_curves(run, output, overwrite, notify=print_plain)
    print_plain(f"wrote {written}")

"""Result file names of a batch: each input's default name, the names that settle a collision,
and which existing results may belong to another input.

An input's default result name is its stem, the suffix and the output format's extension. Two
inputs that would share one get, in turn, names that keep the source's extension
(``photo.gif.png``), then numbered ones (``photo-2.png``). Which input gets which depends on the
other inputs of the run, so an existing file at a name another input of this run could be given
is taken for this input's result only when that input's own result exists too, as after an
unchanged run (:attr:`Job.rivals`).
"""

from __future__ import annotations

import functools
import os
import re
from bisect import bisect_left
from dataclasses import dataclass
from pathlib import Path

from .imagefile import FORMATS, SUFFIX
from .names import collision_key, name_max
from .targets import output_problem, shared_ends
from .writing import file_id

NUMBERED = re.compile(r"(.*)-(\d+)(\.[^.]*)?")  # STEM-N.EXT, as :func:`_numbered` makes them


@dataclass
class Job:
    """One input file and where its result goes; ``problem`` is a refusal found while planning."""

    source: Path
    target: Path
    problem: str = ""
    fmt: str = ""  # the output format the named output file's extension chose (else the batch's)
    note: str = ""  # for the summary: why the result is not named as alone, inputs given again
    rivals: tuple[Path, ...] = ()  # inputs that could have this (existing) name, their own missing
    held: Path | None = None  # an existing file of another name that may be this input's result


def result_name(source: Path, stem: str, suffix: str, fmt: str) -> str:
    """The file name of ``source``'s result: ``stem`` (its stem, or its whole name as the second
    choice when two results would share one), the suffix, the output format's extension."""
    return stem + suffix + _out_suffix(source, fmt)


def out_format(source: Path, fmt: str) -> str:
    """The output format: the one asked for, else the one the input's extension names."""
    if fmt != "same":
        return FORMATS[fmt]
    name = FORMATS.get(source.suffix.lower().lstrip("."))
    return name if name in SUFFIX else "PNG"


def _out_suffix(source: Path, fmt: str) -> str:
    pil = out_format(source, fmt)
    keep = source.suffix.lower()
    return source.suffix if FORMATS.get(keep.lstrip(".")) == pil else SUFFIX[pil]


def earlier_results(files: list[Path], root: Path, out_root: Path, suffix: str,
                    fmt: str) -> set[Path]:
    """The files that sit where another file's result would be written: an earlier run's
    results, found when the output folder is, or is inside, a folder being scanned (upscaling
    them again would make ``a_x_x.png``). Other files there are inputs like any other."""
    def real(p: Path) -> str:
        return os.path.join(os.path.realpath(p.parent), p.name)

    names = {real(out_root / f.relative_to(root).parent / result_name(f, name, suffix, fmt))
             for f in files for name in (f.stem, f.name)}  # the first and the second choice
    return {f for f in files if real(f) in names}


def unique_targets(jobs: list[Job], suffix: str, fmt: str, inputs: set[str]) -> None:
    """Give every job its own output name, and refuse outputs that are inputs, folders, links to
    nothing or to another result, or too long for their folder's file system."""
    taken: dict[str, Job] = {}
    next_n: dict[str, int] = {}  # per default name, the number to try next: linear, not n**2
    input_ids = {file_id(p) for p in inputs} - {None}
    limit_of = functools.cache(name_max)
    planned: list[tuple[Job, Path, Path]] = []  # in the planning order: default, second choice
    for job in sorted(jobs, key=lambda j: (j.target.name != j.source.stem + suffix
                                           + j.source.suffix, str(j.source))):
        default, limit = job.target, limit_of(job.target.parent)
        target = default
        second = target.with_name(result_name(job.source, job.source.name, suffix, fmt))
        if collision_key(target) in taken and len(os.fsencode(second.name)) <= limit:
            target = second  # keep the source's extension: photo.gif -> photo.gif.png
        n = next_n.get(collision_key(default), 2)
        while collision_key(target) in taken:
            target = _numbered(job, suffix, n, limit)
            n += 1
        next_n[collision_key(default)] = n
        if target != default:  # say whose result took the name this one would have had
            owner = taken[collision_key(default)]
            job.note = "; ".join(filter(None, [f"written as {target.name}: {owner.target.name} "
                                               f"is {owner.source}'s result", job.note]))
        job.target = target
        planned.append((job, default, second))
        taken[collision_key(target)] = job
        if os.path.realpath(target) in inputs or file_id(target) in input_ids:
            job.problem = f"its output {target} would replace an input"
        elif (size := len(os.fsencode(target.name))) > limit:
            job.problem = f"its output name would be {size} bytes, longer than the {limit} " \
                          f"that {target.parent}'s file system takes"
        elif problem := output_problem(target):  # a folder, a link to nothing
            job.problem = f"its output {problem}"
    _mark_rivals(planned)
    shared = shared_ends([j.target for j in jobs])  # a result whose name is no link goes on
    for job in (j for j in jobs if j.target in shared and not j.problem):
        job.problem = f"its output {job.target} leads to {shared[job.target]}, another result"


def _mark_rivals(planned: list[tuple[Job, Path, Path]]) -> None:
    """Set ``rivals`` of each job whose result name exists: the other inputs that a run with some
    of these inputs could have given that name, by the planning order, and whose own result is
    missing. With every such input's result there (an unchanged rerun) the file is the job's;
    else those inputs are ``held`` too: written under their own name, they would make the next
    run take the file for the job's. Which results exist is read here, before any is written."""
    missing: dict[str, list[Job]] = {}  # a name and the jobs without a result that can have it
    group: dict[str, list[tuple[int, Job]]] = {}  # a default name, its jobs without a result
    position: dict[str, int] = {}  # a default name and how many jobs before had it
    earlier: set[str] = set()  # names a job earlier in the order can be given
    found = []
    for job, default, second in planned:
        key = collision_key(default)
        pos = position[key] = position.get(key, -1) + 1
        # a job's second choice only when an earlier one can take its default; a number N only
        # at place N or later among those sharing the default (one per place, from 2)
        names = list(dict.fromkeys([key, collision_key(second)] if key in earlier else [key]))
        earlier.update(names)
        if os.path.lexists(job.target):
            found.append(job)
            continue
        for name in names:
            missing.setdefault(name, []).append(job)
        group.setdefault(key, []).append((pos, job))
    for job in found:
        rivals = missing.get(collision_key(job.target), [])[:4]
        if numbered := NUMBERED.fullmatch(job.target.name):
            base = collision_key(job.target.with_name(numbered[1] + (numbered[3] or "")))
            sharing = group.get(base, [])
            start = bisect_left(sharing, int(numbered[2]) - 1, key=lambda p: p[0])
            rivals += [j for _, j in sharing[start:start + 4]]
        job.rivals = tuple(dict.fromkeys(j.source for j in rivals))
        for rival in rivals:
            rival.held = rival.held or job.target


def _numbered(job: Job, suffix: str, n: int, limit: int) -> Path:
    """``STEM-N.EXT`` for a result whose names are taken, the stem cut (by whole characters) so
    the name fits the ``limit`` bytes of its file system."""
    tail = f"{suffix}-{n}{job.target.suffix}"
    stem = job.source.stem
    while stem and len(os.fsencode(stem + tail)) > limit:
        stem = stem[:-1]
    return job.target.with_name(stem + tail)

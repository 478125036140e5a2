"""An animated AVIF's loop count, which Pillow neither reads nor writes: read from its colour
track's edit list (moov/trak/edts/elst) as libavif reads it, so that an animated PNG or WebP
result plays as often as its source, and an AVIF result, which loops for ever, is noted where
its source did not. Pillow's writer puts an edit list in every sequence (repeated, over an
indefinite track duration: for ever); the other counts are made by editing it as libavif
writes them."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from drcn_plugin import engine
from drcn_plugin.av1header import avif_plays
from drcn_plugin.batch import Job, run_job

pytestmark = pytest.mark.skipif(not features.check("avif"), reason="this Pillow has no AVIF codec")
INDEFINITE = (1 << 64) - 1  # a version 1 tkhd's duration "not known": the list repeats for ever


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, start, end) of each box in ``data[start:end]`` (Pillow writes 32-bit sizes)."""
    while start < end:
        size, kind = struct.unpack_from(">I4s", data, start)
        yield kind, start, start + size
        start += size


def _sequence(mode: str = "RGB") -> bytes:
    """A two-frame AVIF sequence as Pillow writes it."""
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 256, (4, 6, len(mode)), np.uint8), mode)
              for _ in range(2)]
    out = io.BytesIO()
    frames[0].save(out, "AVIF", save_all=True, append_images=frames[1:], duration=[100, 150])
    return out.getvalue()


def _tracks(data: bytes) -> list[tuple[int, int]]:
    """Where each trak box of ``data``'s movie box starts and ends."""
    moov = next((a, b) for kind, a, b in _boxes(data, 0, len(data)) if kind == b"moov")
    return [(a, b) for kind, a, b in _boxes(data, moov[0] + 8, moov[1]) if kind == b"trak"]


def _edited(data: bytes, repeated: bool, duration: int, track: int = 0) -> bytes:
    """``data`` with a track's edit list repeated or not (flag 1) and its track duration (in
    segments' units: the list's one segment lasts 250, the frames' milliseconds) set."""
    data = bytearray(data)
    start, end = _tracks(data)[track]
    boxes = {kind: a for kind, a, _ in _boxes(data, start + 8, end)}
    tkhd, elst = boxes[b"tkhd"] + 8, boxes[b"edts"] + 16  # payloads: both version 1
    assert data[tkhd] == data[elst] == 1 and struct.unpack_from(">Q", data, elst + 8) == (250,)
    data[elst + 3] = repeated
    struct.pack_into(">Q", data, tkhd + 28, duration)
    return bytes(data)


@pytest.mark.parametrize(("repeated", "duration", "plays"), [
    (True, INDEFINITE, 0),  # as Pillow and libavif write for ever
    (True, 750, 3),  # as libavif writes 3 plays
    (True, 501, 3),  # a list repeated over a duration it does not fill: the last play cut short
    (True, 100, 1),  # a duration shorter than the list
    (False, 250, 1),  # as libavif writes one play
    (False, INDEFINITE, 1),  # not repeated, whatever the duration
], ids=["for-ever", "three", "three-cut-short", "shorter", "once", "once-indefinite"])
def test_the_plays_are_read_from_the_edit_list_as_libavif_reads_them(
        repeated: bool, duration: int, plays: int) -> None:
    """libavif's repetitionCount plus one: for ever over an indefinite track duration, else
    the track duration over the list's, rounded up; once where the list is not repeated."""
    assert avif_plays(io.BytesIO(_edited(_sequence(), repeated, duration))) == plays


def test_the_colour_tracks_list_counts_wherever_the_movie_box_lies() -> None:
    """An alpha plane's track (tref auxl) comes first here and loops for ever: the colour
    track's 3 plays count, as libavif reads them; a movie box after the media data (as a
    video muxer may write it) is found past it; no edit list plays for ever, as Chrome has it;
    a damaged one is unknown."""
    data = _sequence("RGBA")
    (a, b), (c, d) = _tracks(data)
    data = _edited(data, True, 750)  # track 0: the colour track, as libavif writes it
    swapped = data[:a] + data[c:d] + data[a:b] + data[d:]  # the same size: offsets still hold
    assert avif_plays(io.BytesIO(swapped)) == 3
    top = {kind: data[a:b] for kind, a, b in _boxes(data, 0, len(data))}
    media = struct.pack(">I4s", 8 + 300_000, b"mdat") + bytes(300_000)
    assert avif_plays(io.BytesIO(top[b"ftyp"] + media + top[b"moov"])) == 3
    unlisted = bytearray(_edited(data, True, 750, track=1))  # the alpha plane's: 3 plays
    unlisted[unlisted.index(b"edts", a)] = ord("f")  # fdts: the colour track has no edit list
    assert avif_plays(io.BytesIO(bytes(unlisted))) == 0
    twice = bytearray(data)
    struct.pack_into(">I", twice, twice.index(b"elst") + 8, 2)  # two entries: libavif's refusal
    f = io.BytesIO(bytes(twice))
    f.seek(5)
    assert avif_plays(f) is None and f.tell() == 5


@pytest.mark.parametrize("out", ["png", "webp", "avif"])
@pytest.mark.parametrize(("repeated", "duration", "plays"),
                         [(True, INDEFINITE, 0), (False, 250, 1), (True, 750, 3)],
                         ids=["for-ever", "once", "three"])
def test_a_result_plays_as_often_as_its_avif_source(tmp_path: Path, tiny_model_file: str,
                                                    out: str, repeated: bool, duration: int,
                                                    plays: int) -> None:
    """Pillow read no count from an AVIF: every result looped for ever, noted as a count not
    kept even where the source looped for ever too. Now an APNG or WebP result plays as often
    as its source; an AVIF result, which Pillow writes looping for ever, is noted where its
    source played a number of times."""
    source = tmp_path / "a.avif"
    source.write_bytes(_edited(_sequence(), repeated, duration))
    job = Job(source, tmp_path / f"b.{out}", fmt=out)
    outcome = run_job(job, engine.Upscaler(tiny_model_file, device="cpu"), 2.0)
    assert outcome.status == "done", outcome.message
    with Image.open(job.target) as im:
        assert im.n_frames == 2
        assert im.info.get("loop") == (None if out == "avif" else plays)
    noted = out == "avif" and plays != 0
    assert ("loop count not kept" in outcome.message) == noted, outcome.message
    assert not noted or f"(the source plays {plays} time" in outcome.message, outcome.message

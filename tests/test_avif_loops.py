"""An animated AVIF's loop count, which Pillow neither reads nor writes: read from its colour
track's edit list (moov/trak/edts/elst) as libavif reads it, and written into the boxes of an
AVIF result as libavif writes it, so that every result plays as often as its source. Pillow's
writer puts an edit list in every sequence (repeated, over an indefinite track duration: for
ever); the other counts are made by editing it as libavif writes them."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import upscaled_plays
from PIL import Image, features

from drcn_plugin import animation, engine
from drcn_plugin.av1header import avif_plays, avif_with_plays
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
    """Pillow reads no count from an AVIF, so the count is read here: every result plays as
    often as its source, an AVIF one by its edit list as libavif writes it, and nothing is
    noted (not even a count lost where the source loops for ever)."""
    source = tmp_path / "a.avif"
    source.write_bytes(_edited(_sequence(), repeated, duration))
    got, message = upscaled_plays(source, out, tiny_model_file)
    assert got == plays
    assert "loop count not kept" not in message, message


def _timing(data: bytes) -> list[tuple[bytes, int, int]]:
    """(box, duration, edit list flags) of the movie header and of each track's header, as
    Pillow writes them (version 1 boxes; the movie header has no edit list: flags -1)."""
    moov = next((a, b) for kind, a, b in _boxes(data, 0, len(data)) if kind == b"moov")
    mvhd = next(a for kind, a, _ in _boxes(data, moov[0] + 8, moov[1]) if kind == b"mvhd")
    got = [(b"mvhd", *struct.unpack_from(">Q", data, mvhd + 8 + 24), -1)]
    for start, end in _tracks(data):
        boxes = {kind: a for kind, a, _ in _boxes(data, start + 8, end)}
        flags = int.from_bytes(data[boxes[b"edts"] + 17: boxes[b"edts"] + 20], "big")
        got.append((b"tkhd", *struct.unpack_from(">Q", data, boxes[b"tkhd"] + 8 + 28), flags))
    return got


def _decoded(data: bytes) -> list[tuple[bytes, int]]:
    """Each frame's pixels and duration as Pillow decodes them."""
    with Image.open(io.BytesIO(data)) as im:
        frames = []
        for k in range(im.n_frames):
            im.seek(k)
            frames.append((im.tobytes(), im.info["duration"]))
        return frames


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("plays", [1, 2, 3, 65536])
def test_an_avif_is_made_to_play_a_number_of_times_as_libavif_writes_it(mode: str,
                                                                      plays: int) -> None:
    """libavif's writer: the movie's and every track's duration (an alpha plane's too) the
    edit list's segment times the plays, the list repeated (flag 1) for more than one play;
    nothing else changes: every frame decodes as before, for as long."""
    data, tracks = _sequence(mode), len(mode) - 2  # a colour track, and an alpha plane's
    assert _timing(data) == [(b"mvhd", INDEFINITE, -1)] + [(b"tkhd", INDEFINITE, 1)] * tracks
    made = avif_with_plays(data, plays)
    assert made is not None and len(made) == len(data)
    assert avif_plays(io.BytesIO(made)) == plays
    total = 250 * plays  # the list's segment: the frames' 100 + 150 ms
    assert _timing(made) == [(b"mvhd", total, -1)] + [(b"tkhd", total, int(plays > 1))] * tracks
    assert _decoded(made) == _decoded(data)
    assert avif_with_plays(made, plays) == made  # edited again: the same file


def test_an_avif_laid_out_otherwise_is_not_edited() -> None:
    """No movie box, a track without an edit list, a list of two edits, tracks whose lists
    differ, or a count that its fields cannot hold: None, and the caller keeps the file that
    loops for ever (noted) rather than write one that may be damaged."""
    data = _sequence("RGBA")
    unlisted = bytearray(data)
    unlisted[unlisted.index(b"edts", _tracks(data)[1][0])] = ord("f")  # the alpha track's
    twice = bytearray(data)
    struct.pack_into(">I", twice, twice.index(b"elst") + 8, 2)
    (a, b), _ = _tracks(data)
    other = bytearray(data)
    struct.pack_into(">Q", other, other.index(b"elst", b) + 12, 300)  # the alpha list: 300
    still = io.BytesIO()
    Image.new("RGB", (4, 4)).save(still, "AVIF")
    for bad in (bytes(unlisted), bytes(twice), bytes(other), still.getvalue()):
        assert avif_with_plays(bad, 3) is None
    assert avif_with_plays(data, 1 << 32) is None  # libavif reads past 2**31 plays as for ever


@pytest.mark.parametrize(("ext", "loop", "plays"), [("gif", 2, 3), ("png", 1, 1), ("gif", 0, 0)],
                         ids=["gif-three", "apng-once", "gif-for-ever"])
def test_an_avif_result_plays_as_often_as_its_gif_or_apng_source(
        tmp_path: Path, tiny_model_file: str, ext: str, loop: int, plays: int) -> None:
    """A GIF's loop 2 plays three times, an APNG's num_plays 1 once: the AVIF result too, its
    frames as long as the source's; nothing noted."""
    frames = [Image.new("RGB", (6, 4), c) for c in ("red", "blue")]
    source = tmp_path / f"a.{ext}"
    frames[0].save(source, save_all=True, append_images=frames[1:], duration=[100, 150],
                   loop=loop)
    job = Job(source, tmp_path / "b.avif", fmt="avif")
    outcome = run_job(job, engine.Upscaler(tiny_model_file, device="cpu"), 2.0)
    assert outcome.status == "done" and "loop count" not in outcome.message, outcome.message
    data = job.target.read_bytes()
    assert avif_plays(io.BytesIO(data)) == plays
    assert [d for _, d in _decoded(data)] == [100, 150]


def test_an_avif_result_whose_boxes_cannot_be_edited_is_noted(
        tmp_path: Path, tiny_model_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Pillow's file is laid out otherwise than expected it is written as it is, looping
    for ever, and the count lost is noted."""
    monkeypatch.setattr(animation, "avif_with_plays", lambda data, plays: None)
    source = tmp_path / "a.avif"
    source.write_bytes(_edited(_sequence(), True, 750))
    job = Job(source, tmp_path / "b.avif")
    outcome = run_job(job, engine.Upscaler(tiny_model_file, device="cpu"), 2.0)
    assert outcome.status == "done", outcome.message
    assert "loop count not kept (the source plays 3 times)" in outcome.message, outcome.message
    with job.target.open("rb") as f:
        assert avif_plays(f) == 0

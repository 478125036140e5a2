"""Denoise strength and the per-file default, with a stand-in photo model registered like a shipped
one (drcn-lite's weights, perturbed): the blend's ends are each model bit for bit, lossless files
get drcn-lite, JPEGs (and lossless files holding a JPEG's pixels) a strength from their quality,
and a named model always wins."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import DATA
from PIL import Image, features
from safetensors.torch import save_file
from typer.testing import CliRunner

from drcn_plugin import hub
from drcn_plugin.av1header import avif_base_q_idx
from drcn_plugin.cli import app
from drcn_plugin.compression import jpeg_history, webp_quantizer
from drcn_plugin.engine import Upscaler
from drcn_plugin.errors import DRCNError
from drcn_plugin.hub import choose_for_source, load_denoised, load_model
from drcn_plugin.integrations.gimp_worker import serve


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def photo_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A 'drcn-lite-photo' entry in the shipped table, checked by sha256 like the real ones."""
    torch.manual_seed(0)
    lite = load_model("drcn-lite")
    weights = {k: (v + 0.02 * torch.randn_like(v)).contiguous() for k, v in lite.state_dict().items()}
    path = tmp_path / "photo.safetensors"
    save_file(weights, str(path))
    entry = hub.ShippedModel("drcn-lite-photo", str(path), hub.sha256_of(path), 64, 16)
    monkeypatch.setitem(hub.SHIPPED, "drcn-lite-photo", entry)
    monkeypatch.setattr(hub, "PHOTO_VARIANTS", {"drcn-lite": "drcn-lite-photo"})
    return path


def test_denoise_ends_are_the_two_models_bit_for_bit(photo_model: Path) -> None:
    photo = load_model("drcn-lite-photo")
    assert _same_weights(load_denoised(0.0), load_model("drcn-lite"))
    assert _same_weights(load_denoised(1.0), photo)
    with pytest.raises(DRCNError, match="photo end"):
        load_denoised(1.0, "drcn-lite-photo")
    half = load_denoised(0.5).state_dict()
    lite = load_model("drcn-lite").state_dict()
    for k, v in photo.state_dict().items():
        assert torch.allclose(half[k], (v + lite[k]) / 2, atol=1e-6)
    with pytest.raises(DRCNError, match="no photo variant"):
        load_denoised(0.5, "drcn")
    with pytest.raises(DRCNError, match="outside 0..1"):
        load_denoised(1.5)


def test_denoise_0_is_any_model_as_named(tiny_model_file: str) -> None:
    # The hosts' default strength: a model without a photo variant works at 0, as in the CLI.
    assert _same_weights(load_denoised(0.0, tiny_model_file), load_model(tiny_model_file))
    assert _same_weights(load_denoised(0.0, "drcn-lite-photo"), load_model("drcn-lite-photo"))


def test_default_choice_follows_the_source(photo_model: Path) -> None:
    assert choose_for_source(False, None).label == "drcn-lite"
    strengths = [choose_for_source(True, q).denoise for q in range(1, 101)]
    # an index under every table's lowest bound still gets a choice: the finest's
    low = [{"webp_quantizer": -1.0}, {"av1_q_index": -1}, {"hevc_qp": -99}]
    assert [choose_for_source(True, None, **index).denoise for index in low] == [0.0] * 3
    assert strengths == sorted(strengths, reverse=True)  # lower quality, more denoising
    assert choose_for_source(True, 30).label == "drcn-lite-photo"
    assert choose_for_source(True, None) == choose_for_source(True, 80)  # WebP: unknown quality


def _through_jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize("name", ["Set5/bird", "Set14/baboon", "Set14/comic", "Set14/monarch"])
def test_jpeg_history_is_read_from_the_pixels(name: str) -> None:
    """A lossless copy of a JPEG's pixels gives the JPEG's quality, wherever the crop put its
    grid and whatever the channels; clean, resized, 16-bit or tiny pixels give None."""
    image = Image.open(DATA / f"{name}.png").convert("RGB").crop((16, 16, 144, 144))
    assert jpeg_history(np.asarray(image)) is None
    for quality in (90, 75, 50, 30):
        jpeg = _through_jpeg(image, quality)
        assert abs(jpeg_history(np.asarray(jpeg)) - quality) <= 2, quality
    for quality in (95, 97, 100):  # the README: 95 and up count as clean
        assert jpeg_history(np.asarray(_through_jpeg(image, quality))) is None, quality
    found = jpeg_history(np.asarray(_through_jpeg(image, 93)))
    assert found is None or abs(found - 93) <= 2  # 92-94: clean here, found there
    resaved = _through_jpeg(_through_jpeg(image, 60), 95)  # the first, stronger JPEG shows
    assert abs(jpeg_history(np.asarray(resaved)) - 60) <= 2
    jpeg = _through_jpeg(image, 75)
    assert jpeg_history(np.asarray(jpeg.crop((3, 5, 128, 128)))) == 75
    assert jpeg_history(np.asarray(jpeg.convert("RGBA"))) == 75
    assert jpeg_history(np.asarray(_through_jpeg(image.convert("L"), 75))) == 75
    assert jpeg_history(np.asarray(jpeg.resize((115, 115), Image.BICUBIC))) is None
    assert jpeg_history(np.asarray(jpeg).astype(np.uint16) * 257) is None
    assert jpeg_history(np.asarray(jpeg)[:15]) is None


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    pixels = Image.fromarray((rng.random((20, 24, 3)) * 255).astype("uint8"))
    pixels.save(folder / "a.png")
    pixels.save(folder / "b.jpg", quality=40)
    return folder


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(app, ["upscale", *args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result.output


def test_denoise_cli_ends_equal_the_named_models(photo_model: Path, sources: Path,
                                                 tmp_path: Path) -> None:
    for strength, model in (("0", "drcn-lite"), ("1", "drcn-lite-photo")):
        _run([str(sources / "b.jpg"), "-o", str(tmp_path / f"d{strength}"), "--denoise", strength])
        _run([str(sources / "b.jpg"), "-o", str(tmp_path / model), "--model", model])
        assert (tmp_path / f"d{strength}" / "b.jpg").read_bytes() == \
            (tmp_path / model / "b.jpg").read_bytes()


def test_unnamed_model_is_chosen_per_file_and_reported(photo_model: Path, sources: Path,
                                                      tmp_path: Path) -> None:
    out = _run([str(sources), "-o", str(tmp_path / "auto")])
    assert "drcn-lite-photo" in out  # the quality-40 JPEG
    _run([str(sources / "a.png"), "-o", str(tmp_path / "lite"), "--model", "drcn-lite"])
    assert (tmp_path / "auto" / "a.png").read_bytes() == (tmp_path / "lite" / "a.png").read_bytes()
    _run([str(sources / "b.jpg"), "-o", str(tmp_path / "photo"), "--model", "drcn-lite-photo"])
    assert (tmp_path / "auto" / "b.jpg").read_bytes() == (tmp_path / "photo" / "b.jpg").read_bytes()
    named = _run([str(sources), "-o", str(tmp_path / "named"), "--model", "drcn-lite"])
    assert "drcn-lite-photo" not in named  # a named model is used for every file
    assert "drcn upscale with drcn-lite on " in named and "drcn upscale on " in out  # the title


def test_a_lossless_copy_of_a_jpeg_is_upscaled_as_that_jpeg(photo_model: Path, tmp_path: Path,
                                                            wide_console: None) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    crop = Image.open(DATA / "Set14" / "monarch.png").convert("RGB").crop((0, 0, 96, 64))
    _through_jpeg(crop, 40).save(folder / "saved-as.png")
    assert "q40" in _run([str(folder), "-o", str(tmp_path / "auto")])  # the note
    _run([str(folder), "-o", str(tmp_path / "photo"), "--model", "drcn-lite-photo"])
    assert (tmp_path / "auto" / "saved-as.png").read_bytes() == \
        (tmp_path / "photo" / "saved-as.png").read_bytes()  # the model it got


def test_a_jpeg_resaved_from_a_stronger_one_is_upscaled_as_the_stronger(
        photo_model: Path, tmp_path: Path, wide_console: None) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    crop = Image.open(DATA / "Set14" / "monarch.png").convert("RGB").crop((0, 0, 96, 64))
    _through_jpeg(crop, 40).save(folder / "edited.jpg", quality=95)  # its tables say 95
    crop.save(folder / "fine.jpg", quality=95)
    out = _run([str(folder), "-o", str(tmp_path / "auto")])
    by_tables = choose_for_source(True, 95).label  # only fine.jpg goes by its tables
    assert "q40" in out and by_tables in out and by_tables != "drcn-lite-photo"
    _run([str(folder / "edited.jpg"), "-o", str(tmp_path / "photo"), "--model", "drcn-lite-photo"])
    assert (tmp_path / "auto" / "edited.jpg").read_bytes() == \
        (tmp_path / "photo" / "edited.jpg").read_bytes()


def test_host_denoise_inputs_load_the_blend(photo_model: Path) -> None:
    """ComfyUI's loader and the GIMP worker take the same strength as ``--denoise``."""
    from test_comfyui_nodes import LOADER, NODES

    photo = load_model("drcn-lite-photo")
    assert _same_weights(LOADER.load("drcn-lite", denoise=1.0)[0], photo)
    assert _same_weights(LOADER.load("drcn-lite-photo")[0], photo)  # 0: the model as chosen
    assert _same_weights(LOADER.load("drcn-lite", denoise=0.5)[0], load_denoised(0.5))
    with pytest.raises(NODES.DRCNNodeError, match="photo end"):
        LOADER.load("drcn-lite-photo", denoise=0.5)

    pixels = (np.random.default_rng(1).random((9, 11, 3)) * 255).astype(np.uint8)
    header = b'{"width": 11, "height": 9, "channels": 3, "dtype": "u8", "scale": 2, ' \
             b'"device": "cpu", "denoise": 1}\n'
    out = io.BytesIO()
    assert serve(io.BytesIO(header + pixels.tobytes()), out) == 0
    head, _, payload = out.getvalue().partition(b"\nresult 18 22 1188\n")
    assert payload and b"error" not in head
    want = Upscaler(photo, device="cpu").upscale(pixels, 2.0)
    assert np.array_equal(np.frombuffer(payload, np.uint8).reshape(18, 22, 3), want)


def test_eval_denoise_scores_the_blend(photo_model: Path, set5: Path, tmp_path: Path) -> None:
    """``drcn eval --denoise 1`` scores exactly the photo model; bicubic has nothing to blend."""
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(set5 / "baby.png", one)
    scores = []
    for args in (["--model", "drcn-lite", "--denoise", "1"], ["--model", "drcn-lite-photo"]):
        out = tmp_path / f"{len(scores)}.json"
        result = CliRunner().invoke(app, ["eval", "--dataset", str(one), "-s", "3", "--degrade",
                                          "jpeg:60", "--device", "cpu", "--json", str(out),
                                          *args])
        assert result.exit_code == 0, result.output
        scores.append(json.loads(out.read_text())["3"]["psnr"])
    assert scores[0] == scores[1]
    result = CliRunner().invoke(app, ["eval", "--dataset", str(one), "-s", "3", "--model",
                                      "bicubic", "--denoise", "0.5"])
    assert result.exit_code == 2 and "bicubic has none" in result.output
    assert "Traceback" not in result.output


def test_shipped_pair_denoise_ends_are_the_shipped_models() -> None:
    """The real drcn-lite / drcn-lite-photo pair: strength 0 and 1 are each file bit for bit."""
    assert hub.PHOTO_VARIANTS == {"drcn-lite": "drcn-lite-photo"}
    assert _same_weights(load_denoised(0.0), load_model("drcn-lite"))
    assert _same_weights(load_denoised(1.0), load_model("drcn-lite-photo"))
    assert not _same_weights(load_denoised(0.5), load_model("drcn-lite-photo"))


def _monarch_crop() -> Image.Image:
    return Image.open(DATA / "Set14" / "monarch.png").convert("RGB").crop((0, 0, 96, 64))


@pytest.mark.parametrize(("ext", "qualities"), [
    ("webp", (95, 90, 50)),
    pytest.param("avif", (95, 75, 40), marks=pytest.mark.skipif(
        not features.check("avif"), reason="Pillow without AVIF")),
])
def test_a_lossy_file_gets_the_strength_of_its_quantiser(
        photo_model: Path, tmp_path: Path, wide_console: None, ext: str,
        qualities: tuple[int, int, int]) -> None:
    """Read from the VP8 or AV1 frame header: a fine file keeps drcn-lite, a middling one
    denoise 0.5, a coarse one the photo model."""
    folder = tmp_path / "in"
    folder.mkdir()
    for quality in qualities:
        _monarch_crop().save(folder / f"q{quality}.{ext}", quality=quality)
    out = _run([str(folder), "-o", str(tmp_path / "out")]).splitlines()
    fine, middling, coarse = (next(line for line in out if f"q{q}.{ext}" in line
                                   and "done" in line) for q in qualities)
    assert "drcn-lite " in fine and "photo" not in fine and "denoise" not in fine
    assert "denoise 0.5" in middling
    assert "drcn-lite-photo" in coarse


def test_a_webp_quantiser_is_its_first_frames_and_none_when_lossless_or_cut() -> None:
    """Fine and coarse files fall either side of the rule's bounds; the first frame of an
    animation counts; a lossless file, or one cut inside its frame header, reads as None."""
    crop = _monarch_crop()

    def saved(**options: object) -> bytes:
        buf = io.BytesIO()
        crop.save(buf, "WEBP", **options)
        return buf.getvalue()

    def quantiser(**options: object) -> float | None:
        return webp_quantizer(io.BytesIO(saved(**options)))

    fine, coarse = quantiser(quality=95), quantiser(quality=50)
    assert 0 <= fine < hub.DENOISE_BY_VP8_QUANTIZER[1][0] < hub.DENOISE_BY_VP8_QUANTIZER[0][0] \
        <= coarse <= 127
    animated = quantiser(quality=50, save_all=True, append_images=[crop.rotate(90)])
    assert animated is not None and animated >= hub.DENOISE_BY_VP8_QUANTIZER[0][0]
    assert quantiser(lossless=True) is None
    data = saved(quality=50)
    assert webp_quantizer(io.BytesIO(data[:30])) is None  # cut inside the frame's header
    cut = webp_quantizer(io.BytesIO(data[:40]))  # header fields read past the end as zeros
    assert cut is None or 0 <= cut <= 127


@pytest.mark.skipif(not features.check("avif"), reason="Pillow without AVIF")
def test_an_avif_quantiser_falls_as_its_quality_rises() -> None:
    """255 at quality 0, 0 (lossless) at 100; an alpha item or several tiles read alike."""
    crop = _monarch_crop()

    def index(quality: int, image: Image.Image = crop) -> int | None:
        buf = io.BytesIO()
        image.save(buf, "AVIF", quality=quality)
        return avif_base_q_idx(buf)

    indices = [index(q) for q in (0, 20, 50, 80, 95, 100)]
    assert indices[0] == 255 and indices[-1] == 0 and indices == sorted(indices, reverse=True)
    assert index(50, crop.convert("RGBA")) == indices[2]  # the alpha item is not the image
    assert index(50, crop.resize((4200, 2800))) == indices[2]  # several tiles


@pytest.mark.skipif(not features.check("avif"), reason="Pillow without AVIF")
def test_a_damaged_or_foreign_avif_has_no_quantiser_and_no_error() -> None:
    buf = io.BytesIO()
    Image.open(DATA / "Set5" / "bird.png").save(buf, "AVIF", quality=50)
    data = buf.getvalue()
    rng = np.random.default_rng(0)
    assert avif_base_q_idx(io.BytesIO(rng.bytes(4000))) is None
    whole, pixels = avif_base_q_idx(io.BytesIO(data)), data.find(b"mdat")
    for cut in range(0, 600, 7):  # inside the boxes, then the headers, then past them
        got = avif_base_q_idx(io.BytesIO(data[:cut]))
        assert got is None if cut < pixels + 20 else got in (None, whole), (cut, got)
    for _ in range(300):
        mutated = bytearray(data)
        for i in rng.integers(0, 600, 3):
            mutated[i] = int(rng.integers(256))
        f = io.BytesIO(bytes(mutated))
        f.seek(5)
        got = avif_base_q_idx(f)
        assert (got is None or 0 <= got <= 255) and f.tell() == 5

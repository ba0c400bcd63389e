"""load_rgb / probe_image: error cases first, then conversions checked against hand-computed pixels."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featscope.datasets import IMAGE_EXTENSIONS, ImageDecodeError, load_rgb, probe_image

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(tmp_path / "nope.png")
    assert info.value.reason == "file not found"
    assert "nope.png" in str(info.value)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ImageDecodeError) as info:
        probe_image(tmp_path / "dir.png")
    assert info.value.reason == "unreadable file"


@pytest.mark.parametrize("fn", [load_rgb, probe_image])
def test_zero_byte_file(tmp_path: Path, make_image, fn) -> None:
    path = make_image(tmp_path / "empty.jpg", kind="empty")
    with pytest.raises(ImageDecodeError) as info:
        fn(path)
    assert info.value.reason == "empty file"
    assert str(path) in str(info.value) and "0 bytes" in str(info.value)


@pytest.mark.parametrize("fn", [load_rgb, probe_image])
def test_text_file_named_jpg(tmp_path: Path, make_image, fn) -> None:
    path = make_image(tmp_path / "notes.jpg", kind="text")
    with pytest.raises(ImageDecodeError) as info:
        fn(path)
    assert info.value.reason == "not an image"
    assert ".jpg" in info.value.detail


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_truncated_file_fails_full_decode_but_passes_header(tmp_path: Path, make_image, suffix: str) -> None:
    path = make_image(tmp_path / f"cut{suffix}", size=(64, 48), kind="truncated")
    assert probe_image(path) == (64, 48)  # the header survives
    with pytest.raises(ImageDecodeError) as info:
        load_rgb(path)
    assert info.value.reason == "truncated"
    with pytest.raises(ImageDecodeError):
        probe_image(path, full=True)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [12, 64])  # 144 px: Pillow only warns; 4096 px: Pillow raises
def test_decompression_bomb(tmp_path: Path, make_image, monkeypatch, side: int) -> None:
    path = make_image(tmp_path / "bomb.png", size=(side, side))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    for fn in (load_rgb, probe_image):
        with pytest.raises(ImageDecodeError) as info:
            fn(path)
        assert info.value.reason == "too large"
        assert "MAX_IMAGE_PIXELS" in info.value.detail


def test_decode_error_pickles(tmp_path: Path) -> None:
    err = ImageDecodeError(tmp_path / "a.png", "truncated", "copy it again")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, back.detail, str(back)) == (err.path, err.reason, err.detail, str(err))


# ---------------------------------------------------------------- orientation


def _quadrants(w: int = 32, h: int = 16) -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right white."""
    a = np.zeros((h, w, 3), np.uint8)
    a[: h // 2, : w // 2] = RED
    a[: h // 2, w // 2 :] = GREEN
    a[h // 2 :, : w // 2] = BLUE
    a[h // 2 :, w // 2 :] = WHITE
    return Image.fromarray(a)


def _quadrant_colours(img: Image.Image) -> list[tuple[int, int, int]]:
    """Colours at the centres of the TL, TR, BL, BR quadrants."""
    w, h = img.size
    return [img.getpixel((x, y)) for y in (h // 4, 3 * h // 4) for x in (w // 4, 3 * w // 4)]


def _close(actual, expected, tol: int = 40) -> bool:
    return all(abs(a - e) <= tol for pa, pe in zip(actual, expected) for a, e in zip(pa, pe))


@pytest.mark.parametrize(
    ("orientation", "expected"),
    [
        # 6: displayed = stored turned 90 deg clockwise -> the stored left column becomes the top row.
        (6, [BLUE, RED, WHITE, GREEN]),
        # 8: displayed = stored turned 90 deg counter-clockwise -> the stored right column becomes the top row.
        (8, [GREEN, WHITE, RED, BLUE]),
    ],
)
def test_exif_orientation(tmp_path: Path, snapshot, orientation: int, expected) -> None:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    _quadrants().save(path, quality=95, exif=exif.tobytes())
    before = snapshot(tmp_path)

    img = load_rgb(path)
    assert img.mode == "RGB" and img.size == (16, 32)
    assert _close(_quadrant_colours(img), expected)
    assert probe_image(path) == (16, 32)
    assert probe_image(path, full=True) == (16, 32)
    assert snapshot(tmp_path) == before  # never modifies the file


def test_png_exif_orientation_seen_by_header_probe(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "o6.png"
    _quadrants().save(path, exif=exif.tobytes())
    assert probe_image(path) == (16, 32)
    assert _quadrant_colours(load_rgb(path)) == [BLUE, RED, WHITE, GREEN]


# ---------------------------------------------------------------- modes


def test_grayscale(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 77, 255]], np.uint8)).save(tmp_path / "g.png")
    img = load_rgb(tmp_path / "g.png")
    assert img.mode == "RGB"
    assert np.asarray(img).tolist() == [[[0, 0, 0], [77, 77, 77], [255, 255, 255]]]


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257, 1000, 32896, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as raw:
        assert raw.mode.startswith("I")  # really stored as 16-bit
    # v * 255 / 65535 rounded: 0, 1, 3.89 -> 4, 128.0, 255
    assert np.asarray(load_rgb(tmp_path / "g16.png"))[0, :, 0].tolist() == [0, 1, 4, 128, 255]


def test_16bit_pgm_mode_i(tmp_path: Path) -> None:
    path = tmp_path / "g16.pgm"
    path.write_bytes(b"P5 3 1 65535\n" + np.array([0, 32896, 65535], ">u2").tobytes())
    assert np.asarray(load_rgb(path))[0, :, 1].tolist() == [0, 128, 255]


def test_float_tiff_in_unit_range(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0.0, 0.25, 1.0]], np.float32)).save(tmp_path / "f.tif")
    assert np.asarray(load_rgb(tmp_path / "f.tif"))[0, :, 2].tolist() == [0, 64, 255]  # 63.75 -> 64


def test_palette_with_transparency_composites_on_white(tmp_path: Path) -> None:
    img = Image.new("P", (2, 1))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.putpixel((1, 0), 1)
    img.save(tmp_path / "p.png", transparency=1)
    assert np.asarray(load_rgb(tmp_path / "p.png")).tolist() == [[list(RED), list(WHITE)]]


def test_palette_gif(tmp_path: Path) -> None:
    Image.new("RGB", (4, 4), BLUE).convert("P").save(tmp_path / "p.gif")
    assert load_rgb(tmp_path / "p.gif").getpixel((1, 1)) == BLUE


def test_rgba_composites_on_white(tmp_path: Path) -> None:
    a = np.array([[[0, 100, 200, 128], [10, 20, 30, 0], [10, 20, 30, 255]]], np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    out = np.asarray(load_rgb(tmp_path / "a.png")).astype(int)
    # c * 128/255 + 255 * 127/255: 127.0, 177.2, 227.4
    assert np.abs(out[0, 0] - [127, 177, 227]).max() <= 1
    assert out[0, 1].tolist() == [255, 255, 255]
    assert out[0, 2].tolist() == [10, 20, 30]


def test_la_composites_on_white(tmp_path: Path) -> None:
    Image.fromarray(np.array([[[50, 255], [50, 0]]], np.uint8)).save(tmp_path / "la.png")
    with Image.open(tmp_path / "la.png") as raw:
        assert raw.mode == "LA"
    assert np.asarray(load_rgb(tmp_path / "la.png")).tolist() == [[[50, 50, 50], [255, 255, 255]]]


def test_cmyk_jpeg(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as raw:
        assert raw.mode == "CMYK"
    assert _close([load_rgb(tmp_path / "c.jpg").getpixel((8, 8))], [RED], tol=8)


def test_extensions_are_lower_case_and_cover_common_formats() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"} <= IMAGE_EXTENSIONS
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)

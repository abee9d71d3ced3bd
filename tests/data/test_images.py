"""decode_image on a corpus of bad and odd files built in tmp_path."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from mpft.data.images import DecodedImage, decode_image
from mpft.data.sniff import is_image_file, sniff_image_type
from mpft.errors import DataError, ImageDecodeError
from tests.kit import noise_image, png_bomb


def _rgb(decoded: DecodedImage) -> np.ndarray:
    assert decoded.image.mode == "RGB"
    return np.asarray(decoded.image).astype(int)


# --- failures -----------------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match="empty") as info:
        decode_image(p)
    assert info.value.source == str(p)


def test_missing_file_is_decode_error_and_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        decode_image(tmp_path / "nope.png")


def test_empty_bytes() -> None:
    with pytest.raises(ImageDecodeError, match="empty") as info:
        decode_image(b"")
    assert info.value.source == "<bytes>"


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    p = tmp_path / "page.jpg"
    p.write_text("<html><body>404 not found</body></html>")
    with pytest.raises(ImageDecodeError, match="not an image"):
        decode_image(p)
    assert not is_image_file(p)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_file_detected(tmp_path: Path, fmt: str) -> None:
    buf = io.BytesIO()
    noise_image(64, 64).save(buf, format=fmt)
    data = buf.getvalue()
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageDecodeError, match="truncated|corrupt"):
        decode_image(p)


def test_truncation_detected_even_if_pillow_global_is_lenient(tmp_path: Path, monkeypatch) -> None:
    buf = io.BytesIO()
    noise_image(64, 64).save(buf, format="JPEG")
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageDecodeError):
        decode_image(buf.getvalue()[:800])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_header_over_max_pixels_rejected_before_loading() -> None:
    # 9000 x 9000 = 81 MP: below Pillow's own guard (~89 MP), above our 64 MP default.
    # The header holds no pixel data, so a "too large" reason proves the check ran before load.
    with pytest.raises(ImageDecodeError, match="too large"):
        decode_image(png_bomb(9000, 9000, pixel_data=False))


def test_huge_header_rejected_by_max_pixels_not_pillow() -> None:
    # 1.6 GP: over Pillow's own error limit (179 MP); the reason names mpft's limit and how to raise it
    with pytest.raises(ImageDecodeError, match=r"max_pixels=64000000.*--max-pixels"):
        decode_image(png_bomb(40000, 40000, pixel_data=False))


def _jpeg_bytes(w: int, h: int, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    noise_image(w, h).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.mark.parametrize("pillow_limit", [60_000, 40_000, 10_000])
def test_max_pixels_is_the_only_limit(monkeypatch, pillow_limit: int) -> None:
    """Pillow's global guard (warning at MAX_IMAGE_PIXELS, error at twice that) does not add a
    second, image-dependent limit: 300x200 = 60000 pixels sits at, above and far above it."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    data = _jpeg_bytes(300, 200)
    assert decode_image(data).image.size == (300, 200)
    assert decode_image(data, max_pixels=60_000).image.size == (300, 200)
    with pytest.raises(ImageDecodeError, match="max_pixels=59999"):
        decode_image(data, max_pixels=59_999)
    assert pillow_limit == Image.MAX_IMAGE_PIXELS  # Pillow's setting is left as it was


def test_over_limit_jpeg_decoded_at_reduced_scale_when_the_caller_allows() -> None:
    data = _jpeg_bytes(2000, 1500)  # 3 MP
    with pytest.raises(ImageDecodeError, match="max_pixels=1000000"):
        decode_image(data, max_pixels=1_000_000)  # full size needed: too large
    dec = decode_image(data, max_pixels=1_000_000, draft_min_side=300)
    # 1/4 scale is the smallest keeping the shorter side >= 300; never more than max_pixels decoded
    assert dec.image.size == (500, 375)
    assert dec.original_size == (2000, 1500)
    assert any("reduced scale" in n for n in dec.notes)
    # still too large at the smallest allowed scale: rejected, saying so
    with pytest.raises(ImageDecodeError, match="still 1000x750"):
        decode_image(data, max_pixels=500_000, draft_min_side=600)
    # a PNG cannot be decoded at reduced scale
    buf = io.BytesIO()
    noise_image(2000, 1500).save(buf, format="PNG", compress_level=0)
    with pytest.raises(ImageDecodeError, match="max_pixels=1000000"):
        decode_image(buf.getvalue(), max_pixels=1_000_000, draft_min_side=300)


@pytest.mark.slow
def test_phone_photo_108_megapixels(tmp_path: Path) -> None:
    """A 12000x9000 JPEG (a 108 MP phone sensor) decodes once max_pixels allows it, at full size
    for a cropping policy and at 1/8 scale for a resizing one."""
    path = tmp_path / "phone.jpg"
    Image.new("RGB", (12000, 9000), (90, 140, 60)).save(path, quality=80)
    with pytest.raises(ImageDecodeError, match="max_pixels=64000000"):
        decode_image(path)
    assert decode_image(path, draft_min_side=672).image.size == (1500, 1125)
    assert decode_image(path, max_pixels=200_000_000).image.size == (12000, 9000)


@pytest.mark.parametrize("bad", [0, -5, 1.5, "64000000", None, True])
def test_max_pixels_must_be_a_positive_integer(bad) -> None:
    from mpft.errors import ConfigError

    with pytest.raises(ConfigError, match="max_pixels"):
        decode_image(_jpeg_bytes(8, 8), max_pixels=bad)


@pytest.mark.parametrize("bad", [42, 3.5, None, ["a.png"], np.zeros((4, 4, 3), np.uint8)])
def test_unsupported_input_type_is_a_decode_error(bad) -> None:
    """Every input passes through decode_image, so a per-item caller gets one error row for it."""
    with pytest.raises(ImageDecodeError, match=f"unsupported input type {type(bad).__name__}; pass a path"):
        decode_image(bad)


def test_max_pixels_argument(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    noise_image(50, 40).save(p)
    assert decode_image(p, max_pixels=2000).image.size == (50, 40)
    with pytest.raises(ImageDecodeError, match="2001 pixels|max_pixels=1999"):
        decode_image(p, max_pixels=1999)


def test_zero_size_image() -> None:
    with pytest.raises(ImageDecodeError):
        decode_image(png_bomb(0, 10, pixel_data=False))


# --- odd but valid files -------------------------------------------------------------------


def test_cmyk_jpeg(tmp_path: Path) -> None:
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 10), (0, 255, 255, 0)).save(p, quality=95)  # pure red in CMYK
    d = decode_image(p)
    assert d.original_mode == "CMYK" and d.format == "JPEG"
    assert "CMYK converted to RGB" in d.notes
    r, g, b = _rgb(d).reshape(-1, 3).mean(axis=0)
    assert r > 200 and g < 60 and b < 60


def test_16bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    arr = np.array([[0, 1000, 32896, 65535]], dtype=np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    d = decode_image(p)
    assert d.original_mode.startswith("I")
    assert "16-bit reduced to 8-bit" in d.notes
    assert _rgb(d)[0, :, 0].tolist() == [0, 4, 128, 255]
    assert (_rgb(d)[..., 0] == _rgb(d)[..., 2]).all()


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", (4, 1))
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    im.putdata([0, 1, 0, 1])
    p = tmp_path / "pal.png"
    im.save(p, transparency=0)
    d = decode_image(p)
    assert "palette converted" in d.notes and "alpha composited on white" in d.notes
    assert _rgb(d)[0].tolist() == [[255, 255, 255], [255, 0, 0], [255, 255, 255], [255, 0, 0]]


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    p = tmp_path / "rgba.png"
    Image.new("RGBA", (3, 3), (255, 0, 0, 128)).save(p)
    d = decode_image(p)
    assert "alpha composited on white" in d.notes
    assert _rgb(d)[1, 1].tolist() == pytest.approx([255, 127, 127], abs=1)


def test_la_composited_on_white(tmp_path: Path) -> None:
    p = tmp_path / "la.png"
    Image.new("LA", (3, 3), (0, 0)).save(p)  # fully transparent black
    d = decode_image(p)
    assert d.original_mode == "LA"
    assert (_rgb(d) == 255).all()


def test_grayscale_and_1bit(tmp_path: Path) -> None:
    p = tmp_path / "gray.png"
    Image.new("L", (5, 5), 77).save(p)
    d = decode_image(p)
    assert "grayscale" in d.notes and (_rgb(d) == 77).all()
    q = tmp_path / "bw.png"
    bw = Image.new("1", (4, 4), 0)
    bw.putpixel((0, 0), 1)
    bw.save(q)
    d1 = decode_image(q)
    assert d1.original_mode == "1"
    assert _rgb(d1)[0, 0].tolist() == [255, 255, 255] and _rgb(d1)[1, 1].tolist() == [0, 0, 0]


def test_exif_rotated_jpeg(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 8, 20))  # red band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif, quality=95)
    d = decode_image(p)
    assert d.original_size == (40, 20)
    assert d.image.size == (20, 40)
    assert "EXIF orientation applied" in d.notes
    arr = _rgb(d)
    assert arr[2, 10, 0] > 200 and arr[2, 10, 2] < 60  # the left band is now on top
    assert arr[-2, 10, 2] > 200


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_first_frame(tmp_path: Path, fmt: str) -> None:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    frames = [Image.new("RGB", (16, 16), c) for c in colours]
    p = tmp_path / f"anim.{fmt.lower()}"
    kwargs = {"lossless": True} if fmt == "WEBP" else {}
    frames[0].save(p, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **kwargs)
    d = decode_image(p)
    assert "animated: first of 3 frames used" in d.notes
    r, g, b = _rgb(d).reshape(-1, 3).mean(axis=0)
    assert r > 240 and g < 15 and b < 15


def test_bytes_and_pil_inputs(tmp_path: Path) -> None:
    im = noise_image(12, 9)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    from_bytes = decode_image(buf.getvalue())
    assert from_bytes.source == "<bytes>" and from_bytes.format == "PNG"
    assert np.array_equal(np.asarray(from_bytes.image), np.asarray(im))
    from_pil = decode_image(im)
    assert from_pil.image is not im
    assert np.array_equal(np.asarray(from_pil.image), np.asarray(im))
    assert from_pil.notes == ()


def test_no_file_handles_left_open(tmp_path: Path) -> None:
    good = tmp_path / "good.png"
    noise_image(8, 8).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(good.read_bytes()[:60])
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc")
    before = len(os.listdir(fd_dir))
    for _ in range(20):
        decode_image(good)
        with pytest.raises(ImageDecodeError):
            decode_image(bad)
    assert len(os.listdir(fd_dir)) <= before


# --- sniffing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tiff")],
)
def test_sniff_real_encodings(fmt: str, expected: str) -> None:
    buf = io.BytesIO()
    noise_image(8, 8).save(buf, format=fmt)
    assert sniff_image_type(buf.getvalue()[:16]) == expected


@pytest.mark.parametrize(
    "head", [b"", b"hello world, BM!", b"BMx plain text..", b"RIFF\x00\x00\x00\x00WAVE", b"\xff\xd8"]
)
def test_sniff_rejects_non_images(head: bytes) -> None:
    assert sniff_image_type(head) is None


def test_is_image_file_by_content(tmp_path: Path) -> None:
    png_named_txt = tmp_path / "photo.txt"
    noise_image(8, 8).save(png_named_txt, format="PNG")
    assert is_image_file(png_named_txt)
    assert not is_image_file(tmp_path / "missing.png")


def test_probe_image_applies_the_decode_size_rule_without_decoding(tmp_path: Path, monkeypatch) -> None:
    from mpft.data.limits import probe_image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow's guard is left out here too
    data = _jpeg_bytes(2000, 1500)
    assert probe_image(data) == (2000, 1500)
    with pytest.raises(ImageDecodeError, match="max_pixels=1000000"):
        probe_image(data, max_pixels=1_000_000)
    assert probe_image(data, max_pixels=1_000_000, draft_min_side=300) == (500, 375)
    assert decode_image(data, max_pixels=1_000_000, draft_min_side=300).image.size == (500, 375)
    with pytest.raises(ImageDecodeError, match="max_pixels=64000000"):
        probe_image(png_bomb(40000, 40000, pixel_data=False))
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    assert probe_image(path) == (2000, 1500)
    with pytest.raises(ImageDecodeError, match="not an image"):
        probe_image(b"hello")

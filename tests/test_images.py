"""Decoding and resizing, checked against independent computations."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from dermsynth.data.demo.archives import encode_jpeg
from dermsynth.data.demo.draw import View, render, sample_lesion
from dermsynth.data.images import centre_square, decode_image


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    lesion = sample_lesion("mel", np.random.default_rng(1), 1)
    return render(lesion, View(900, 600, frame=True, hair=2, seed=3))


def test_without_draft_equals_crop_then_lanczos(photo):
    data = encode_jpeg(photo, quality=95)
    ours = decode_image(data, 128, "reject", draft=False).pixels
    source = Image.open(io.BytesIO(data)).convert("RGB")
    expected = np.asarray(source.crop(centre_square(*source.size)).resize((128, 128), Image.Resampling.LANCZOS))
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize("draft", [False, True])
def test_close_to_opencv_area_resize(photo, draft):
    """An independent pipeline (OpenCV decode, numpy crop, INTER_AREA) agrees to within JPEG/filter noise."""
    data = encode_jpeg(photo, quality=95)
    ours = decode_image(data, 64, "reject", draft=draft).pixels.astype(np.float64)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    side = min(h, w)
    crop = bgr[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    theirs = cv2.cvtColor(cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    assert np.abs(ours - theirs).mean() < 3.0


def test_draft_decoding_is_recorded(photo):
    data = encode_jpeg(photo)
    assert "jpeg_dct_downscale" in decode_image(data, 64, "reject", draft=True).conversions
    assert "jpeg_dct_downscale" not in decode_image(data, 64, "reject", draft=False).conversions


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied(photo, orientation):
    upright = decode_image(encode_jpeg(photo, quality=95), 64, "reject", draft=False)
    turned = decode_image(encode_jpeg(photo, quality=95, orientation=orientation), 64, "reject", draft=False)
    assert f"exif_orientation_{orientation}" in turned.conversions
    assert turned.original_size == upright.original_size == (900, 600)
    assert np.abs(turned.pixels.astype(int) - upright.pixels.astype(int)).mean() < 2.0


def test_small_images_are_upsampled_and_say_so(photo):
    small = cv2.resize(photo, (40, 30), interpolation=cv2.INTER_AREA)
    decoded = decode_image(encode_jpeg(small), 64, "reject", draft=True)
    assert decoded.pixels.shape == (64, 64, 3) and "upsampled" in decoded.conversions


def test_rgb_file_holding_a_grayscale_picture_is_caught(photo):
    grey = np.repeat(cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    ok, png = cv2.imencode(".png", grey)
    from dermsynth.data.images import ImageRejected
    with pytest.raises(ImageRejected) as info:
        decode_image(png.tobytes(), 32, "reject", draft=True)
    assert info.value.reason == "grayscale_image"


def test_damaged_exif_is_recorded_not_silently_ignored(photo):
    data = encode_jpeg(photo)
    garbage = b"MM\x00\x2a\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff\xff\xff" + b"\xff" * 40
    app1 = b"\xff\xe1" + (len(garbage) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + garbage
    decoded = decode_image(data[:2] + app1 + data[2:], 32, "reject", draft=True)
    assert "exif_damaged" in decoded.conversions
    # the picture itself is kept
    assert np.array_equal(decoded.pixels, decode_image(data, 32, "reject", draft=True).pixels)
    assert "exif_damaged" not in decode_image(data, 32, "reject", draft=True).conversions

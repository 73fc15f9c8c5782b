"""Decode one archive image into the square RGB array that goes into LMDB.

Order: decode (with libjpeg DCT scaling for big JPEGs) → EXIF orientation → colour mode to 8-bit
RGB → centre crop to a square → anti-aliased (Lanczos) resize. Every conversion is recorded, and an
image that cannot be turned into a trustworthy RGB image raises `ImageRejected` with the reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # ISIC 2020 images reach 24 MP; refuse only absurd ones
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageRejected(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class DecodedImage:
    pixels: np.ndarray                       # (resolution, resolution, 3) uint8
    original_size: tuple[int, int]           # (width, height) after EXIF orientation
    original_mode: str
    conversions: list[str] = field(default_factory=list)


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _png_bit_depth(data: bytes) -> int | None:
    return data[24] if data[:8] == _PNG_SIGNATURE and len(data) > 24 else None


def _open(data: bytes, resolution: int, draft: bool) -> tuple[Image.Image, tuple[int, int], list[str]]:
    """The decoded image (possibly DCT-downscaled by libjpeg), the file's full (width, height), and
    the warnings Pillow raised while decoding (it skips damaged EXIF tags with a warning only)."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            full_size = image.size
            if draft and image.format == "JPEG":
                image.draft("RGB", (resolution, resolution))
            image.load()
        return image, full_size, [str(w.message) for w in caught]
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("corrupt_image", f"not a readable image ({exc}); re-download the file or "
                            "remove it from the archive and metadata") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"image data is damaged or truncated ({exc}); re-download "
                            "the file or remove it from the archive and metadata") from None


def _to_rgb(image: Image.Image, data: bytes, grayscale_policy: str, conversions: list[str]) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
        conversions.append(f"{mode}_to_8bit")
        mode = "L"
    if _png_bit_depth(data) == 16 and mode in ("RGB", "RGBA"):
        conversions.append("16bit_to_8bit")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        conversions.append("palette_to_rgb")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA") if mode != "RGBA" else image
        alpha = np.asarray(image)[..., 3]
        if alpha.min() == 255:
            conversions.append("opaque_alpha_dropped")
        else:
            conversions.append("alpha_composited_on_black")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image).convert("RGB")
        mode = "RGB" if mode == "RGBA" else "L"
    if mode == "CMYK":  # Pillow already undoes the inverted CMYK that Adobe software writes
        image = image.convert("RGB")
        conversions.append("cmyk_to_rgb")
    elif mode in ("L", "1"):
        if grayscale_policy != "replicate":
            raise ImageRejected("grayscale_image", "grayscale image: a dermoscopy classifier would learn "
                                "'no colour' as a feature. Provide the colour original, or set "
                                "ingest.grayscale: replicate to use it anyway")
        image = image.convert("RGB")
        conversions.append("grayscale_replicated")
    elif mode in ("YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
        conversions.append(f"{mode.lower()}_to_rgb")
    elif image.mode != "RGB":
        raise ImageRejected("unsupported_image", f"unsupported pixel mode {image.mode}; convert the file "
                            "to 8-bit RGB JPEG or PNG")
    return image


def decode_image(data: bytes, resolution: int, grayscale_policy: str = "reject",
                 draft: bool = True) -> DecodedImage:
    image, (width, height), decoder_warnings = _open(data, resolution, draft)
    original_mode, conversions = image.mode, []
    if image.size != (width, height):
        conversions.append("jpeg_dct_downscale")
    orientation, exif_unreadable = _orientation(image)
    if exif_unreadable or any("exif" in w.lower() or "tag" in w.lower() for w in decoder_warnings):
        conversions.append("exif_damaged")  # the orientation may be lost: keep the fact with the image
    elif decoder_warnings:
        conversions.append("decoder_warning")
    if orientation not in (None, 1):
        conversions.append(f"exif_orientation_{orientation}")
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        image = ImageOps.exif_transpose(image)
    image = _to_rgb(image, data, grayscale_policy, conversions)
    if min(width, height) < resolution:
        conversions.append("upsampled")
    square = image.crop(centre_square(*image.size))  # crop first: no pixel outside the square leaks in
    resized = square.resize((resolution, resolution), Image.Resampling.LANCZOS)
    pixels = np.asarray(resized, dtype=np.uint8)
    if grayscale_policy != "replicate" and _looks_grayscale(pixels):
        raise ImageRejected("grayscale_image", "image is stored as RGB but all three channels are equal "
                            "(a grayscale picture). Provide the colour original, or set "
                            "ingest.grayscale: replicate to use it anyway")
    return DecodedImage(pixels, (width, height), original_mode, conversions)


def _orientation(image: Image.Image) -> tuple[int | None, bool]:
    """The EXIF orientation tag (None when absent), and True when the EXIF block cannot be parsed."""
    try:
        return image.getexif().get(0x0112), False
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject an otherwise good image
        return None, True


def _looks_grayscale(pixels: np.ndarray) -> bool:
    signed = pixels.astype(np.int16)
    return bool(np.abs(signed[..., 0] - signed[..., 1]).max() <= 1 and
                np.abs(signed[..., 1] - signed[..., 2]).max() <= 1)

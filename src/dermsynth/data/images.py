"""Decode one archive image into the square RGB array that goes into LMDB.

Order: decode (with libjpeg DCT scaling for big JPEGs) → EXIF orientation → colour mode to 8-bit
RGB → centre crop to a square → anti-aliased (Lanczos) resize. Every conversion is recorded, and an
image that cannot be turned into a trustworthy RGB image raises `ImageRejected` with the reason.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

Image.MAX_IMAGE_PIXELS = 200_000_000  # ISIC 2020 images reach 24 MP; refuse only absurd ones
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageRejected(Exception):
    """An image that cannot be stored: `reason` (a rejections.csv code) and `message` (what to do)."""
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class DecodedImage:
    """One decoded image, ready for LMDB, and what was done to it (`conversions`)."""
    pixels: np.ndarray                       # (resolution, resolution, 3) uint8
    original_size: tuple[int, int]           # (width, height) after EXIF orientation
    original_mode: str
    conversions: list[str] = field(default_factory=list)
    original_format: str = ""                # Pillow's format name: JPEG, PNG, WEBP, GIF, …


def centre_square(width: int, height: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the largest centred square of a width × height image, in pixels."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def _png_bit_depth(data: bytes) -> int | None:
    return data[24] if data[:8] == _PNG_SIGNATURE and len(data) > 24 else None


# Signatures of formats Pillow cannot decode without plug-ins (first bytes, or bytes 4-12 for ISO
# media files): named in the `unsupported_format` rejection so the user knows what to convert.
_FOREIGN_FORMATS = [
    (lambda d: d[4:12] in (b"ftypheic", b"ftypheix", b"ftyphevc", b"ftypmif1", b"ftypmsf1"), "HEIC/HEIF (iPhone photo)"),
    (lambda d: d[4:12] in (b"ftypavif", b"ftypavis"), "AVIF"),
    (lambda d: d[128:132] == b"DICM", "DICOM"),
    (lambda d: d[:4] == b"%PDF", "PDF"),
    (lambda d: d.lstrip()[:5] in (b"<svg ", b"<?xml") and b"<svg" in d[:1024], "SVG (vector graphics)"),
    (lambda d: d[:2] == b"\xff\x0a" or d[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n", "JPEG XL"),
    (lambda d: d[:4] in (b"PK\x03\x04",), "a zip archive"),
    (lambda d: d[:6] in (b"7z\xbc\xaf\x27\x1c",) or d[:4] == b"Rar!", "a compressed archive"),
    (lambda d: d[4:8] in (b"ftyp", b"moov", b"mdat"), "a video (MP4/MOV)"),
]
# Formats Pillow reads: a file whose bytes or extension claim one of these but that does not decode
# is damaged (`corrupt_image`), not foreign.
_READABLE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp",
                      ".ppm", ".pgm", ".pbm", ".tga", ".ico", ".jp2", ".j2k"}
_READABLE_MAGIC = (b"\xff\xd8", _PNG_SIGNATURE, b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
# Formats recorded as a conversion (`from_<format>`): the studies' archives are JPEG (and PNG).
_NATIVE_FORMATS = {"JPEG", "PNG", "MPO"}


def _foreign_format(data: bytes, name: str) -> str | None:
    """The name of a format Pillow cannot read, or None when the file claims a readable one."""
    if data.startswith(_READABLE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return None
    for matches, fmt in _FOREIGN_FORMATS:
        if matches(data):
            return fmt
    suffix = Path(name).suffix.lower()
    if suffix in _READABLE_SUFFIXES:
        return None
    return f"unknown ({suffix or 'no extension'}; first bytes {data[:8].hex(' ')})"


def _open(data: bytes, resolution: int, draft: bool, name: str = "") -> tuple[Image.Image, tuple[int, int], list[str]]:
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
    except UnidentifiedImageError:
        foreign = _foreign_format(data, name)
        if foreign:
            raise ImageRejected("unsupported_format", f"the file is {foreign}, a format that cannot be decoded "
                                "here; convert it to PNG or JPEG (keeping the name) or remove it") from None
        raise ImageRejected("corrupt_image", "not a readable image: the bytes match no image format although "
                            "the name says it is one; re-copy the file or remove it from the archive and "
                            "metadata") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return _open_beyond_limit(data, resolution, name)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"image data is damaged or truncated ({error_text(exc)}); re-copy "
                            "the file or remove it from the archive and metadata") from None


def _open_beyond_limit(data: bytes, resolution: int, name: str) -> tuple[Image.Image, tuple[int, int], list[str]]:
    """An image with more pixels than the decoder's safety limit (`Image.MAX_IMAGE_PIXELS`): a JPEG is decoded
    at a reduced scale by libjpeg (1/2 … 1/8) when that brings it under the limit; anything else raises
    `ImageRejected` (`image_too_large`) saying so — it is not damaged, only too big to decode safely."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None  # read the header only: its size, and what libjpeg can reduce it to
        image = Image.open(io.BytesIO(data))
        full_size = image.size
        if image.format == "JPEG":
            image.draft("RGB", (resolution, resolution))
        if image.size[0] * image.size[1] <= limit:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                image.load()
            return image, full_size, [str(w.message) for w in caught]
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("corrupt_image", f"image data is damaged or truncated ({error_text(exc)}); re-copy "
                            "the file or remove it from the archive and metadata") from None
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    width, height = full_size
    why = ("even at libjpeg's smallest decoding scale (1/8) it stays above it" if image.format == "JPEG" else
           f"and a {image.format or 'file of this format'} cannot be decoded at a reduced scale")
    raise ImageRejected("image_too_large", f"{width}×{height} = {width * height:,} pixels, beyond the decoder's "
                        f"safety limit of {limit:,} pixels (a guard against decompression bombs), {why}. Downscale "
                        "the file (e.g. to 8000 pixels on the long side) and ingest again, or remove it")


def error_text(exc: Exception) -> str:
    """An exception's message for a one-line report: its text without Python object reprs such as
    `<_io.BytesIO object at 0x…>`, or the exception's class name when nothing is left."""
    return re.sub(r"\s*<[^<>]* object at 0x[0-9a-fA-F]+>", "", str(exc)).strip() or type(exc).__name__


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


def decode_image(data: bytes, resolution: int, grayscale_policy: str, draft: bool, name: str = "") -> DecodedImage:
    """Decode one image file's bytes into a (resolution, resolution, 3) uint8 RGB array.

    `grayscale_policy` ("reject" or "replicate", `ingest.grayscale`) and `draft` (let libjpeg decode a large JPEG
    at a reduced scale first, `ingest.jpeg_draft`) are the ingest settings; they have no default here.

    `name` (the file name) only helps to name a format that cannot be decoded. Multi-frame files
    (GIF, animated WebP/PNG, multi-page TIFF) give their first frame, recorded as
    `first_of_<n>_frames`; formats other than JPEG/PNG are recorded as `from_<format>`.

    Raises:
        ImageRejected: reason `corrupt_image`, `unsupported_format`, `grayscale_image`, `unsupported_image`
            or `image_too_large` (beyond the decoder's safety limit and not a JPEG that libjpeg can decode at
            a reduced scale under it), with a message that says what to do.
    """
    image, (width, height), decoder_warnings = _open(data, resolution, draft, name)
    original_mode, conversions, image_format = image.mode, [], image.format or ""
    if image.format and image.format not in _NATIVE_FORMATS:
        conversions.append(f"from_{image.format.lower()}")
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        image.seek(0)
        conversions.append(f"first_of_{frames}_frames")
    if image.size != (width, height):
        conversions.append("jpeg_dct_downscale")
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        conversions.append("beyond_decoder_limit_downscaled")
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
    return DecodedImage(pixels, (width, height), original_mode, conversions, image_format)


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

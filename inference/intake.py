"""Image intake: uploaded bytes -> validated grayscale radiograph.

Contract of the result: ``pixels`` is float32 [H, W] in [0, 1] where 1 is bright (bone white, the
MONOCHROME2 convention), at the uploaded resolution. 8-bit images map as value / 255 (the models
were trained on 8-bit exports); deeper data is windowed (DICOM VOI LUT when present, else a
robust min-max stretch).
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from inference.dicom import decode_dicom
from inference.errors import (
    CorruptImage,
    EmptyUpload,
    IntakeError,
    MultiFrameNotSupported,
    PixelBudgetExceeded,
    UnsupportedFormat,
)
from inference.pixels import FloatImage, stretch_to_unit
from inference.sniff import ImageFormat, detect_format, header_size
from inference.suitability import colourfulness

# Pillow format names we accept for each sniffed container; anything else is refused even if
# Pillow could open it (Pillow has many plugins we do not want in the attack surface).
_PIL_FORMATS = {ImageFormat.PNG: "PNG", ImageFormat.JPEG: "JPEG", ImageFormat.WEBP: "WEBP"}
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    zlib.error,
    UnidentifiedImageError,
    Image.DecompressionBombError,
    IndexError,
    TypeError,
    MemoryError,
)


@dataclass(frozen=True)
class Limits:
    """Decoding limits. ``max_pixels`` is width * height (frames are refused anyway)."""

    max_pixels: int = 30_000_000
    max_side: int = 16_384


@dataclass(frozen=True)
class Radiograph:
    pixels: FloatImage
    format: ImageFormat
    bits_stored: int
    photometric: str
    colourfulness: float = 0.0
    """Share of visibly coloured pixels in an RGB upload (0 for grayscale sources)."""
    patient_age_years: float | None = None
    """DICOM PatientAge in years when present (population choice only; never logged)."""

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def check_budget(width: int, height: int, limits: Limits) -> None:
    if width <= 0 or height <= 0:
        raise CorruptImage()
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise PixelBudgetExceeded()


def _colour_of(rgb: Image.Image) -> float:
    """Colourfulness measured on a small nearest-neighbour copy (cost independent of size)."""
    scale = min(1.0, 256 / max(rgb.size))
    small = rgb.resize(
        (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))),
        Image.Resampling.NEAREST,
    )
    return colourfulness(np.asarray(small, dtype=np.uint8))


def _to_gray(img: Image.Image) -> tuple[FloatImage, int, float]:
    """Pillow image -> float32 [H, W] in [0, 1], the stored bit depth and its colourfulness."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        raw = np.asarray(img, dtype=np.float32)
        return stretch_to_unit(raw), 16, 0.0
    if mode == "F":
        return stretch_to_unit(np.asarray(img, dtype=np.float32)), 32, 0.0
    colour = 0.0
    if mode != "L":
        # RGB/RGBA/P/CMYK/LA/1: alpha is dropped, colour becomes ITU-R 601 luma. The chroma is
        # measured first: the suitability gate refuses colour photos and figures.
        rgb = img.convert("RGB")
        colour = _colour_of(rgb)
        img = rgb.convert("L")
    gray = np.asarray(img, dtype=np.float32)
    # In place: same float32 division as ``/ 255.0``, without a second full-size copy.
    return np.divide(gray, 255.0, out=gray), 8, colour


def decode_raster(data: bytes, fmt: ImageFormat, limits: Limits) -> Radiograph:
    width, height = header_size(data, fmt)
    check_budget(width, height, limits)
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as img:
            if img.size != (width, height):
                raise CorruptImage()
            if getattr(img, "n_frames", 1) != 1:
                raise MultiFrameNotSupported()
            img.load()
            pixels, bits, colour = _to_gray(img)
    except IntakeError:
        raise
    except _DECODE_ERRORS as exc:
        raise CorruptImage() from exc
    return Radiograph(
        pixels=pixels,
        format=fmt,
        bits_stored=bits,
        photometric="MONOCHROME2",
        colourfulness=colour,
    )


def decode_upload(data: bytes, limits: Limits | None = None) -> Radiograph:
    """Decode uploaded bytes into a :class:`Radiograph` or raise an :class:`IntakeError`."""
    limits = limits or Limits()
    if not data:
        raise EmptyUpload()
    fmt = detect_format(data)
    if fmt is ImageFormat.DICOM:
        decoded = decode_dicom(data, limits.max_pixels, limits.max_side)
        return Radiograph(
            pixels=decoded.pixels,
            format=fmt,
            bits_stored=decoded.bits_stored,
            photometric=decoded.photometric,
            patient_age_years=decoded.patient_age_years,
        )
    if fmt not in _PIL_FORMATS:
        raise UnsupportedFormat()
    return decode_raster(data, fmt, limits)

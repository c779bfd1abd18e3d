"""Image intake: uploaded bytes -> validated grayscale radiograph.

Contract of the result: ``pixels`` is float32 [h, w] in [0, 1] where 1 is bright (bone white, the
MONOCHROME2 convention), at a bounded *working* resolution: the upload's size when its longer side
is at most ``Limits.work_side``, else scaled down (aspect ratio kept) so that it is. The upload's
own size stays available as ``width`` / ``height``. 8-bit images map as value / 255 (the models
were trained on 8-bit exports); deeper data is windowed (DICOM VOI LUT when present, else a
robust min-max stretch).

Why a working copy: the models see 224-512 px, but segmentation masks, heat maps, LIME maps and
overlays at upload size cost tens of bytes per pixel; a 30 MP upload (just inside the pixel
budget, 29 KB as an all-black PNG) made one Grad-CAM take +1.6 GB and 18 s (security review F1).
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
from inference.preprocess import resize_gray
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
    """Decoding limits. ``max_pixels`` is width * height (frames are refused anyway);
    ``work_side`` bounds the longer side of the decoded working copy."""

    max_pixels: int = 30_000_000
    max_side: int = 16_384
    work_side: int = 2048


@dataclass(frozen=True)
class Radiograph:
    """``pixels`` is the working copy (see the module docstring); ``width`` / ``height`` are the
    upload's own size."""

    pixels: FloatImage
    format: ImageFormat
    bits_stored: int
    photometric: str
    colourfulness: float = 0.0
    """Share of visibly coloured pixels in an RGB upload (0 for grayscale sources)."""
    patient_age_years: float | None = None
    """DICOM PatientAge in years when present (population choice only; never logged)."""
    source_size: tuple[int, int] | None = None  # (width, height) of the upload when rescaled

    @property
    def height(self) -> int:
        return self.source_size[1] if self.source_size else int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return self.source_size[0] if self.source_size else int(self.pixels.shape[1])

    @property
    def scale(self) -> float:
        """Working-copy pixels per upload pixel (1.0 when the upload was small enough)."""
        return int(self.pixels.shape[1]) / self.width


def working_size(width: int, height: int, work_side: int) -> tuple[int, int]:
    """(width, height) with the longer side at most ``work_side``, aspect ratio kept."""
    longer = max(width, height)
    if longer <= work_side:
        return width, height
    scale = work_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def estimate_pixels(data: bytes) -> int:
    """Pixels the upload will decode to, from its header alone (0 when unknown).

    For admission cost only: cheap and never raising. DICOM is estimated from its size (two
    bytes per pixel, the common uncompressed 16-bit case); decoding checks the real geometry.
    """
    try:
        fmt = detect_format(data)
        if fmt is ImageFormat.DICOM:
            return len(data) // 2
        width, height = header_size(data, fmt)
    except (IntakeError, ValueError, struct.error):
        return 0
    return max(0, width) * max(0, height)


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


def _to_gray(img: Image.Image, size: tuple[int, int]) -> tuple[FloatImage, int, float]:
    """Pillow image -> float32 [h, w] in [0, 1] at ``size`` (w, h), the stored bit depth and
    the upload's colourfulness.

    8-bit data is scaled down as an 8-bit image (Pillow's antialiased bilinear, in C, no float
    copy of the upload); deeper data is windowed on the scaled-down float copy.
    """
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raw = resize_gray(np.asarray(img, dtype=np.float32), *size)
        return stretch_to_unit(raw), 32 if mode == "F" else 16, 0.0
    colour = 0.0
    if mode != "L":
        # RGB/RGBA/P/CMYK/LA/1: alpha is dropped, colour becomes ITU-R 601 luma. The chroma is
        # measured first: the suitability gate refuses colour photos and figures.
        rgb = img.convert("RGB")
        colour = _colour_of(rgb)
        img = rgb.convert("L")
    if img.size != size:
        img = img.resize(size, Image.Resampling.BILINEAR)
    gray = np.asarray(img, dtype=np.float32)
    # In place: same float32 division as ``/ 255.0``, without a second copy.
    return np.divide(gray, 255.0, out=gray), 8, colour


def decode_raster(data: bytes, fmt: ImageFormat, limits: Limits) -> Radiograph:
    width, height = header_size(data, fmt)
    check_budget(width, height, limits)
    size = working_size(width, height, limits.work_side)
    try:
        with Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]]) as img:
            if img.size != (width, height):
                raise CorruptImage()
            if getattr(img, "n_frames", 1) != 1:
                raise MultiFrameNotSupported()
            if fmt is ImageFormat.JPEG and size != (width, height):
                # libjpeg scales by 1/2, 1/4 or 1/8 while decoding (never below ``size``).
                img.draft(img.mode, size)
            img.load()
            pixels, bits, colour = _to_gray(img, size)
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
        source_size=(width, height) if size != (width, height) else None,
    )


def decode_upload(data: bytes, limits: Limits | None = None) -> Radiograph:
    """Decode uploaded bytes into a :class:`Radiograph` or raise an :class:`IntakeError`."""
    limits = limits or Limits()
    if not data:
        raise EmptyUpload()
    fmt = detect_format(data)
    if fmt is ImageFormat.DICOM:
        decoded = decode_dicom(data, limits.max_pixels, limits.max_side)
        height, width = decoded.pixels.shape
        size = working_size(width, height, limits.work_side)
        return Radiograph(
            pixels=resize_gray(decoded.pixels, *size),
            format=fmt,
            bits_stored=decoded.bits_stored,
            photometric=decoded.photometric,
            patient_age_years=decoded.patient_age_years,
            source_size=(width, height) if size != (width, height) else None,
        )
    if fmt not in _PIL_FORMATS:
        raise UnsupportedFormat()
    return decode_raster(data, fmt, limits)

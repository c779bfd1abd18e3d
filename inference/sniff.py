"""Format detection and header-only dimension parsing.

Formats are recognised from magic bytes only (never filename or content type). Dimensions are
read from the container headers before any decoder runs, so a decompression bomb is rejected
without allocating its pixels (hostile inputs H9-H11: Pillow only *warns* between 1x and 2x its
own limit).
"""

from __future__ import annotations

import struct
from enum import StrEnum

from inference.errors import CorruptImage, UnsupportedFormat


class ImageFormat(StrEnum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"
    DICOM = "dicom"


_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _looks_like_raw_dicom(data: bytes) -> bool:
    """A DICOM stream without the 128-byte preamble starts with a group 0002 or 0008 tag.

    Such files are recognised so that they get a precise 422 ``malformed_dicom`` rather than
    being mistaken for an unknown format.
    """
    if len(data) < 8:
        return False
    group = struct.unpack_from("<H", data, 0)[0]
    vr = data[4:6]
    return group in (0x0002, 0x0008) and (vr.isalpha() and vr.isupper() or data[6:8] == b"\0\0")


def detect_format(data: bytes) -> ImageFormat:
    """Return the container format of ``data`` or raise :class:`UnsupportedFormat`."""
    if data.startswith(_PNG_MAGIC):
        return ImageFormat.PNG
    # The JPEG magic is the 2-byte SOI marker. Requiring the next marker's 0xFF too would send
    # an SOI-only (truncated) file to 415 unsupported_format instead of 422 corrupt_image (H13);
    # the header walk below rejects anything that is not a real JPEG after the SOI.
    if data.startswith(b"\xff\xd8"):
        return ImageFormat.JPEG
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ImageFormat.WEBP
    if data[128:132] == b"DICM" or _looks_like_raw_dicom(data):
        return ImageFormat.DICOM
    raise UnsupportedFormat()


def _png_size(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise CorruptImage()
    width, height = struct.unpack_from(">II", data, 16)
    return int(width), int(height)


# SOF0-SOF15 except DHT (C4), JPG (C8) and DAC (CC), plus JPEG-LS SOF55 (F7): the same walk
# reads the frame size of JPEG and JPEG-LS codestreams inside DICOM (see inference.dicom).
_SOF_MARKERS = frozenset(
    {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}
)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            raise CorruptImage()
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in _SOF_MARKERS:
            if pos + 9 > n:
                break
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return int(width), int(height)
        if length < 2:
            break
        pos += 2 + length
    raise CorruptImage()


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return int(width & 0x3FFF), int(height & 0x3FFF)
    raise CorruptImage()


def header_size(data: bytes, fmt: ImageFormat) -> tuple[int, int]:
    """(width, height) declared by a PNG/JPEG/WEBP header, without decoding pixels."""
    if fmt is ImageFormat.PNG:
        return _png_size(data)
    if fmt is ImageFormat.JPEG:
        return _jpeg_size(data)
    if fmt is ImageFormat.WEBP:
        return _webp_size(data)
    raise ValueError("DICOM dimensions come from its dataset, not from a raster header")

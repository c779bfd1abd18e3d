"""Builders for test inputs: DICOM files and rasters generated from arrays.

Hostile variants are generated here too (never copied from third-party corpora).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO.parent / "shared" / "data" / "cxr").resolve()


def real_image_path(name: str = "images/jsrt/JPCLN001.jpg") -> Path:
    return SHARED / name


def gray_u8(path: Path) -> npt.NDArray[np.uint8]:
    with Image.open(path) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8)


def png_bytes(arr: npt.NDArray[np.generic], **save: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **save)
    return buf.getvalue()


def encode(img: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **save)
    return buf.getvalue()


def dicom_dataset(
    pixels: npt.NDArray[np.integer],
    *,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    window: tuple[float, float] | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    patient_name: str = "ANON",
    transfer_syntax: UID = ExplicitVRLittleEndian,
) -> Dataset:
    """A minimal DX DICOM dataset around a 2-D integer array (stored as uint16 or uint8)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = patient_name
    ds.PatientID = "TEST-0001"
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    bits_allocated = 8 if pixels.dtype == np.uint8 else 16
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = min(bits_stored, bits_allocated)
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if slope is not None:
        ds.RescaleSlope = slope
        ds.RescaleIntercept = intercept or 0.0
    dtype = np.uint8 if bits_allocated == 8 else np.uint16
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    return ds


def dicom_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def radiograph_dicom(
    path: Path | None = None, *, bits: int = 12, photometric: str = "MONOCHROME2", **kw: object
) -> bytes:
    """A real radiograph from ../shared re-encoded as a DX DICOM with ``bits`` stored bits."""
    gray = gray_u8(path or real_image_path()).astype(np.float64) / 255.0
    values = gray if photometric == "MONOCHROME2" else 1.0 - gray
    scaled = np.round(values * (2**bits - 1)).astype(np.uint16 if bits > 8 else np.uint8)
    return dicom_bytes(dicom_dataset(scaled, bits_stored=bits, photometric=photometric, **kw))  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Synthetic images and hostile files for the intake tests (no real data needed).
# --------------------------------------------------------------------------------------------

import struct  # noqa: E402
import zlib  # noqa: E402
from functools import lru_cache  # noqa: E402

from pydicom.encaps import encapsulate  # noqa: E402

CANARY_NAME = "CANARY^PHI^0001"


def synthetic_chest(height: int = 96, width: int = 80, bits: int = 8) -> npt.NDArray[np.integer]:
    """A deterministic radiograph-like array: bright body, two dark 'lungs', a soft gradient.

    Returns uint8 for ``bits <= 8``, else uint16 with values in [0, 2**bits - 1].
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = yy / max(height - 1, 1), xx / max(width - 1, 1)
    img = 0.75 + 0.15 * y
    for cx in (0.3, 0.7):
        img -= 0.5 * (((x - cx) / 0.17) ** 2 + ((y - 0.45) / 0.32) ** 2 < 1.0)
    img += 0.05 * np.sin(12 * x) * np.cos(9 * y)
    img = np.clip(img, 0.0, 1.0)
    top = 2**bits - 1
    return np.round(img * top).astype(np.uint8 if bits <= 8 else np.uint16)


def synthetic_dicom(
    *,
    height: int = 96,
    width: int = 80,
    bits: int = 12,
    photometric: str = "MONOCHROME2",
    **kw: object,
) -> bytes:
    """A valid DX DICOM around :func:`synthetic_chest` (inverted for MONOCHROME1)."""
    arr = synthetic_chest(height, width, bits)
    if photometric == "MONOCHROME1":
        arr = (2**bits - 1 - arr.astype(np.int64)).astype(arr.dtype)
    return dicom_bytes(dicom_dataset(arr, bits_stored=bits, photometric=photometric, **kw))  # type: ignore[arg-type]


def compressed_dicom(
    transfer_syntax: UID, *, bits: int = 12, height: int = 96, width: int = 80
) -> bytes:
    """A DX DICOM compressed with pydicom's own encoders (RLE natively, J2K via pylibjpeg)."""
    arr = synthetic_chest(height, width, bits)
    ds = dicom_dataset(arr, bits_stored=bits)
    ds.compress(transfer_syntax, arr, encoding_plugin="", generate_instance_uid=False)
    return dicom_bytes(ds)


def encapsulated_dicom(
    frames: list[bytes],
    transfer_syntax: UID,
    *,
    bits: int = 8,
    height: int = 96,
    width: int = 80,
    **kw: object,
) -> bytes:
    """A DX DICOM whose PixelData holds ``frames`` (already-encoded codestreams) encapsulated."""
    arr = synthetic_chest(height, width, bits)
    ds = dicom_dataset(arr, bits_stored=bits, transfer_syntax=transfer_syntax, **kw)  # type: ignore[arg-type]
    ds.PixelData = encapsulate(frames)
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return dicom_bytes(ds)


# ---- raw PNG ----------------------------------------------------------------------------------


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC (Pillow checks CRCs, so hostile chunks need one)."""
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_raw(
    width: int,
    height: int,
    idat: bytes,
    *,
    extra: tuple[bytes, ...] = (),
    bit_depth: int = 8,
    color_type: int = 0,
) -> bytes:
    """A PNG assembled from an IHDR, optional ancillary chunks, one IDAT and IEND."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + b"".join(extra)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG that *declares* ``width`` x ``height`` (IDAT holds one zero row only)."""
    return png_raw(width, height, zlib.compress(b"\0" * 64))


@lru_cache(maxsize=4)
def png_zero_bomb(width: int, height: int) -> bytes:
    """A complete, valid all-zero gray PNG; 8000x8000 compresses to ~60 KB (a decompression bomb).

    The zlib stream is produced row by row so that the 64 MB of filtered scanlines never exist at
    once in the test process.
    """
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + samples
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    return png_raw(width, height, b"".join(parts))


@lru_cache(maxsize=4)
def _deflated_zeros(n: int, wbits: int = zlib.MAX_WBITS) -> bytes:
    """``n`` zero bytes (a multiple of 1 MiB) deflated; ``wbits=-15`` gives a raw deflate stream."""
    comp = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = b"\0" * (1 << 20)
    parts = [comp.compress(block) for _ in range(n >> 20)]
    parts.append(comp.flush())
    return b"".join(parts)


def png_text_bomb(kind: str, inflated: int = 64 << 20) -> bytes:
    """A small valid PNG plus a zTXt/iTXt/iCCP chunk that inflates to ``inflated`` bytes."""
    bomb = _deflated_zeros(inflated)
    if kind == "zTXt":
        chunk = png_chunk(b"zTXt", b"Comment\0\0" + bomb)
    elif kind == "iTXt":
        chunk = png_chunk(b"iTXt", b"Comment\0\1\0\0\0" + bomb)
    elif kind == "iCCP":
        chunk = png_chunk(b"iCCP", b"icc\0\0" + bomb)
    else:
        raise ValueError(kind)
    rows = b"".join(b"\0" + bytes(range(16)) for _ in range(16))
    return png_raw(16, 16, zlib.compress(rows), extra=(chunk,))


# ---- raw WEBP ---------------------------------------------------------------------------------


def webp_vp8x_canvas(width: int, height: int) -> bytes:
    """A WEBP whose extended header (VP8X) declares a ``width`` x ``height`` canvas."""
    payload = b"\0\0\0\0" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_vp8l_header(width: int, height: int) -> bytes:
    """A lossless WEBP header declaring ``width`` x ``height`` (max 16384) and no real data."""
    bits = (width - 1) | ((height - 1) << 14)
    payload = b"\x2f" + struct.pack("<I", bits) + b"\0" * 16
    body = b"WEBP" + b"VP8L" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


# ---- raw DICOM surgery ------------------------------------------------------------------------

_LONG_VRS = {
    b"OB",
    b"OW",
    b"OF",
    b"OD",
    b"OL",
    b"OV",
    b"SQ",
    b"UT",
    b"UN",
    b"UC",
    b"UR",
    b"SV",
    b"UV",
}


def dicom_tag_bytes(group: int, element: int) -> bytes:
    return struct.pack("<HH", group, element)


def dicom_element(
    group: int, element: int, vr: bytes, value: bytes, *, length: int | None = None
) -> bytes:
    """One explicit-VR little-endian element; ``length`` overrides the declared VL (to lie)."""
    vl = len(value) if length is None else length
    if vr in _LONG_VRS:
        return dicom_tag_bytes(group, element) + vr + b"\0\0" + struct.pack("<I", vl) + value
    return dicom_tag_bytes(group, element) + vr + struct.pack("<H", vl) + value


def find_element(data: bytes, group: int, element: int) -> int:
    """Offset of the first top-level occurrence of an explicit-VR element header."""
    pos = data.find(dicom_tag_bytes(group, element), 132)
    if pos < 0:
        raise KeyError((group, element))
    return pos


def set_element_length(data: bytes, group: int, element: int, length: int) -> bytes:
    """Rewrite the declared VL of an existing element without touching its value bytes."""
    pos = find_element(data, group, element)
    vr = data[pos + 4 : pos + 6]
    if vr in _LONG_VRS:
        return data[: pos + 8] + struct.pack("<I", length) + data[pos + 12 :]
    return data[: pos + 6] + struct.pack("<H", length) + data[pos + 8 :]


def insert_before(data: bytes, group: int, element: int, blob: bytes) -> bytes:
    pos = find_element(data, group, element)
    return data[:pos] + blob + data[pos:]


def nested_sequences_undefined(depth: int) -> bytes:
    """(0008,1140) SQ nested ``depth`` times, every sequence and item of undefined length."""
    opening = (
        dicom_element(0x0008, 0x1140, b"SQ", b"", length=0xFFFFFFFF)
        + dicom_tag_bytes(0xFFFE, 0xE000)
        + struct.pack("<I", 0xFFFFFFFF)
    )
    item_end = dicom_tag_bytes(0xFFFE, 0xE00D) + b"\0\0\0\0"
    closing = item_end + dicom_tag_bytes(0xFFFE, 0xE0DD) + b"\0\0\0\0"
    return opening * depth + closing * depth


def nested_sequences_defined(depth: int) -> bytes:
    """(0008,1140) SQ nested ``depth`` times with explicit lengths (built inside out)."""
    inner = b""
    for _ in range(depth):
        item = dicom_tag_bytes(0xFFFE, 0xE000) + struct.pack("<I", len(inner)) + inner
        inner = dicom_element(0x0008, 0x1140, b"SQ", item)
    return inner


def element_flood(count: int) -> bytes:
    """``count`` empty private LO elements, (0011..,1000..FFFF) in tag order (review F4)."""
    per_group = 0x10000 - 0x1000
    out = bytearray()
    for i in range(count):
        group, element = 0x0011 + 2 * (i // per_group), 0x1000 + i % per_group
        out += struct.pack("<HH", group, element) + b"LO" + b"\0\0"
    return bytes(out)


def strip_preamble(data: bytes) -> bytes:
    """Drop the 128-byte preamble and the ``DICM`` magic (a raw, non-Part-10 stream)."""
    return data[132:]


def with_preamble(data: bytes, preamble: bytes) -> bytes:
    return preamble.ljust(128, b"\0")[:128] + data[128:]


PE_STUB = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + b"\0" * 46 + b"\x80\0\0\0"
ELF_STUB = b"\x7fELF\x02\x01\x01\x00" + b"\0" * 8 + b"\x02\x00\x3e\x00\x01\x00\x00\x00"


def deflated_dicom_bomb(inflated: int = 64 << 20) -> bytes:
    """A Deflated Explicit VR Little Endian DICOM whose dataset inflates to ``inflated`` zeros."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = dicom_dataset(synthetic_chest(16, 16, 12), transfer_syntax=DeflatedExplicitVRLittleEndian)
    data = dicom_bytes(ds)
    (group_length,) = struct.unpack_from("<I", data, 140)  # (0002,0000) UL value
    return data[: 144 + group_length] + _deflated_zeros(inflated, -zlib.MAX_WBITS)


def imagecodecs_dicom(
    transfer_syntax: UID, *, bits: int = 12, height: int = 96, width: int = 80
) -> bytes:
    """A DX DICOM whose frame is encoded by ``imagecodecs`` (JPEG-LS, HTJ2K: no pydicom encoder).

    Raises ImportError when imagecodecs is missing; callers skip on it.
    """
    import imagecodecs
    from pydicom.uid import JPEGLSLossless

    arr = synthetic_chest(height, width, bits)
    if transfer_syntax == JPEGLSLossless:
        stream = imagecodecs.jpegls_encode(arr)
    else:
        stream = imagecodecs.htj2k_encode(arr)  # lossless by default
    return encapsulated_dicom(
        [bytes(stream)], transfer_syntax, bits=bits, height=height, width=width
    )


def grey_chest(height: int = 160, width: int = 136) -> npt.NDArray[np.uint8]:
    """A low-contrast mid-grey chest with a fine texture: passes the input gate's rules, but the
    tiny test segmenter (bright -> right lung, dark -> left lung) finds no lung in it."""
    chest = synthetic_chest(height, width).astype(np.float64) / 255.0
    yy, xx = np.mgrid[0:height, 0:width]
    texture = 0.01 * np.sin(2 * np.pi * xx / 6) * np.sin(2 * np.pi * yy / 7.8)
    # Inside [0.395, 0.505] neither tiny segmenter channel fires.
    return np.round(255.0 * (0.45 + 0.10 * (chest - 0.575) + texture)).astype(np.uint8)

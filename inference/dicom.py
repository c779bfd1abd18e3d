"""DICOM decoding for CR/DX radiographs.

Only the tags the pipeline needs are touched. The dataset is never stringified, logged or walked
(``str(ds)`` on hostile nesting can take minutes and gigabytes, and tags carry patient data);
sequences we do not read stay as raw bytes. Geometry is validated from the header before pixel
data is decoded, so a bogus Rows/Columns never reaches an allocation.
"""

from __future__ import annotations

import io
import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.encaps import generate_frames
from pydicom.errors import BytesLengthException, InvalidDicomError
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    HTJ2K,
    UID,
    DeflatedExplicitVRLittleEndian,
    HTJ2KLossless,
    HTJ2KLosslessRPCL,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from inference.dicom_walk import walk_elements
from inference.errors import (
    CorruptImage,
    IntakeError,
    MalformedDicom,
    MultiFrameNotSupported,
    NoPixelData,
    PixelBudgetExceeded,
    UnsupportedSopClass,
    UnsupportedTransferSyntax,
)
from inference.pixels import FloatImage, blockwise, stretch_to_unit
from inference.sniff import ImageFormat, header_size

# Image storage classes a chest radiograph arrives in. Secondary Capture is allowed because
# many gateways re-wrap radiographs, but the Modality must still say CR or DX.
_IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.1",  # CR Image Storage
        "1.2.840.10008.5.1.4.1.1.1.1",  # Digital X-Ray Image Storage - For Presentation
        "1.2.840.10008.5.1.4.1.1.1.1.1",  # Digital X-Ray Image Storage - For Processing
        "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture Image Storage
    }
)
_MODALITIES = frozenset({"CR", "DX"})
_PARSE_ERRORS = (
    InvalidDicomError,
    RecursionError,
    ValueError,
    KeyError,
    AttributeError,
    TypeError,
    OSError,
    EOFError,
    struct.error,
    IndexError,
    OverflowError,
    NotImplementedError,
    UnicodeDecodeError,
    # pydicom's own, raised while converting a value whose length does not fit its VR
    # (e.g. an odd-length UL); not a ValueError subclass.
    BytesLengthException,
)


@dataclass(frozen=True)
class DecodedDicom:
    pixels: FloatImage
    bits_stored: int
    photometric: str
    patient_age_years: float | None = None


_UNDEFINED_LENGTH = 0xFFFFFFFF


def _check_value_lengths(ds: pydicom.Dataset) -> None:
    """Refuse top-level elements whose declared VL runs past the end of the stream.

    pydicom reads ``min(VL, bytes left)`` without complaint (hostile input H20), so a PixelData
    VL beyond EOF or a PatientName VL=0xFFF0 that swallows every following element would pass
    as a shorter value or a missing tag. Only the raw top-level elements are looked at (no
    conversion, no recursion into sequences, no stringification).
    """
    for tag in list(ds.keys()):
        # keep_deferred: ``elements()`` would convert a raw element whose value is None, and
        # conversion of a hostile element raises (unknown VR -> NotImplementedError, ...).
        elem = ds.get_item(tag, keep_deferred=True)
        if not isinstance(elem, RawDataElement):
            continue
        if elem.length == _UNDEFINED_LENGTH or elem.value is None:
            continue
        if len(elem.value) != elem.length:
            raise MalformedDicom()


def _check_meta_length(ds: pydicom.Dataset, size: int) -> None:
    """The file meta group must end inside the stream (128 B preamble + DICM + 12 B length element).

    A file cut inside its meta header otherwise parses as a valid but empty dataset and is
    answered 415 "not a radiograph" instead of 422 "malformed".
    """
    meta = getattr(ds, "file_meta", None)
    group_length = _get(meta, "FileMetaInformationGroupLength") if meta is not None else None
    if isinstance(group_length, int) and 144 + group_length > size:
        raise MalformedDicom()


def _precheck(data: bytes) -> None:
    """Refuse what ``dcmread`` must never see, from the file meta and element headers only.

    - The Deflated transfer syntax: pydicom inflates it with an unbounded ``zlib.decompress``
      (filereader, pydicom 3.0.2): 10 MB of upload can ask for 10 GB.
    - An element flood: ``dcmread`` builds every element (F4: 1 M empty elements, 30 s,
      +348 MB); :func:`walk_elements` counts them first, reading headers only.

    The file meta is read on its own first (it is never deflated); pydicom has no public API
    for that on a stream, hence the private ``_read_file_meta_info``.
    """
    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
        ts = meta.get("TransferSyntaxUID")
    except _PARSE_ERRORS as exc:
        raise MalformedDicom() from exc
    if ts is not None and str(ts) == DeflatedExplicitVRLittleEndian:
        raise UnsupportedTransferSyntax()
    walk_elements(data, fp.tell(), str(ts) if ts is not None else "")


def _read_dataset(data: bytes) -> pydicom.Dataset:
    _precheck(data)
    try:
        # force=False: a stream without the DICM marker is refused instead of guessed at.
        ds = pydicom.dcmread(io.BytesIO(data), force=False)
    except _PARSE_ERRORS as exc:
        raise MalformedDicom() from exc
    _check_value_lengths(ds)
    _check_meta_length(ds, len(data))
    return ds


def _get(ds: pydicom.Dataset, keyword: str, default: Any = None) -> Any:
    """Read one top-level element; any failure to convert it means a malformed file."""
    try:
        return ds.get(keyword, default)
    except _PARSE_ERRORS as exc:
        raise MalformedDicom() from exc


def _int_tag(ds: pydicom.Dataset, keyword: str, default: int | None = None) -> int:
    value = _get(ds, keyword, default)
    if value is None or value == "":
        if default is None:
            raise MalformedDicom()
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise MalformedDicom() from exc


def _first_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise MalformedDicom() from exc
    if not math.isfinite(number):
        raise MalformedDicom()
    return number


_AGE_UNITS_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def patient_age_years(ds: pydicom.Dataset) -> float | None:
    """PatientAge (AS, e.g. ``045Y``, ``018M``) in years; None when absent or not well formed.

    Used only to pick the operating population; never logged, echoed or sent to the LLM.
    """
    try:
        value = str(ds.get("PatientAge", "") or "").strip().upper()
    except _PARSE_ERRORS:
        return None
    if len(value) != 4 or not value[:3].isdigit() or value[3] not in _AGE_UNITS_YEARS:
        return None
    return int(value[:3]) * _AGE_UNITS_YEARS[value[3]]


def _check_identity(ds: pydicom.Dataset) -> None:
    sop_class = str(_get(ds, "SOPClassUID", "") or "")
    modality = str(_get(ds, "Modality", "") or "").upper()
    if sop_class and sop_class not in _IMAGE_SOP_CLASSES:
        raise UnsupportedSopClass()
    if modality not in _MODALITIES:
        raise UnsupportedSopClass()
    if "PixelData" not in ds:
        raise NoPixelData()


def _check_geometry(ds: pydicom.Dataset, max_pixels: int, max_side: int) -> tuple[int, int, int]:
    rows = _int_tag(ds, "Rows")
    cols = _int_tag(ds, "Columns")
    frames = _int_tag(ds, "NumberOfFrames", 1)
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise MalformedDicom()
    if frames > 1:
        raise MultiFrameNotSupported()
    if rows > max_side or cols > max_side or rows * cols > max_pixels:
        raise PixelBudgetExceeded()
    bits_allocated = _int_tag(ds, "BitsAllocated")
    bits_stored = _int_tag(ds, "BitsStored", bits_allocated)
    samples = _int_tag(ds, "SamplesPerPixel", 1)
    photometric = str(_get(ds, "PhotometricInterpretation", "") or "").strip().upper()
    if bits_allocated not in (8, 16) or not 1 <= bits_stored <= bits_allocated:
        raise MalformedDicom()
    if samples != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise MalformedDicom()
    return rows, cols, bits_allocated


def _check_transfer_syntax(ds: pydicom.Dataset, rows: int, cols: int, bits_allocated: int) -> UID:
    meta = getattr(ds, "file_meta", None)
    ts_value = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if ts_value is None:
        raise MalformedDicom()
    ts = UID(str(ts_value))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError as exc:
        raise UnsupportedTransferSyntax() from exc
    if not decoder.is_available:
        raise UnsupportedTransferSyntax()
    if not ts.is_compressed:
        raw = _get(ds, "PixelData")
        expected = rows * cols * bits_allocated // 8
        # One trailing pad byte keeps the value length even (PS3.5 7.1.1).
        if raw is None or len(raw) not in (expected, expected + (expected % 2)):
            raise MalformedDicom()
    return ts


# Codestreams that must end with the EOI (JPEG, JPEG-LS) or EOC (JPEG 2000, HTJ2K) marker FFD9.
_MARKER_TERMINATED = frozenset(
    {
        *JPEGTransferSyntaxes,
        *JPEGLSTransferSyntaxes,
        *JPEG2000TransferSyntaxes,
        HTJ2KLossless,
        HTJ2KLosslessRPCL,
        HTJ2K,
    }
)


_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"


def _codestream_size(frame: bytes, ts: UID) -> tuple[int, int]:
    """(width, height) declared by a JPEG/JPEG-LS SOF or a JPEG 2000/HTJ2K SIZ marker."""
    if ts in JPEGTransferSyntaxes or ts in JPEGLSTransferSyntaxes:
        return header_size(frame, ImageFormat.JPEG)
    # PS3.5 A.4.4: a bare codestream (no JP2 boxes), so SIZ follows SOC at offset 2.
    if not frame.startswith(_J2K_SOC_SIZ) or len(frame) < 24:
        raise CorruptImage()
    x_siz, y_siz, x_off, y_off = struct.unpack_from(">IIII", frame, 8)
    return x_siz - x_off, y_siz - y_off


def _check_codestream(ds: pydicom.Dataset, ts: UID, rows: int, cols: int) -> None:
    """Check a JPEG-family frame's own header and end before any native decoder sees it.

    - Size: the decoders allocate what the codestream header declares, not Rows x Columns.
      A 96x80 DICOM whose JPEG SOF says 60000x60000 made libjpeg take 15 s and ~3 GB (JPEG-LS:
      50 s) before failing, so the header must match the already budget-checked geometry.
    - End: libjpeg (JPEG-LS) and openjpeg decode a codestream cut in half into a partly blank
      image without any error; Pillow's path refuses truncation (LOAD_TRUNCATED_IMAGES stays
      False), so DICOM must too (hostile input H17b). One trailing 0x00 is the fragment's
      even-length pad (PS3.5 A.4).
    """
    if ts not in _MARKER_TERMINATED:
        return
    try:
        frame = next(generate_frames(_get(ds, "PixelData"), number_of_frames=1))
    except (*_PARSE_ERRORS, StopIteration) as exc:
        raise CorruptImage() from exc
    if _codestream_size(frame, ts) != (cols, rows):
        raise CorruptImage()
    if frame.endswith(b"\0"):
        frame = frame[:-1]
    if not frame.endswith(b"\xff\xd9"):
        raise CorruptImage()


def _window(ds: pydicom.Dataset, values: npt.NDArray[np.float64]) -> FloatImage:
    """Apply the VOI transform (LUT, then window) and return [0, 1]."""
    if "VOILUTSequence" in ds:
        try:
            return stretch_to_unit(apply_voi_lut(values, ds, prefer_lut=True), 0.0, 100.0)
        except _PARSE_ERRORS as exc:
            raise MalformedDicom() from exc
    center = _first_float(_get(ds, "WindowCenter"))
    width = _first_float(_get(ds, "WindowWidth"))
    if center is None or width is None:
        return stretch_to_unit(values)
    if not 1.0 <= width <= 2.0**20 or abs(center) > 2.0**24:
        raise MalformedDicom()
    function = str(_get(ds, "VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
    c, w = center, width

    def window(v: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if function == "SIGMOID":
            out = 1.0 / (1.0 + np.exp(-4.0 * (v - c) / w))
        elif w == 1.0:
            # PS3.3 C.11.2.1.2.1: width 1 is a threshold at c - 0.5. The linear formula below
            # would divide by zero and hand inf/NaN pixels to the models.
            out = (v > c - 0.5).astype(np.float64)
        else:
            # PS3.3 C.11.2.1.2.1 linear window, mapped to [0, 1].
            out = (v - (c - 0.5)) / (w - 1.0) + 0.5
        return np.clip(out, 0.0, 1.0)

    # Block-wise: the float64 temporaries of a 40 MP image would otherwise need ~1 GB.
    return blockwise(values, window)


def decode_dicom(data: bytes, max_pixels: int, max_side: int) -> DecodedDicom:
    """Decode a single-frame CR/DX DICOM into grayscale [0, 1] (MONOCHROME2 convention)."""
    ds = _read_dataset(data)
    _check_identity(ds)
    rows, cols, bits_allocated = _check_geometry(ds, max_pixels, max_side)
    ts = _check_transfer_syntax(ds, rows, cols, bits_allocated)
    _check_codestream(ds, ts, rows, cols)
    try:
        raw = ds.pixel_array
    except IntakeError:
        raise
    except (*_PARSE_ERRORS, RuntimeError, MemoryError) as exc:
        raise CorruptImage() from exc
    if raw.shape != (rows, cols):
        raise MalformedDicom()
    slope = _first_float(_get(ds, "RescaleSlope"))
    if slope is not None and slope == 0.0:
        raise MalformedDicom()
    try:
        values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
    except _PARSE_ERRORS as exc:
        raise MalformedDicom() from exc
    pixels = _window(ds, values)
    photometric = str(_get(ds, "PhotometricInterpretation")).strip().upper()
    if photometric == "MONOCHROME1":
        pixels = np.subtract(1.0, pixels, out=pixels)  # in place, same float32 result
    return DecodedDicom(
        pixels=pixels,
        bits_stored=_int_tag(ds, "BitsStored", bits_allocated),
        photometric=photometric,
        patient_age_years=patient_age_years(ds),
    )

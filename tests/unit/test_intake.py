"""Decoder-level hostile inputs (docs: ../shared/docs/hostile-inputs.md, H6-H22).

Every hostile file is generated here or in :mod:`tests.factories`. Each case must end in the
documented :class:`~inference.errors.IntakeError` subclass (never a library exception) and fast.
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image, ImageFile
from pydicom.encaps import generate_frames
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from inference import dicom as dicom_module
from inference.errors import (
    CorruptImage,
    EmptyUpload,
    IntakeError,
    MalformedDicom,
    MultiFrameNotSupported,
    NoPixelData,
    PixelBudgetExceeded,
    UnsupportedFormat,
    UnsupportedSopClass,
    UnsupportedTransferSyntax,
)
from inference.intake import Limits, Radiograph, decode_upload
from inference.sniff import ImageFormat
from tests import factories as f

# Generous wall-time bounds (the doc asks <= 100 ms for header rejects and <= 2 s for any reject;
# the test machine is a busy 2-core box, so the header bound is relaxed to 0.5 s).
HEADER_REJECT_S = 0.5
ANY_REJECT_S = 2.0
MAX_TRACED_BYTES = 32 << 20


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], bytes]
    expected: type[IntakeError]
    max_s: float = ANY_REJECT_S


def _encode(arr: np.ndarray, fmt: str, mode: str | None = None, **save: object) -> bytes:
    img = Image.fromarray(arr)
    if mode is not None:
        img = img.convert(mode)
    return f.encode(img, fmt, **save)


def _png() -> bytes:
    return _encode(f.synthetic_chest(), "PNG")


def _jpeg() -> bytes:
    return _encode(f.synthetic_chest(), "JPEG", quality=90)


def _webp() -> bytes:
    return _encode(f.synthetic_chest(), "WEBP", quality=80)


def _cut(build: Callable[[], bytes], fraction: float) -> Callable[[], bytes]:
    return lambda: (data := build())[: int(len(data) * fraction)]


def _animated(fmt: str) -> bytes:
    a = Image.fromarray(f.synthetic_chest())
    b = Image.fromarray(255 - f.synthetic_chest())
    return f.encode(a, fmt, save_all=True, append_images=[b], duration=100, loop=0)


def _dcm(**kw: Any) -> bytes:
    return f.synthetic_dicom(patient_name=f.CANARY_NAME, **kw)


def _dcm_with(**tags: object) -> bytes:
    """A valid synthetic DICOM with some top-level tags overwritten (pydicom writes them)."""
    arr = f.synthetic_chest(96, 80, 12)
    ds = f.dicom_dataset(arr, bits_stored=12, patient_name=f.CANARY_NAME)
    with warnings.catch_warnings():
        # pydicom warns when a test sets a deliberately invalid value (e.g. DS "NaN").
        warnings.simplefilter("ignore", UserWarning)
        for keyword, value in tags.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        return f.dicom_bytes(ds)


def _dcm_pixel_len(delta: int) -> bytes:
    arr = f.synthetic_chest(96, 80, 12)
    ds = f.dicom_dataset(arr, bits_stored=12, patient_name=f.CANARY_NAME)
    raw = ds.PixelData
    ds.PixelData = raw[:delta] if delta < 0 else raw + b"\0" * delta
    return f.dicom_bytes(ds)


def _dcm_rgb_mono() -> bytes:
    arr = f.synthetic_chest(96, 80, 8)
    ds = f.dicom_dataset(arr, bits_stored=8, patient_name=f.CANARY_NAME)
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.PixelData = np.repeat(arr[..., None], 3, axis=2).tobytes()
    return f.dicom_bytes(ds)


def _dcm_bits64() -> bytes:
    arr = f.synthetic_chest(96, 80, 12)
    ds = f.dicom_dataset(arr, bits_stored=12, patient_name=f.CANARY_NAME)
    ds.BitsAllocated = 64
    ds.BitsStored = 64
    ds.HighBit = 63
    ds.PixelData = arr.astype(np.uint64).tobytes()
    return f.dicom_bytes(ds)


def _dcm_huge_rows() -> bytes:
    arr = f.synthetic_chest(16, 16, 12)
    ds = f.dicom_dataset(arr, bits_stored=12, patient_name=f.CANARY_NAME)
    ds.Rows = ds.Columns = 65535
    ds.PixelData = b"\0" * 512
    return f.dicom_bytes(ds)


def _dcm_frames(n: int) -> bytes:
    arr = np.concatenate([f.synthetic_chest(96, 80, 12)] * n)
    ds = f.dicom_dataset(arr, bits_stored=12, patient_name=f.CANARY_NAME)
    ds.Rows = 96
    ds.NumberOfFrames = n
    return f.dicom_bytes(ds)


ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
JPEG_XL_LOSSLESS = UID("1.2.840.10008.1.2.4.110")


def _dcm_sop(sop: UID, modality: str) -> bytes:
    arr = f.synthetic_chest(96, 80, 12)
    ds = f.dicom_dataset(arr, bits_stored=12, patient_name=f.CANARY_NAME, modality=modality)
    ds.SOPClassUID = sop
    ds.file_meta.MediaStorageSOPClassUID = sop
    return f.dicom_bytes(ds)


def _dcm_pdf() -> bytes:
    arr = f.synthetic_chest(8, 8, 8)
    ds = f.dicom_dataset(arr, bits_stored=8, patient_name=f.CANARY_NAME, modality="DOC")
    for keyword in (
        "Rows",
        "Columns",
        "SamplesPerPixel",
        "PhotometricInterpretation",
        "BitsAllocated",
        "BitsStored",
        "HighBit",
        "PixelRepresentation",
        "PixelData",
    ):
        delattr(ds, keyword)
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.file_meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n%%EOF\n"
    return f.dicom_bytes(ds)


def _dcm_nested_undefined() -> bytes:
    return f.insert_before(
        _dcm(height=32, width=32), 0x0010, 0x0010, f.nested_sequences_undefined(200)
    )


def _flood_in_undefined_sequence(count: int) -> bytes:
    """One undefined-length sequence whose single item holds ``count`` elements: pydicom
    parses it eagerly to find its end, so the walk must count inside it too."""
    undefined = struct.pack("<I", 0xFFFFFFFF)
    return (
        f.dicom_element(0x0008, 0x1140, b"SQ", b"", length=0xFFFFFFFF)
        + f.dicom_tag_bytes(0xFFFE, 0xE000)
        + undefined
        + f.element_flood(count)
        + f.dicom_tag_bytes(0xFFFE, 0xE00D)
        + b"\0\0\0\0"
        + f.dicom_tag_bytes(0xFFFE, 0xE0DD)
        + b"\0\0\0\0"
    )


def _dcm_nested_defined() -> bytes:
    return f.insert_before(
        _dcm(height=32, width=32), 0x0010, 0x0010, f.nested_sequences_defined(1000)
    )


def _dcm_pixel_vl_beyond_eof() -> bytes:
    data = _dcm(height=32, width=32, bits=8)
    return f.set_element_length(data, 0x7FE0, 0x0010, 32 * 32 + 4096)


def _dcm_patient_name_vl() -> bytes:
    return f.set_element_length(_dcm(height=32, width=32, bits=8), 0x0010, 0x0010, 0xFFF0)


def _dcm_trailing_ob_vl() -> bytes:
    # (FFFC,FFFC) Data Set Trailing Padding, declared 4 GiB - 16 at EOF, 8 real bytes.
    return _dcm(height=32, width=32) + f.dicom_element(
        0xFFFC, 0xFFFC, b"OB", b"\0" * 8, length=0xFFFFFFF0
    )


def _dcm_no_magic() -> bytes:
    return f.strip_preamble(_dcm())


def _dcm_corrupt(ts: UID) -> Callable[[], bytes]:
    def build() -> bytes:
        garbage = bytes((i * 37 + 11) % 256 for i in range(600))
        if ts == JPEG2000Lossless:
            garbage = b"\xff\x4f\xff\x51" + garbage  # J2K SOC + SIZ marker, then noise
        elif ts == JPEGLSLossless:
            garbage = b"\xff\xd8\xff\xf7\x00\x0b\x08\x00\x60\x00\x50\x01\x01\x11\x00" + garbage
        elif ts == JPEGBaseline8Bit:
            garbage = b"\xff\xd8\xff\xdb" + garbage
        elif ts == RLELossless:
            # RLE header: one segment at offset 64 whose literal run stops far short of the frame.
            garbage = (
                (1).to_bytes(4, "little")
                + (64).to_bytes(4, "little")
                + b"\0" * 56
                + b"\x05\x01\x02"
            )
        return f.encapsulated_dicom([garbage], ts, bits=8, patient_name=f.CANARY_NAME)

    return build


def _dcm_truncated_codestream(ts: UID) -> Callable[[], bytes]:
    """A real codestream for ``ts`` cut in half (decoders often return a partial image)."""

    def build() -> bytes:
        arr = f.synthetic_chest(96, 80, 8)
        if ts == JPEGBaseline8Bit:
            stream = f.encode(Image.fromarray(arr), "JPEG", quality=90)
        elif ts == JPEGLSLossless:
            imagecodecs = pytest.importorskip("imagecodecs", reason="JPEG-LS encoder (dev extra)")
            stream = bytes(imagecodecs.jpegls_encode(arr))
        else:
            full = f.compressed_dicom(ts, bits=8)
            stream = next(
                generate_frames(pydicom.dcmread(io.BytesIO(full)).PixelData, number_of_frames=1)
            )
        return f.encapsulated_dicom([stream[: len(stream) // 2]], ts, bits=8)

    return build


def _dcm_codestream_claims(ts: UID, side: int = 12_000) -> Callable[[], bytes]:
    """A valid 96x80 codestream whose own SOF/SIZ header claims ``side`` x ``side``.

    Native decoders allocate what the codestream declares, not Rows x Columns. The size is kept
    moderate (144 MP) so that a regression fails the test instead of exhausting the machine.
    """

    def build() -> bytes:
        arr = f.synthetic_chest(96, 80, 8)
        if ts == JPEGBaseline8Bit:
            s = f.encode(Image.fromarray(arr), "JPEG", quality=90)
            i = s.find(b"\xff\xc0")
            s = s[: i + 5] + struct.pack(">HH", side, side) + s[i + 9 :]
        elif ts == JPEGLSLossless:
            imagecodecs = pytest.importorskip("imagecodecs", reason="JPEG-LS encoder (dev extra)")
            s = bytes(imagecodecs.jpegls_encode(arr))
            i = s.find(b"\xff\xf7")
            s = s[: i + 5] + struct.pack(">HH", side, side) + s[i + 9 :]
        else:
            full = f.compressed_dicom(ts, bits=8)
            s = next(
                generate_frames(pydicom.dcmread(io.BytesIO(full)).PixelData, number_of_frames=1)
            )
            s = s[:8] + struct.pack(">II", side, side) + s[16:]  # SIZ Xsiz, Ysiz
        return f.encapsulated_dicom([s], ts, bits=8, patient_name=f.CANARY_NAME)

    return build


def _dcm_jp2_boxed() -> bytes:
    """A JPEG 2000 frame wrapped in JP2 boxes (forbidden by PS3.5 A.4.4): refused, not guessed."""
    full = f.compressed_dicom(JPEG2000Lossless, bits=8)
    stream = next(generate_frames(pydicom.dcmread(io.BytesIO(full)).PixelData, number_of_frames=1))
    jp2 = b"\x00\x00\x00\x0cjP  \r\n\x87\n" + struct.pack(">I", 8 + len(stream)) + b"jp2c" + stream
    return f.encapsulated_dicom([jp2], JPEG2000Lossless, bits=8)


def _unknown_vr(group: int, element: int, value: bytes) -> bytes:
    """A valid file plus/with one element whose VR is not a DICOM VR (bytes 0x53 0x02)."""
    data = _dcm()
    try:
        pos = f.find_element(data, group, element)
    except KeyError:
        return f.insert_before(
            data, 0x0010, 0x0010, f.dicom_element(group, element, b"S\x02", value)
        )
    end = pos + 8 + struct.unpack_from("<H", data, pos + 6)[0]
    return data[:pos] + f.dicom_element(group, element, b"S\x02", value) + data[end:]


def _dcm_jxl() -> bytes:
    # pydicom 3.0 refuses to *write* a transfer syntax it does not know, so write MPEG2 (a UID of
    # the same length) and patch the file meta: readers see JPEG XL Lossless.
    mpeg2 = UID("1.2.840.10008.1.2.4.100")
    data = f.encapsulated_dicom([b"\xff\x0a" + b"\0" * 64], mpeg2, bits=8)
    assert data.count(mpeg2.encode()) == 1
    return data.replace(mpeg2.encode(), JPEG_XL_LOSSLESS.encode())


_FITS = b"SIMPLE  =                    T".ljust(80) + b"BITPIX  =                    8".ljust(80)
_FITS += b"NAXIS   =                    0".ljust(80) + b"END".ljust(80)
_FITS = _FITS.ljust(2880)


def _small(fmt: str, mode: str = "L") -> bytes:
    return f.encode(Image.fromarray(f.synthetic_chest(16, 16)).convert(mode), fmt)


CASES: list[Case] = [
    # H7
    Case("H7-empty", lambda: b"", EmptyUpload),
    # H8: formats outside the allowlist, whatever their name
    Case("H8-gif", lambda: _small("GIF"), UnsupportedFormat),
    Case("H8-tiff", lambda: _small("TIFF"), UnsupportedFormat),
    Case("H8-bmp", lambda: _small("BMP"), UnsupportedFormat),
    Case("H8-fits", lambda: _FITS, UnsupportedFormat),
    Case(
        "H8-svg",
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>',
        UnsupportedFormat,
    ),
    Case("H8-psd", lambda: b"8BPS\x00\x01" + b"\0" * 64, UnsupportedFormat),
    Case("H8-pdf", lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\n%%EOF\n", UnsupportedFormat),
    Case("H8-jpeg2000-raw", lambda: _small("JPEG2000"), UnsupportedFormat),
    Case("H8-random", lambda: bytes(range(256)) * 4, UnsupportedFormat),
    # H9-H11: pixel budget from headers
    Case(
        "H9-png-65535",
        lambda: f.png_header_only(65535, 65535),
        PixelBudgetExceeded,
        HEADER_REJECT_S,
    ),
    Case(
        "H10-png-10000",
        lambda: f.png_header_only(10000, 10000),
        PixelBudgetExceeded,
        HEADER_REJECT_S,
    ),
    Case(
        "H11-png-zero-8000",
        lambda: f.png_zero_bomb(8000, 8000),
        PixelBudgetExceeded,
        HEADER_REJECT_S,
    ),
    Case(
        "H11-png-wide-strip",
        lambda: f.png_header_only(20000, 4),
        PixelBudgetExceeded,
        HEADER_REJECT_S,
    ),
    # H12: compressed text / ICC bombs
    Case("H12-zTXt-bomb", lambda: f.png_text_bomb("zTXt"), CorruptImage),
    Case("H12-iTXt-bomb", lambda: f.png_text_bomb("iTXt"), CorruptImage),
    Case("H12-iCCP-bomb", lambda: f.png_text_bomb("iCCP"), CorruptImage),
    # H13: truncation
    Case("H13-png-40pct", _cut(_png, 0.4), CorruptImage),
    Case("H13-png-90pct", _cut(_png, 0.9), CorruptImage),
    Case("H13-jpeg-40pct", _cut(_jpeg, 0.4), CorruptImage),
    Case("H13-jpeg-90pct", _cut(_jpeg, 0.9), CorruptImage),
    Case("H13-webp-40pct", _cut(_webp, 0.4), CorruptImage),
    Case("H13-webp-90pct", _cut(_webp, 0.9), CorruptImage),
    Case("H13-jpeg-soi-only", lambda: b"\xff\xd8", CorruptImage),
    Case("H13-jpeg-soi-eoi", lambda: b"\xff\xd8\xff\xd9", CorruptImage),
    Case("H13-png-magic-only", lambda: b"\x89PNG\r\n\x1a\n", CorruptImage),
    Case("H13-png-header-too-small-idat", lambda: f.png_header_only(64, 64), CorruptImage),
    # H14: animation and oversized canvases
    Case("H14-apng", lambda: _animated("PNG"), MultiFrameNotSupported),
    Case("H14-webp-animated", lambda: _animated("WEBP"), MultiFrameNotSupported),
    Case(
        "H14-webp-canvas-16383",
        lambda: f.webp_vp8x_canvas(16383, 16383),
        PixelBudgetExceeded,
        HEADER_REJECT_S,
    ),
    Case(
        "H14-webp-vp8l-16384",
        lambda: f.webp_vp8l_header(16384, 16384),
        PixelBudgetExceeded,
        HEADER_REJECT_S,
    ),
    # H15
    Case("H15-dicom-65535", _dcm_huge_rows, PixelBudgetExceeded, HEADER_REJECT_S),
    # H16
    Case("H16-pixeldata-short", lambda: _dcm_pixel_len(-100), MalformedDicom),
    Case("H16-pixeldata-long", lambda: _dcm_pixel_len(4096), MalformedDicom),
    Case("H16-bits-allocated-64", _dcm_bits64, MalformedDicom),
    Case("H16-rgb-as-monochrome2", _dcm_rgb_mono, MalformedDicom),
    Case(
        "H16-window-negative",
        lambda: _dcm_with(WindowCenter=2048, WindowWidth=-400),
        MalformedDicom,
    ),
    Case(
        "H16-window-absurd",
        lambda: _dcm_with(WindowCenter=2048, WindowWidth="1e30"),
        MalformedDicom,
    ),
    Case(
        "H16-window-nan", lambda: _dcm_with(WindowCenter="NaN", WindowWidth="400"), MalformedDicom
    ),
    Case(
        "H16-rescale-slope-zero",
        lambda: _dcm_with(RescaleSlope=0, RescaleIntercept=0),
        MalformedDicom,
    ),
    Case("H16-rows-zero", lambda: _dcm_with(Rows=0), MalformedDicom),
    Case("H16-photometric-rgb", lambda: _dcm_with(PhotometricInterpretation="RGB"), MalformedDicom),
    # H17 (a) no decoder at all for the syntax; (b) corrupt codestreams
    Case("H17a-jpeg-xl", _dcm_jxl, UnsupportedTransferSyntax),
    Case(
        "H17a-deflated",
        lambda: f.synthetic_dicom(transfer_syntax=DeflatedExplicitVRLittleEndian),
        UnsupportedTransferSyntax,
    ),
    Case(
        "H17a-deflate-bomb-64MiB", f.deflated_dicom_bomb, UnsupportedTransferSyntax, HEADER_REJECT_S
    ),
    Case("H17b-j2k-corrupt", _dcm_corrupt(JPEG2000Lossless), CorruptImage),
    Case("H17b-jpegls-corrupt", _dcm_corrupt(JPEGLSLossless), CorruptImage),
    Case("H17b-jpeg-sof-claims-12000", _dcm_codestream_claims(JPEGBaseline8Bit), CorruptImage),
    Case("H17b-jpegls-sof-claims-12000", _dcm_codestream_claims(JPEGLSLossless), CorruptImage),
    Case("H17b-j2k-siz-claims-12000", _dcm_codestream_claims(JPEG2000Lossless), CorruptImage),
    Case("H17b-j2k-jp2-boxed", _dcm_jp2_boxed, CorruptImage),
    Case("H17b-j2k-truncated-50pct", _dcm_truncated_codestream(JPEG2000Lossless), CorruptImage),
    Case("H17b-jpegls-truncated-50pct", _dcm_truncated_codestream(JPEGLSLossless), CorruptImage),
    Case("H17b-jpeg-truncated-50pct", _dcm_truncated_codestream(JPEGBaseline8Bit), CorruptImage),
    Case("H17b-jpeg-corrupt", _dcm_corrupt(JPEGBaseline8Bit), CorruptImage),
    Case("H17b-rle-corrupt", _dcm_corrupt(RLELossless), CorruptImage),
    # H18-H20 structure
    Case("H18-nested-undefined-200", _dcm_nested_undefined, MalformedDicom, HEADER_REJECT_S),
    # F4 (security review): pydicom builds every element (1 M took 30 s and +348 MB); refused
    # from a header walk instead. Before the walk this decoded fine.
    Case(
        "F4-element-flood-20k",
        lambda: f.insert_before(_dcm(height=32, width=32), 0x7FE0, 0x0010, f.element_flood(20_000)),
        MalformedDicom,
    ),
    Case(
        "F4-element-flood-in-a-sequence",
        lambda: f.insert_before(
            _dcm(height=32, width=32), 0x0010, 0x0010, _flood_in_undefined_sequence(20_000)
        ),
        MalformedDicom,
    ),
    Case("H20-pixeldata-vl-beyond-eof", _dcm_pixel_vl_beyond_eof, MalformedDicom),
    Case("H20-patientname-vl-fff0", _dcm_patient_name_vl, MalformedDicom),
    Case("H20-no-dicm-magic", _dcm_no_magic, MalformedDicom),
    Case("H20-truncated-header", lambda: _dcm()[:200], MalformedDicom),
    # found by mutation fuzzing: pydicom's BytesLengthException escaped from the file meta
    Case(
        "H20-meta-group-length-vl-2",
        lambda: f.set_element_length(_dcm(), 0x0002, 0x0000, 2),
        MalformedDicom,
    ),
    Case("H20-unknown-vr-on-modality", lambda: _unknown_vr(0x0008, 0x0060, b"DX"), MalformedDicom),
    # H21
    Case("H21-encapsulated-pdf", _dcm_pdf, UnsupportedSopClass),
    Case("H21-structured-report", lambda: _dcm_sop(BASIC_TEXT_SR, "SR"), UnsupportedSopClass),
    Case("H21-no-pixel-data", lambda: _dcm_with(PixelData=None), NoPixelData),
    Case("H21-multi-frame", lambda: _dcm_frames(2), MultiFrameNotSupported),
    Case("H21-modality-ct", lambda: _dcm(modality="CT"), UnsupportedSopClass),
    Case("H21-modality-missing", lambda: _dcm_with(Modality=None), UnsupportedSopClass),
]


def test_load_truncated_images_is_off() -> None:
    # A global Pillow switch that would turn every truncated image into a silent partial decode.
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_raises_documented_error(case: Case) -> None:
    data = case.build()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(IntakeError) as info:
            decode_upload(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Python and numpy allocations only (native decoder buffers are invisible to tracemalloc);
    # the doc's bound is RSS delta <= 256 MB, a hostile case here needs a few MB at most.
    assert peak < MAX_TRACED_BYTES, f"{peak / 2**20:.1f} MiB traced"
    assert type(info.value) is case.expected, f"got {type(info.value).__name__}"
    assert info.value.code == case.expected.code
    assert elapsed < case.max_s, f"{elapsed:.3f}s"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    # The public detail is the class constant: no library text, tag value or filename.
    assert info.value.public_detail == case.expected.detail
    assert str(info.value) == case.expected.detail


def test_h19_nested_defined_sequences_are_never_walked() -> None:
    """1000 nested defined-length sequences: 422 or a normal decode, but quickly."""
    data = _dcm_nested_defined()
    assert 19_000 < len(data) < 40_000
    started = time.perf_counter()
    try:
        out = decode_upload(data)
    except IntakeError as exc:
        assert type(exc) is MalformedDicom
    else:
        assert out.pixels.shape == (32, 32)
    assert time.perf_counter() - started < ANY_REJECT_S


def test_deflate_bomb_is_never_inflated() -> None:
    """64 KB that inflates to 64 MiB: refused from the file meta, with no large allocation."""
    data = f.deflated_dicom_bomb()
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(UnsupportedTransferSyntax):
            decode_upload(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20


def test_h18_file_is_small() -> None:
    assert 6_000 < len(f.nested_sequences_undefined(200)) < 8_000


def test_h20_trailing_ob_with_absurd_vl_after_intact_pixels() -> None:
    """Only an optional trailing element lies about its length: 422 malformed or a normal decode."""
    data = _dcm_trailing_ob_vl()
    try:
        out = decode_upload(data)
    except IntakeError as exc:
        assert type(exc) is MalformedDicom
    else:
        assert out.pixels.shape == (32, 32)


def test_h17a_installed_codec_reported_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    """JPEG 2000 without any decoder plugin installed -> 415, before pixel decoding is tried."""
    real = dicom_module.get_decoder

    class _Unavailable:
        is_available = False

    def fake(ts: UID) -> object:
        return _Unavailable() if ts == JPEG2000Lossless else real(ts)

    monkeypatch.setattr(dicom_module, "get_decoder", fake)
    data = f.compressed_dicom(JPEG2000Lossless)
    with pytest.raises(UnsupportedTransferSyntax):
        decode_upload(data)


def test_h9_rejected_before_pillow_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    """The header budget check runs before any decoder: Pillow is never asked to open the file."""

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("Image.open called for an over-budget header")

    monkeypatch.setattr(Image, "open", boom)
    with pytest.raises(PixelBudgetExceeded):
        decode_upload(f.png_header_only(65535, 65535))


def test_h15_rejected_before_pixel_array(monkeypatch: pytest.MonkeyPatch) -> None:
    import pydicom

    def boom(self: object) -> None:
        raise AssertionError("pixel_array touched for an over-budget header")

    monkeypatch.setattr(pydicom.Dataset, "pixel_array", property(boom))
    with pytest.raises(PixelBudgetExceeded):
        decode_upload(_dcm_huge_rows())


def test_budget_follows_limits() -> None:
    data = f.png_zero_bomb(300, 200)
    with pytest.raises(PixelBudgetExceeded):
        decode_upload(data, Limits(max_pixels=50_000))
    with pytest.raises(PixelBudgetExceeded):
        decode_upload(data, Limits(max_side=256))
    out = decode_upload(data, Limits(max_pixels=60_000, max_side=300))
    assert out.pixels.shape == (200, 300)


# ---- H14 / H22 and positive decoder cases --------------------------------------------------------


def _check(out: Radiograph, shape: tuple[int, int], fmt: ImageFormat) -> None:
    assert out.pixels.dtype == np.float32
    assert out.pixels.shape == shape
    assert out.format is fmt
    assert float(out.pixels.min()) >= 0.0 and float(out.pixels.max()) <= 1.0
    assert float(out.pixels.std()) > 0.05  # real content, not a blank fallback


GOOD: list[tuple[str, Callable[[], bytes], ImageFormat]] = [
    ("H14-png-rgba", lambda: _small_rgba("PNG"), ImageFormat.PNG),
    ("H14-png-la", lambda: _encode(f.synthetic_chest(), "PNG", mode="LA"), ImageFormat.PNG),
    ("H14-png-16bit", lambda: f.png_bytes(f.synthetic_chest(bits=16)), ImageFormat.PNG),
    ("H14-jpeg-cmyk", lambda: _encode(f.synthetic_chest(), "JPEG", mode="CMYK"), ImageFormat.JPEG),
    ("H14-webp-rgba", lambda: _small_rgba("WEBP", lossless=True), ImageFormat.WEBP),
    ("H22-preamble-pe", lambda: f.with_preamble(_dcm(), f.PE_STUB), ImageFormat.DICOM),
    ("H22-preamble-elf", lambda: f.with_preamble(_dcm(), f.ELF_STUB), ImageFormat.DICOM),
]


def _small_rgba(fmt: str, **save: object) -> bytes:
    gray = f.synthetic_chest()
    alpha = np.full_like(gray, 128)
    rgba = np.stack([gray, gray, gray, alpha], axis=2)
    return f.encode(Image.fromarray(rgba, "RGBA"), fmt, **save)


@pytest.mark.parametrize(
    ("build", "fmt"), [(b, m) for _, b, m in GOOD], ids=[i for i, _, _ in GOOD]
)
def test_variant_decodes(build: Callable[[], bytes], fmt: ImageFormat) -> None:
    _check(decode_upload(build()), (96, 80), fmt)


def test_alpha_is_dropped_not_composited() -> None:
    """RGBA with alpha 0 everywhere keeps its gray values (alpha is ignored, not applied)."""
    gray = f.synthetic_chest()
    rgba = np.stack([gray, gray, gray, np.zeros_like(gray)], axis=2)
    out = decode_upload(f.encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_allclose(out.pixels, gray / 255.0, atol=1e-6)


def test_monochrome1_matches_monochrome2() -> None:
    one = decode_upload(_dcm(photometric="MONOCHROME1"))
    two = decode_upload(_dcm(photometric="MONOCHROME2"))
    assert one.photometric == "MONOCHROME1"
    np.testing.assert_allclose(one.pixels, two.pixels, atol=2e-3)


def test_preamble_content_is_ignored() -> None:
    clean = decode_upload(_dcm())
    polyglot = decode_upload(f.with_preamble(_dcm(), f.PE_STUB))
    np.testing.assert_array_equal(clean.pixels, polyglot.pixels)


def test_uncompressed_transfer_syntax_is_supported() -> None:
    data = f.synthetic_dicom(transfer_syntax=ExplicitVRLittleEndian)
    assert decode_upload(data).bits_stored == 12


@pytest.mark.parametrize("center", [2000.0, 2000.5], ids=["integer-center", "half-center"])
def test_window_width_one_is_a_threshold_not_nan(center: float) -> None:
    """WindowWidth=1 (the smallest legal width) once divided by zero: inf/NaN pixels."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no divide-by-zero inside the decoder
        out = decode_upload(f.synthetic_dicom(window=(center, 1.0)))
    assert np.isfinite(out.pixels).all()
    assert set(np.unique(out.pixels).tolist()) <= {0.0, 1.0}
    assert 0.0 < float(out.pixels.mean()) < 1.0


def test_signed_pixel_representation_decodes() -> None:
    arr = f.synthetic_chest(96, 80, 12).astype(np.int16) - 2048
    ds = f.dicom_dataset(arr.view(np.uint16), bits_stored=12)
    ds.PixelRepresentation = 1
    signed = decode_upload(f.dicom_bytes(ds))
    unsigned = decode_upload(f.synthetic_dicom())
    np.testing.assert_allclose(signed.pixels, unsigned.pixels, atol=1e-6)


def test_unknown_vr_on_an_unused_optional_element_is_ignored() -> None:
    """Found by fuzzing: an empty element with an unknown VR made the VL check convert it
    (NotImplementedError -> 500). It is optional and unused, so the image decodes."""
    data = _unknown_vr(0x0008, 0x0070, b"")
    assert decode_upload(data).pixels.shape == (96, 80)


def test_cases_cover_every_intake_error() -> None:
    covered = {c.expected for c in CASES}
    # Decoder errors only: other packages may subclass IntakeError for their own checks.
    decoder_errors = {c for c in IntakeError.__subclasses__() if c.__module__ == "inference.errors"}
    assert covered == decoder_errors
    assert {cls.code for cls in covered} == {
        "empty_upload", "unsupported_format", "unsupported_transfer_syntax",
        "unsupported_sop_class", "pixel_budget_exceeded", "corrupt_image",
        "multi_frame_not_supported", "malformed_dicom", "no_pixel_data",
    }  # fmt: skip


MEMORY_BOUNDS = [
    # (id, builder, max traced peak / result bytes); before the block-wise rewrite the ratios
    # were 2.0, 7.2, 8.1 and 10.2 (float64 full-image temporaries).
    ("png-8bit-zero", lambda: f.png_zero_bomb(2000, 2000), 1.6),
    ("png-16bit", lambda: f.png_bytes(f.synthetic_chest(2000, 2000, 16)), 4.5),
    (
        "dicom-16-windowed",
        lambda: f.synthetic_dicom(height=2000, width=2000, bits=16, window=(30000.0, 40000.0)),
        7.0,
    ),
    (
        "dicom-16-mono1-stretched",
        lambda: f.synthetic_dicom(height=2000, width=2000, bits=16, photometric="MONOCHROME1"),
        7.0,
    ),
]


@pytest.mark.parametrize(
    ("build", "ratio"), [(b, r) for _, b, r in MEMORY_BOUNDS], ids=[i for i, _, _ in MEMORY_BOUNDS]
)
def test_decode_peak_memory_is_bounded(build: Callable[[], bytes], ratio: float) -> None:
    """H11 asks RSS delta <= 256 MB for an image under the pixel budget: the decoder's own
    temporaries must stay a small multiple of the float32 result (traced Python/numpy memory)."""
    data = build()
    tracemalloc.start()
    try:
        out = decode_upload(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= ratio * out.pixels.nbytes, f"{peak / out.pixels.nbytes:.2f}x"


# ---- F1 (security review): a bounded working copy ----------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        lambda a: f.png_bytes(a),
        lambda a: f.png_bytes(a.astype(np.uint16) * 257),
        lambda a: f.encode(Image.fromarray(a), "JPEG", quality=90),
        lambda a: f.encode(Image.fromarray(a).convert("RGB"), "PNG"),
        lambda a: f.dicom_bytes(f.dicom_dataset(a, bits_stored=8)),
    ],
    ids=["png8", "png16", "jpeg", "rgb", "dicom"],
)
def test_large_uploads_decode_to_a_bounded_working_copy(build: Callable[[Any], bytes]) -> None:
    """The longer side is scaled to ``work_side`` (aspect kept); width/height stay the
    upload's. Before the fix the pixels stayed at upload size (30 MP: 120 MB per float copy,
    and every mask, map and overlay after it)."""
    arr = f.synthetic_chest(300, 240)
    out = decode_upload(build(arr), Limits(work_side=100))
    assert out.pixels.shape == (100, 80)
    assert (out.width, out.height) == (240, 300)
    assert out.scale == pytest.approx(80 / 240)
    assert out.pixels.dtype == np.float32
    assert float(out.pixels.min()) >= 0.0 and float(out.pixels.max()) <= 1.0
    # The working copy is the image, scaled: compare with a plain resize of the upload.
    reference = decode_upload(build(arr), Limits(work_side=4096)).pixels
    expected = np.asarray(
        Image.fromarray(reference, mode="F").resize((80, 100), Image.Resampling.BILINEAR)
    )
    assert float(np.abs(out.pixels - expected).mean()) < 0.03


def test_small_uploads_are_not_rescaled() -> None:
    out = decode_upload(f.png_bytes(f.synthetic_chest(96, 80)), Limits(work_side=96))
    assert out.pixels.shape == (96, 80) and out.scale == 1.0

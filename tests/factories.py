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


def dicom_bytes(ds: Dataset, *, little_endian: bool = True, implicit_vr: bool = False) -> bytes:
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

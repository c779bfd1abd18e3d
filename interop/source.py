"""The image the results are linked to: the uploaded DICOM instance, or a stand-in for others.

For a DICOM upload only the Patient, General Study and image-reference attributes are read
(:data:`LINKED`), never the whole header, so nothing else from the input (private tags, free
text) can reach an output. For PNG/JPEG/WEBP uploads a Secondary Capture of the uploaded
pixels is made under a new study with an anonymous patient; it is part of the bundle, so the
SEG and SR reference an instance the PACS actually holds.
"""

from __future__ import annotations

import io
import re
import warnings
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset

from interop.uids import UidFactory

MANUFACTURER = "cxr-xai"
ANONYMOUS_NAME = "ANONYMOUS^"
# Patient and General Study modules (copied into every output) and what highdicom needs to
# reference the source instance. Nothing else is read from an uploaded header.
PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)
IMAGE_REFERENCE = (
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "BitsAllocated",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "PatientOrientation",
)
LINKED = PATIENT_STUDY + IMAGE_REFERENCE
_REQUIRED = ("StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID", "SOPInstanceUID")


_UID = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


class SourceNotLinkable(ValueError):
    """The DICOM upload lacks a valid UID the outputs must reference (message: keywords only)."""


@dataclass(frozen=True)
class SourceImage:
    """``reference``: the dataset the outputs link to (patient, study, SOP instance).
    ``stand_in``: the Secondary Capture made for a non-DICOM upload (stored with the results),
    None for a DICOM upload (the PACS already holds the original).
    """

    reference: Dataset
    stand_in: Dataset | None
    uids: UidFactory
    is_dicom: bool

    @property
    def study_uid(self) -> str:
        return str(self.reference.StudyInstanceUID)


def _valid_uid(uid: str) -> bool:
    return len(uid) <= 64 and _UID.fullmatch(uid) is not None


def _person_name(value: object) -> str:
    """A PN as text, single-component names with their trailing "^" (PS3.5 6.2: the same name).

    highdicom warns about a PN without "^" and quotes it in the warning text, which would put
    the patient's name into logs; the explicit form is equivalent and warns about nothing.
    """
    text = str(value)
    return text if "^" in text or "=" in text or not text else text + "^"


def _copy_linked(header: Dataset) -> Dataset:
    """A new dataset with only :data:`LINKED` attributes whose values convert cleanly."""
    out = Dataset()
    for keyword in LINKED:
        try:
            value = header.get(keyword)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, NotImplementedError):
            continue  # a malformed value is dropped, never echoed
        if value is not None and value != "":
            setattr(out, keyword, value)
    for keyword in ("PatientName", "ReferringPhysicianName"):
        if keyword in out:
            setattr(out, keyword, _person_name(out[keyword].value))
    for keyword in _TYPE2:
        if keyword not in out:
            setattr(out, keyword, "")
    bad = [k for k in _REQUIRED if not _valid_uid(str(out.get(k, "")))]
    if bad:
        raise SourceNotLinkable("missing or invalid: " + ", ".join(bad))
    out.SpecificCharacterSet = "ISO_IR 192"  # values are decoded str now; written as UTF-8
    return out


def dicom_source(data: bytes, uids: UidFactory) -> SourceImage:
    """Link to an uploaded DICOM instance (already validated by the intake)."""
    with warnings.catch_warnings():
        # pydicom's value validation warns with the offending value quoted (a UID, a name):
        # those must not reach stderr or logs. Invalid UIDs are refused below instead.
        warnings.simplefilter("ignore", UserWarning)
        header = pydicom.dcmread(
            io.BytesIO(data),
            stop_before_pixels=True,
            specific_tags=["SpecificCharacterSet", *LINKED],
        )
        return SourceImage(_copy_linked(header), None, uids, True)


def stand_in_source(pixels: npt.NDArray[np.float32], uids: UidFactory) -> SourceImage:
    """A Secondary Capture of a non-DICOM upload: new study, anonymous patient.

    ``pixels``: the decoded radiograph, float32 [H, W] in [0, 1], 1 = bright.
    """
    gray = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    sc = hd.sc.SCImage(
        pixel_array=gray,
        photometric_interpretation="MONOCHROME2",
        bits_allocated=8,
        coordinate_system="PATIENT",
        study_instance_uid=uids.uid("study"),
        series_instance_uid=uids.uid("source.series"),
        series_number=1,
        sop_instance_uid=uids.uid("source.instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_id="CXR-" + uids.uuid_hex("patient")[:16].upper(),
        patient_name=ANONYMOUS_NAME,
        # The models assume a frontal view shown as PA (patient right on image left).
        patient_orientation=("L", "F"),
        series_description="Uploaded image (not DICOM)",
        specific_character_set="ISO_IR 192",
    )
    sc.Laterality = ""  # type 2C; a chest is not a paired structure, so empty
    return SourceImage(_copy_linked(sc), sc, uids, False)

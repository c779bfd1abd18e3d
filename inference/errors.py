"""Domain exceptions raised by the core packages.

Every exception carries a stable machine-readable ``code`` and a generic, input-free ``detail``;
only the service layer maps them to HTTP (see ``api/problems.py``). Messages never include
filenames, tag values or library exception text, because they can end up in responses and logs.

    IntakeError                      the upload cannot be turned into a radiograph
    ├── EmptyUpload                  0 bytes                              -> 422 empty_upload
    ├── UnsupportedFormat            not PNG/JPEG/WEBP/DICOM              -> 415 unsupported_format
    ├── UnsupportedTransferSyntax    DICOM codec not available            -> 415
    ├── UnsupportedSopClass          DICOM that is not a CR/DX image      -> 415
    ├── PixelBudgetExceeded          header declares too many pixels      -> 422
    ├── CorruptImage                 decoder failed / truncated / bomb    -> 422
    ├── MultiFrameNotSupported       animation or multi-frame DICOM       -> 422
    ├── MalformedDicom               DICOM structure or values invalid    -> 422
    ├── NoPixelData                  DICOM without an image               -> 422
    └── NotAChestRadiograph          fails the input suitability gate     -> 422 (+ reason)
                                     (defined in inference/suitability.py)
    ModelError                       a model artifact breaks its contract (startup only)
"""

from __future__ import annotations

from typing import ClassVar


class IntakeError(Exception):
    """Base class for upload decoding failures."""

    code: ClassVar[str] = "invalid_image"
    detail: ClassVar[str] = "The uploaded file could not be read as a radiograph."

    def __init__(self, detail: str | None = None) -> None:
        # ``detail`` overrides are generic by construction: callers pass constants only.
        super().__init__(detail or self.detail)
        self.public_detail = detail or self.detail

    def problem_extra(self) -> dict[str, str | int]:
        """Extra problem+json members (stable codes only, never input data)."""
        return {}


class EmptyUpload(IntakeError):
    code = "empty_upload"
    detail = "The uploaded file is empty."


class UnsupportedFormat(IntakeError):
    code = "unsupported_format"
    detail = "Supported formats are PNG, JPEG, WEBP and DICOM (CR/DX)."


class UnsupportedTransferSyntax(IntakeError):
    code = "unsupported_transfer_syntax"
    detail = "The DICOM transfer syntax is not supported by the installed decoders."


class UnsupportedSopClass(IntakeError):
    code = "unsupported_sop_class"
    detail = "Only single-frame CR/DX radiograph DICOM objects are supported."


class PixelBudgetExceeded(IntakeError):
    code = "pixel_budget_exceeded"
    detail = "The image declares more pixels than the configured budget allows."


class CorruptImage(IntakeError):
    code = "corrupt_image"
    detail = "The image data is corrupt or truncated."


class MultiFrameNotSupported(IntakeError):
    code = "multi_frame_not_supported"
    detail = "Only single-frame images are supported."


class MalformedDicom(IntakeError):
    code = "malformed_dicom"
    detail = "The DICOM file is malformed."


class NoPixelData(IntakeError):
    code = "no_pixel_data"
    detail = "The DICOM file contains no pixel data."


class ModelError(RuntimeError):
    """A model file or manifest is missing, tampered with, or breaks the I/O contract."""

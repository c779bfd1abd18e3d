"""Secondary Capture of the Grad-CAM overlay with a burned-in "AI — not for diagnosis" label.

The label is drawn into the pixels (BurnedInAnnotation YES), on a dark band across the top, so
it survives any viewer, export or screenshot. The SC references the source image it was
derived from and sits in the source study.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from interop.model import RgbImage
from interop.source import MANUFACTURER, SourceImage

LABEL = "AI — not for diagnosis"


def _draw_label(draw: ImageDraw.ImageDraw, x: float, y: float, size: int, text: str) -> None:
    """Draw ``text`` left-aligned at (x, middle y). Pillow's built-in font has no em dash, so a
    "—" is drawn as a line one font size long (no system font needed, same pixels everywhere).
    """
    font = ImageFont.load_default(size=size)
    parts = text.split("—")
    for i, part in enumerate(parts):
        if i:
            gap = size * 0.25
            draw.line(
                (x + gap, y, x + gap + size * 0.8, y),
                fill=(255, 255, 255),
                width=max(1, size // 12),
            )
            x += size * 0.8 + 2 * gap
        draw.text((x, y), part.strip(" "), fill=(255, 255, 255), font=font, anchor="lm")
        x += draw.textlength(part.strip(" "), font=font)


def burn_label(rgb: RgbImage, text: str = LABEL) -> RgbImage:
    """Copy of ``rgb`` [H, W, 3] uint8 with ``text`` in white on a black band at the top."""
    height, width = rgb.shape[:2]
    band = max(12, height // 20)
    img = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, width, band), fill=(0, 0, 0))
    _draw_label(draw, max(2, band // 4), band / 2, max(8, int(band * 0.7)), text)
    return np.asarray(img, dtype=np.uint8).copy()


def _derivation(source: SourceImage) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.reference.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.reference.SOPInstanceUID
    return ref


def build_sc(source: SourceImage, overlay: RgbImage, role: str = "sc") -> hd.sc.SCImage:
    """SC of ``overlay`` (the Grad-CAM overlay, RGB at the source size) with the label burned in."""
    orientation = source.reference.get("PatientOrientation") or ("L", "F")
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source.reference,
        pixel_array=burn_label(overlay),
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=source.uids.uid(f"{role}.series"),
        series_number=903,
        sop_instance_uid=source.uids.uid(f"{role}.instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        patient_orientation=tuple(orientation),
        series_description="AI Grad-CAM overlay (not for diagnosis)",
    )
    sc.SpecificCharacterSet = "ISO_IR 192"
    sc.Laterality = source.reference.get("Laterality", "")  # type 2C in General Series
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = "Grad-CAM heat map of the AI classifier over the source image"
    sc.SourceImageSequence = [_derivation(source)]
    return sc

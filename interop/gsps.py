"""Grayscale Softcopy Presentation State: the AI's lung/heart outlines and its answer as
vector graphics over the source image, with the "AI — not for diagnosis" text.

A viewer shows it on the original pixels (nothing burned in) and can hide its layer. Outlines
are the predicted structures' largest contours (derived ones are left out: they are geometry,
not findings), as closed polylines in image pixel coordinates.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from skimage.measure import find_contours

from interop.model import Algorithm, BoolMask, Findings, Segment
from interop.sc import LABEL
from interop.source import MANUFACTURER, SourceImage

MAX_POINTS = 256


def outline(mask: BoolMask) -> np.ndarray | None:
    """The longest contour of ``mask`` as a closed [N, 2] (column, row) polyline, or None."""
    if not mask.any():
        return None
    padded = np.pad(mask.astype(np.float32), 1)  # closes contours that touch the border
    contours = find_contours(padded, 0.5)  # type: ignore[no-untyped-call]  # skimage: untyped
    contour = max(contours, key=len) - 1.0
    step = max(1, len(contour) // MAX_POINTS)
    points = contour[::step][:, ::-1]  # (row, col) -> (x = column, y = row)
    points = np.clip(points, 0.0, [mask.shape[1] - 1, mask.shape[0] - 1])
    return np.vstack([points, points[:1]]).astype(np.float32)


def _caption(f: Findings) -> str:
    decision = f.decision.replace("_", " ")
    return f"{LABEL}: {decision}, p={f.probability_finding:.2f} (threshold {f.threshold:.2f})"


def build_gsps(
    source: SourceImage,
    segmenter: Algorithm,
    segments: tuple[Segment, ...],
    findings: Findings,
    role: str = "gsps",
) -> hd.pr.GrayscaleSoftcopyPresentationState:
    rows, cols = int(source.reference.Rows), int(source.reference.Columns)
    layer = hd.pr.GraphicLayer("AI", 1, "AI outlines and answer (unverified)")
    polylines = [
        hd.pr.GraphicObject(graphic_type="POLYLINE", graphic_data=line, units="PIXEL")
        for s in segments
        if s.provenance == "predicted" and (line := outline(s.mask)) is not None
    ]
    text = hd.pr.TextObject(
        text_value=_caption(findings),
        units="PIXEL",
        bounding_box=(0.0, 0.0, float(cols - 1), float(max(12, rows // 20))),
        text_justification="LEFT",
    )
    annotation = hd.pr.GraphicAnnotation(
        referenced_images=[source.reference],
        graphic_layer=layer,
        graphic_objects=polylines or None,
        text_objects=[text],
    )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=[source.reference],
        series_instance_uid=source.uids.uid(f"{role}.series"),
        series_number=904,
        sop_instance_uid=source.uids.uid(f"{role}.instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=segmenter.name,
        software_versions=segmenter.version,
        device_serial_number=segmenter.sha256[:16],
        content_label="AI_RESULTS",
        content_description="AI outlines (unverified, not for diagnosis)",
        graphic_annotations=[annotation],
        graphic_layers=[layer],
    )
    gsps.SpecificCharacterSet = "ISO_IR 192"
    gsps.Laterality = source.reference.get("Laterality", "")  # type 2C in General Series
    return gsps

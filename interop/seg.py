"""Binary DICOM Segmentation of the anatomy, referencing the source image.

One segment per structure, in the order given. Predicted structures are AUTOMATIC segments of
the segmenter; the spine and abdomen are derived geometrically from the predicted ones, which
their label, description and algorithm name say ("derived", never passed off as predicted).
Frames are the masks bit for bit (no resampling): the masks are at the source image's size.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from interop import codes as cx
from interop.model import Algorithm, Segment
from interop.source import MANUFACTURER, SourceImage


def _description(number: int, s: Segment, segmenter: Algorithm) -> hd.seg.SegmentDescription:
    derived = s.provenance == "derived"
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"{segmenter.name} ({'geometric derivation' if derived else 'predicted'})",
        family=codes.DCM.ArtificialIntelligence,
        version=segmenter.version,
        parameters={"sha256": segmenter.sha256, "provenance": s.provenance},
    )
    label = f"{s.name} (derived)" if derived else s.name
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label[:64],
        segmented_property_category=codes.SCT.AnatomicalStructure,
        segmented_property_type=cx.STRUCTURES.get(s.name) or Code(s.name, cx.SCHEME, s.name),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )


def build_seg(
    source: SourceImage, segmenter: Algorithm, segments: tuple[Segment, ...]
) -> hd.seg.Segmentation:
    """BINARY SEG; every mask must have the source image's [Rows, Columns] shape."""
    rows, cols = int(source.reference.Rows), int(source.reference.Columns)
    for s in segments:
        if s.mask.shape != (rows, cols):
            raise ValueError("segment masks must have the source image's size")
    # [frames=1, rows, cols, segments] labels each segment in its own channel (overlap allowed).
    stack = np.stack([s.mask.astype(bool) for s in segments], axis=-1)[np.newaxis]
    seg = hd.seg.Segmentation(
        source_images=[source.reference],
        pixel_array=stack,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[
            _description(i, s, segmenter) for i, s in enumerate(segments, start=1)
        ],
        series_instance_uid=source.uids.uid("seg.series"),
        series_number=902,
        sop_instance_uid=source.uids.uid("seg.instance"),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=segmenter.name,
        software_versions=segmenter.version,
        device_serial_number=segmenter.sha256[:16],
        omit_empty_frames=False,
        series_description="AI anatomy segmentation (unverified)",
    )
    seg.SpecificCharacterSet = "ISO_IR 192"
    # General Image type 2C (no frame of reference): the source's orientation, empty if unknown.
    seg.PatientOrientation = source.reference.get("PatientOrientation", "")
    return seg

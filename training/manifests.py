"""Manifest contents for the shipped models (schema: :mod:`inference.manifest`)."""

from __future__ import annotations

from typing import Any

from inference.operating import OperatingPoints
from training.models import IMAGENET_MEAN, IMAGENET_STD
from training.segmenter import SEG_LABELS

DATA_SOURCES = [
    {
        "source": "kermany",
        "citation": "Kermany et al., Cell 2018 (Guangzhou Women and Children's Medical Center, "
        "pediatric 1-5 y), train split",
        "licence": "CC BY 4.0",
        "used_for": ["classifier", "segmenter (lung masks by V7 Labs)"],
    },
    {
        "source": "nih",
        "citation": "NIH ChestX-ray14, Wang et al. CVPR 2017 "
        "(1,000-image subset: No Finding vs Pneumonia)",
        "licence": "NIH Clinical Center: free use with citation",
        "used_for": ["classifier"],
    },
    {
        "source": "jsrt",
        "citation": "JSRT database (Shiraishi et al. 2000) + SCR masks (van Ginneken et al. 2006)",
        "licence": "JSRT/SCR: research and education",
        "used_for": ["classifier (nodule vs none)", "segmenter"],
    },
    {
        "source": "ieee8023",
        "citation": "COVID-19 image data collection, Cohen et al. 2020",
        "licence": "per-image licences in the source metadata (CC BY, CC BY-NC-SA, ...)",
        "used_for": ["classifier", "segmenter (lung masks by V7 Labs)"],
    },
    {
        "source": "covidseg",
        "citation": "Radiologist segmentations of ieee8023 images",
        "licence": "CC BY 4.0",
        "used_for": ["segmenter"],
    },
    {
        "source": "covidqu",
        "citation": "COVID-QU-Ex 'Infection Segmentation Data', Tahir et al., Comput Biol Med "
        "2021 (normals and non-COVID opacities: RSNA Pneumonia Challenge / NIH; COVID-19 films "
        "from mixed public sources); adult, squashed to square upstream",
        "licence": "cite Tahir et al. 2021; RSNA challenge / NIH terms; COVID images under "
        "their own terms",
        "used_for": [
            "classifier (normal 0; non-COVID opacity and masked COVID-19 1)",
            "segmenter (3,507 physician-checked lung masks; right/left by connected components)",
        ],
    },
    {
        "source": "covid19rad",
        "citation": "COVID-19 Radiography Database, Chowdhury et al. 2020; Rahman et al. 2021 "
        "(Normal class: RSNA normals); adult, squashed to square upstream",
        "licence": "cite Chowdhury et al. 2020 and Rahman et al. 2021; RSNA / NIH terms",
        "used_for": ["classifier (all label 0)"],
    },
]


def _input(size: int) -> dict[str, Any]:
    return {
        "name": "image",
        "size": size,
        "channels": 3,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def classifier_manifest(
    version: str,
    temperature: float,
    threshold: float,
    extra: dict[str, Any],
    operating_points: OperatingPoints | None = None,
    gate_features: bool = False,
) -> dict[str, Any]:
    """Classifier manifest (sha256 filled in by :func:`training.export.write_manifest`).

    ``gate_features``: the graph has the ``gate_features`` output (tail-recipe export), which
    the input gate then scores.

    ``operating_points`` (adult / pediatric thresholds and borderline bands, see
    :mod:`inference.operating`) are written when given; without them the service decides every
    population at ``threshold`` with no band.
    """
    points = operating_points.as_dict() if operating_points is not None else {}
    return {
        "schema_version": 1,
        "name": "cxr-classifier",
        "kind": "classifier",
        "version": version,
        "file": "classifier.onnx",
        "sha256": "0" * 64,
        "input": _input(224),
        "outputs": {"logit": "logit", "features": "features", "cam": "cam"}
        | ({"gate_features": "gate_features"} if gate_features else {}),
        "labels": ["finding"],
        "temperature": temperature,
        "threshold": threshold,
        **points,
        "extra": {"data_sources": DATA_SOURCES} | extra,
    }


def segmenter_manifest(version: str, size: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Segmenter manifest (sha256 filled in by :func:`training.export.write_manifest`)."""
    return {
        "schema_version": 1,
        "name": "cxr-segmenter",
        "kind": "segmenter",
        "version": version,
        "file": "segmenter.onnx",
        "sha256": "0" * 64,
        "input": _input(size),
        "outputs": {"logits": "logits"},
        "labels": list(SEG_LABELS),
        "threshold": 0.5,
        "extra": {
            "data_sources": DATA_SOURCES,
            "derived_structures": {
                "spine": "derived at serving time from predicted anatomy (no public masks)",
                "abdomen": "derived at serving time from predicted anatomy (no public masks)",
            },
        }
        | extra,
    }

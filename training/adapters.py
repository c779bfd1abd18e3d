"""Source adapters: native dataset layouts -> the unified :class:`ImageRecord` table.

Three readers, each taking the dataset's own folder as it is downloaded:

* :func:`read_shared` — the curated ``classification.csv`` in ``../shared/data/cxr``, including
  the adult supplement (``covidqu``, ``covid19rad``: view ``FRONTAL``, one patient id per image,
  squashed to a square upstream).
* :func:`read_nih` — NIH ChestX-ray14: ``Data_Entry_2017*.csv`` plus any ``images*/`` folders.
* :func:`read_chexpert` — CheXpert-v1.0-small: ``train.csv`` / ``valid.csv``.

Binary label policy (all sources): 0 = the source says "No Finding"; 1 = at least one
pathology is positive. CheXpert's uncertain (-1) labels follow :class:`UncertainPolicy`:
``ignore`` (default, the U-Ignore policy of Irvin et al. 2019: a study whose only evidence of
disease is uncertain is left out), ``ones`` (uncertain counts as positive, U-Ones) or ``zeros``
(uncertain counts as negative, U-Zeros). "Support Devices" is not a finding.
"""

from __future__ import annotations

import csv
import re
from enum import StrEnum
from pathlib import Path

from training.records import NO_FINDING, ImageRecord, is_frontal

CHEXPERT_PATHOLOGIES = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
)


# Sources in the order they joined the shared data. The split draws its shuffles source
# generation by generation, so adding a source never moves an earlier source's images
# between train/val/test (the internal test split stays comparable across releases).
SOURCE_GENERATION = {"covidqu": 1, "covid19rad": 1}
# Images for which no age survives are adults unless the source says otherwise (the service's
# documented default population).
PEDIATRIC = "pediatric"
ADULT = "adult"


def source_generation(source: str) -> int:
    """0 for the original sources, 1 for the adult supplement (see ``SOURCE_GENERATION``)."""
    return SOURCE_GENERATION.get(source, 0)


def population(age_group: str) -> str:
    """``pediatric`` when the source says so, else ``adult`` (unknown ages count as adult)."""
    return PEDIATRIC if age_group.strip().lower() == PEDIATRIC else ADULT


def finding_type(label: int, findings: str) -> str:
    """Coarse finding family of a record, used to keep one family from dominating positives.

    ``normal`` for label 0; ``covid`` (COVID-19, SARS), ``nodule``, ``pneumonia`` (bacterial,
    viral, non-COVID opacity and NIH pneumonia with co-findings) or ``other``.
    """
    if label != 1:
        return "normal"
    # "Non-COVID pneumonia" (covidqu) must not count as COVID: drop the negated mention first.
    text = re.sub(r"non[- ]covid", "", findings.lower())
    if "covid" in text or "sars" in text:
        return "covid"
    if "nodule" in text:
        return "nodule"
    if any(k in text for k in ("pneumon", "opacity", "consolidation", "infiltrat")):
        return "pneumonia"
    return "other"


class UncertainPolicy(StrEnum):
    """How CheXpert's uncertain (-1) mentions enter the binary label."""

    IGNORE = "ignore"
    ONES = "ones"
    ZEROS = "zeros"


def read_shared(root: Path) -> list[ImageRecord]:
    """Read ``root/classification.csv`` (the shared curated table); paths become absolute."""
    records = []
    with (root / "classification.csv").open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            records.append(ImageRecord.from_row(row, str((root / row["image"]).resolve())))
    return records


def _index_images(root: Path, suffix: str) -> dict[str, Path]:
    """Map file name -> path for every image below ``root`` (NIH splits them over 12 folders)."""
    return {p.name: p for p in sorted(root.rglob(f"*{suffix}"))}


def read_nih(root: Path, positives: frozenset[str] | None = None) -> list[ImageRecord]:
    """Read NIH ChestX-ray14 in its native layout.

    ``root`` holds ``Data_Entry_2017*.csv`` and the ``images*/`` folders. With ``positives``
    (e.g. ``{"Pneumonia"}``) only those findings count as label 1 and rows with other findings
    but none of them are dropped; by default any finding is label 1. Rows whose image file is
    missing are skipped (partial downloads are common).
    """
    entries = sorted(root.glob("Data_Entry_2017*.csv"))
    if not entries:
        raise FileNotFoundError(f"no Data_Entry_2017*.csv in {root}")
    images = _index_images(root, ".png")
    records = []
    with entries[-1].open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            path = images.get(row["Image Index"])
            findings = row["Finding Labels"].split("|")
            if path is None:
                continue
            if findings == [NO_FINDING]:
                label = 0
            elif positives is None or positives & set(findings):
                label = 1
            else:
                continue
            age = row.get("Patient Age", "")
            records.append(
                ImageRecord(
                    image=str(path.resolve()),
                    label=label,
                    findings="; ".join(findings),
                    source="nih",
                    patient_id=f"nih:{int(row['Patient ID'])}",
                    view=row["View Position"],
                    age_group=_age_group(age),
                )
            )
    return records


def _age_group(age: str) -> str:
    digits = "".join(c for c in age if c.isdigit())
    if not digits:
        return ""
    return "pediatric" if int(digits) < 18 else "adult"


def _chexpert_label(row: dict[str, str], policy: UncertainPolicy) -> tuple[int, list[str]] | None:
    """Binary label and positive findings of one CheXpert row, or None when excluded."""

    def value(name: str) -> float | None:
        raw = row.get(name, "").strip()
        return float(raw) if raw else None

    positive = [p for p in CHEXPERT_PATHOLOGIES if value(p) == 1.0]
    uncertain = [p for p in CHEXPERT_PATHOLOGIES if value(p) == -1.0]
    if policy is UncertainPolicy.ONES:
        positive += uncertain
        uncertain = []
    elif policy is UncertainPolicy.ZEROS:
        uncertain = []
    if positive:
        return 1, positive
    if uncertain:
        return None
    if value(NO_FINDING) == 1.0 or policy is UncertainPolicy.ZEROS:
        return 0, [NO_FINDING]
    return None


def read_chexpert(
    root: Path,
    policy: UncertainPolicy = UncertainPolicy.IGNORE,
    splits: tuple[str, ...] = ("train", "valid"),
) -> list[ImageRecord]:
    """Read CheXpert-v1.0-small (``root`` holds ``train.csv``/``valid.csv`` and the images).

    The CSV ``Path`` column starts with the dataset folder name (``CheXpert-v1.0-small/...``),
    so paths resolve against ``root.parent``. Lateral views are kept here (view ``LATERAL``)
    and dropped later by :func:`training.records.frontal_only`. Rows without an image file
    on disk are skipped.
    """
    records = []
    for split in splits:
        table = root / f"{split}.csv"
        if not table.exists():
            continue
        with table.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                path = root.parent / row["Path"]
                labelled = _chexpert_label(row, policy)
                if labelled is None or not path.exists():
                    continue
                parts = Path(row["Path"]).parts
                patient = next((p for p in parts if p.startswith("patient")), row["Path"])
                frontal = row.get("Frontal/Lateral", "") == "Frontal"
                view = (row.get("AP/PA", "") or "AP") if frontal else "LATERAL"
                records.append(
                    ImageRecord(
                        image=str(path.resolve()),
                        label=labelled[0],
                        findings="; ".join(labelled[1]),
                        source="chexpert",
                        patient_id=f"chexpert:{patient}",
                        view=view if is_frontal(view) or not frontal else "AP",
                        age_group=_age_group(row.get("Age", "")),
                    )
                )
    return records

"""The unified image table every adapter produces.

One :class:`ImageRecord` per radiograph, whatever its source: NIH ChestX-ray14, CheXpert-small,
the curated CSVs in ``../shared/data/cxr``. Labels are binary ``finding`` (1) vs ``no finding``
(0); the source's own findings travel along for reporting and the label-distribution figure.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

FRONTAL_VIEWS = frozenset({"PA", "AP", "AP SUPINE", "AP ERECT", "FRONTAL"})
NO_FINDING = "No Finding"


@dataclass(frozen=True)
class ImageRecord:
    """One radiograph in the unified table.

    ``image`` is an absolute path (str); ``label`` is 1 for "a finding is present", 0 for
    "no finding", -1 for "unlabelled" (segmentation-only images); ``findings`` is the source's
    own ``; ``-separated finding text; ``patient_id`` is prefixed by its source.
    """

    image: str
    label: int
    findings: str
    source: str
    patient_id: str
    view: str
    age_group: str = ""

    @classmethod
    def from_row(cls, row: dict[str, str], image: str | None = None) -> ImageRecord:
        """A record from a CSV row with the table's columns (``image`` overrides the path)."""
        return cls(
            image=row["image"] if image is None else image,
            label=int(row["label"]),
            findings=row["findings"],
            source=row["source"],
            patient_id=row["patient_id"],
            view=row["view"],
            age_group=row.get("age_group", ""),
        )


def is_frontal(view: str) -> bool:
    """True for PA/AP views (any spelling); lateral and unknown views are False."""
    return view.strip().upper() in FRONTAL_VIEWS


def frontal_only(records: Iterable[ImageRecord]) -> list[ImageRecord]:
    """Keep PA/AP radiographs only: the models are trained and served on frontal views."""
    return [r for r in records if is_frontal(r.view)]


def write_table(
    records: Sequence[ImageRecord], path: Path, extra: dict[str, list[str]] | None = None
) -> None:
    """Write records (plus optional extra columns, one value per record) as CSV."""
    names = [f.name for f in fields(ImageRecord)]
    extra = extra or {}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(names + list(extra))
        for i, rec in enumerate(records):
            row = asdict(rec)
            writer.writerow([row[n] for n in names] + [extra[k][i] for k in extra])


def read_table(path: Path) -> tuple[list[ImageRecord], dict[str, list[str]]]:
    """Inverse of :func:`write_table`: records and the extra columns."""
    names = {f.name for f in fields(ImageRecord)}
    records: list[ImageRecord] = []
    extra: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            records.append(ImageRecord.from_row(row))
            for key, value in row.items():
                if key not in names:
                    extra.setdefault(key, []).append(value)
    return records, extra

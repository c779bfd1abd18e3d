"""Optional extra sources given on the command line (NIH / CheXpert in their native layouts)."""

from __future__ import annotations

from pathlib import Path

from training.adapters import UncertainPolicy, read_chexpert, read_nih
from training.records import ImageRecord


def extra_records(nih: Path | None, chexpert: Path | None, uncertain: str) -> list[ImageRecord]:
    """Records of the optional full-scale datasets (empty when none is given)."""
    records: list[ImageRecord] = []
    if nih is not None:
        records += read_nih(nih)
    if chexpert is not None:
        records += read_chexpert(chexpert, UncertainPolicy(uncertain))
    return records

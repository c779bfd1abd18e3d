"""``python -m training label-audit``: what the labels of the NIH and JSRT sources let any model
reach (issue 9's goals "NIH test AUROC >= 0.93" and "leave-one-source-out AUROC >= 0.85 on every
adult source").

A model is scored against a source's labels, so a goal above what a perfect reader of the
pictures would score against those labels cannot be met by training. Three measurements, all
recomputable from files on this machine:

* **NIH's text-mined labels against radiologists.** The ``nih`` source's classes are ChestX-ray14's
  labels mined from report text: "Pneumonia" (with any co-findings) vs "No Finding". Google's
  2019 relabelling of 4,376 ChestX-ray14 films (Majkowski et al., Radiology 2019; three
  radiologists per film, adjudicated) ships in the ``torchxrayvision`` wheel with both the
  original text-mined labels and the adjudicated "Airspace opacity" call per film. On the films
  whose text-mined label is one of the ``nih`` source's two classes: how often each class
  carries an opacity by the radiologists' read (Wilson intervals), and the AUROC against the
  text-mined labels of a reader whose score *is* the radiologists' opacity call (a model that
  sees exactly what the radiologists see and answers yes / no; ties count one half, as in
  :func:`training.metrics.auroc`), with a 95 % bootstrap interval resampling patients; and the
  bound of a graded score that also broke every tie the right way (it would have to separate,
  among films the radiologists called alike, those the report mining labelled differently).
* **The shipped classifier on the same hospital with radiologists' labels.** ``covidqu``'s
  "Non-COVID pneumonia / lung opacity" and "No Finding" films are RSNA Pneumonia Challenge films,
  i.e. NIH Clinical Center radiographs labelled by radiologists: the shipped model's internal-test
  AUROC there, next to its AUROC on ``nih`` (text-mined labels, same hospital).
* **Where nodules are labelled.** JSRT's positive class is a lung nodule; the count of labelled
  images per source whose findings name a nodule or mass shows what a model trained without JSRT
  could have learnt the class from.

The ``nih`` subset's own films that the 2019 relabelling also covers are cross-tabulated too
(few: the relabelling is a sample of ChestX-ray14's official test set).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

from training.metrics import auroc, bootstrap_auroc_ci
from training.operating_points import wilson

LOG = logging.getLogger(__name__)

GOOGLE_2019 = "google2019_nih-chest-xray-labels.csv.gz"
# covidqu findings whose films are RSNA Pneumonia Challenge (NIH Clinical Center) radiographs
# with radiologists' labels (the data README); its COVID-19 films come from other hospitals
RSNA_FINDINGS = {"Non-COVID pneumonia / lung opacity": 1, "No Finding": 0}
NODULE_WORDS = ("nodule", "mass")


@dataclass(frozen=True)
class Adjudicated:
    """One film of the 2019 relabelling: the text-mined class (1 "Pneumonia", 0 "No Finding",
    None for any other label set) and the radiologists' adjudicated airspace-opacity call."""

    image: str
    patient: str
    text_mined: int | None
    opacity: bool
    set_id: str


def text_mined_class(finding_labels: str) -> int | None:
    """The ``nih`` source's label rule: 1 when "Pneumonia" is among the labels, 0 for exactly
    "No Finding", None otherwise (films the source does not hold)."""
    labels = [s.strip() for s in finding_labels.split("|")]
    if "Pneumonia" in labels:
        return 1
    return 0 if labels == ["No Finding"] else None


def google_2019_path() -> Path:
    """The relabelling file inside the installed ``torchxrayvision`` wheel, located without
    importing the package (its import pulls in torch and more)."""
    spec = importlib.util.find_spec("torchxrayvision")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "label-audit needs the torchxrayvision wheel's label files: install the 'train' "
            "extra (scripts/setup.sh train) or pass --labels PATH"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / GOOGLE_2019
    if not path.is_file():
        raise SystemExit(f"label-audit: {path} is missing from the torchxrayvision wheel")
    return path


def read_adjudicated(path: Path) -> list[Adjudicated]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return [
            Adjudicated(
                image=r["Image Index"],
                patient=r["Patient ID"],
                text_mined=text_mined_class(r["Finding Labels"]),
                opacity=r["Airspace opacity"].strip().upper() == "YES",
                set_id=r["Set Id"],
            )
            for r in csv.DictReader(fh)
        ]


def cluster_bootstrap_auroc(
    labels: npt.NDArray[np.int_],
    scores: npt.NDArray[np.float64],
    groups: Sequence[str],
    resamples: int,
    seed: int,
) -> list[float]:
    """95 % percentile interval of the AUROC resampling ``groups`` (patients) with replacement."""
    names, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if not len(names):
        return [float("nan"), float("nan")]
    members = [np.flatnonzero(inverse == g) for g in range(len(names))]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(names), len(names))])
        value = auroc(labels[idx], scores[idx])
        if value == value:
            values.append(value)
    if not values:
        return [float("nan"), float("nan")]
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def reader_ceiling(rows: Sequence[Adjudicated], resamples: int, seed: int) -> dict[str, Any]:
    """Agreement of the text-mined classes with the radiologists' opacity call, and the AUROC
    of that call as a score against the text-mined classes."""
    kept = [r for r in rows if r.text_mined is not None]
    pos = [r for r in kept if r.text_mined == 1]
    neg = [r for r in kept if r.text_mined == 0]
    pos_op = sum(r.opacity for r in pos)
    neg_op = sum(r.opacity for r in neg)
    labels = np.array([r.text_mined for r in kept], dtype=np.int64)
    scores = np.array([float(r.opacity) for r in kept], dtype=np.float64)
    return {
        "n_positive": len(pos),
        "n_negative": len(neg),
        "positive_with_opacity": pos_op,
        "negative_with_opacity": neg_op,
        "positive_opacity_rate": _rate(pos_op, len(pos)),
        "negative_opacity_rate": _rate(neg_op, len(neg)),
        "reader_auroc": auroc(labels, scores),
        # a graded score that, within each of the radiologists' two calls, ranked every
        # text-mined positive above every text-mined negative: only the pairs whose calls
        # contradict the text mining (positive read clear, negative read opaque) stay wrong
        "tie_break_bound": 1.0 - _frac(len(pos) - pos_op, len(pos)) * _frac(neg_op, len(neg)),
        "reader_auroc_ci95": cluster_bootstrap_auroc(
            labels, scores, [r.patient for r in kept], resamples, seed
        ),
    }


def _frac(k: int, n: int) -> float:
    return k / n if n else float("nan")


def _rate(k: int, n: int) -> dict[str, Any]:
    return {"value": _frac(k, n), "ci95": wilson(k, n)}


def subset_overlap(
    subset: Iterable[tuple[str, int]], adjudicated: Sequence[Adjudicated]
) -> dict[str, int]:
    """Cross-table of the source's own films (image stem, label) that the relabelling covers:
    ``"<label>/<opacity yes|no>"`` -> count."""
    by_stem = {PurePosixPath(a.image).stem: a for a in adjudicated}
    table: Counter[str] = Counter()
    for image, label in subset:
        hit = by_stem.get(PurePosixPath(image).stem)
        if hit is not None:
            table[f"{label}/{'yes' if hit.opacity else 'no'}"] += 1
    return dict(sorted(table.items()))


def nodule_counts(rows: Iterable[dict[str, str]]) -> dict[str, dict[str, int]]:
    """Per source: labelled images whose findings name a nodule or mass, and how many of those
    carry another finding as well (the class could not be learnt from them alone)."""
    out: dict[str, Counter[str]] = {}
    for r in rows:
        words = [w.strip() for w in r["findings"].replace(",", ";").split(";") if w.strip()]
        nodular = [w for w in words if any(n in w.lower() for n in NODULE_WORDS)]
        if not nodular:
            continue
        c = out.setdefault(r["source"], Counter())
        c["images"] += 1
        c["with_other_findings"] += len(words) > len(nodular)
    return {s: dict(c) for s, c in sorted(out.items())}


def negatives(
    table: Iterable[dict[str, str]],
    test_sources: npt.NDArray[np.str_],
    test_labels: npt.NDArray[np.int_],
) -> dict[str, dict[str, int]]:
    """Labelled negatives per source: in the shared data and in the internal test split (a
    specificity on a handful of films says little)."""
    everywhere = Counter(r["source"] for r in table if r["label"] == "0")
    test = Counter(str(s) for s, y in zip(test_sources, test_labels, strict=True) if y == 0)
    return {s: {"all": n, "test": test.get(s, 0)} for s, n in sorted(everywhere.items())}


def _auroc_row(labels: npt.NDArray[np.int_], logits: npt.NDArray[np.float64], seed: int) -> dict:
    return {
        "n": len(labels),
        "n_positive": int(labels.sum()),
        "auroc": auroc(labels, logits),
        "auroc_ci95": list(bootstrap_auroc_ci(labels, logits, seed=seed, n_boot=2000)),
    }


def same_hospital(
    findings: Sequence[str],
    sources: npt.NDArray[np.str_],
    labels: npt.NDArray[np.int_],
    logits: npt.NDArray[np.float64],
    seed: int,
) -> dict[str, Any]:
    """The classifier's AUROC on NIH Clinical Center films: text-mined labels (``nih``) and
    radiologists' labels (``covidqu``'s RSNA films)."""
    nih = sources == "nih"
    rsna = np.array(
        [s == "covidqu" and f in RSNA_FINDINGS for s, f in zip(sources, findings, strict=True)]
    )
    rsna_labels = np.array([RSNA_FINDINGS.get(f, -1) for f in findings])[rsna]
    if not np.array_equal(rsna_labels, labels[rsna]):
        raise ValueError("label-audit: covidqu's RSNA findings and labels disagree")
    return {
        "nih_text_mined": _auroc_row(labels[nih], logits[nih], seed),
        "covidqu_rsna_radiologists": _auroc_row(labels[rsna], logits[rsna], seed),
    }


def run_label_audit(
    data: Path,
    cache: Path,
    weights: Path,
    work: Path,
    labels_file: Path | None,
    resamples: int,
    seed: int,
    command: str,
) -> Path:
    """Write ``weights/label_audit.json`` (rendered by the model card)."""
    from training.calibration_study import load_scored
    from training.dataset import cls_split

    path = labels_file or google_2019_path()
    adjudicated = read_adjudicated(path)
    ceilings = {
        name: reader_ceiling([r for r in adjudicated if name in ("all", r.set_id)], resamples, seed)
        for name in ("all", *sorted({r.set_id for r in adjudicated}))
    }
    with (data / "classification.csv").open(newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    subset = [(r["image"], int(r["label"])) for r in table if r["source"] == "nih"]
    manifest = json.loads((weights / "classifier.manifest.json").read_text(encoding="utf-8"))
    test = load_scored(cache, weights, work)["test"]
    split = cls_split(cache / "images.csv", "test")
    result = {
        "labels_file": f"torchxrayvision/data/{GOOGLE_2019}",
        "reader_ceiling": ceilings,
        "nih_subset_overlap": subset_overlap(subset, adjudicated),
        "same_hospital_test": same_hospital(
            split.findings, test.sources, test.labels, test.logits, seed
        ),
        "nodule_images": nodule_counts(r for r in table if int(r["label"]) >= 0),
        "negatives": negatives(table, test.sources, test.labels),
        "config": {"bootstrap": resamples, "seed": seed},
        "classifier": f"{manifest['name']} {manifest['version']}",
        "classifier_sha256": manifest["sha256"],
        "command": command,
    }
    out = weights / "label_audit.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    LOG.info("label audit: wrote %s", out)
    return out

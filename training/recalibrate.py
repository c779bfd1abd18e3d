"""``python -m training recalibrate``: a site's own temperature and operating points.

Input: a CSV with ``image`` (path under ``--images``), ``label`` (1 finding, 0 no finding) and
optionally ``patient_id`` and ``population`` (adult / pediatric) or ``age`` (years). Every image
goes through the serving path (intake, input gate, classifier), so DICOM works and images the
service would refuse are left out (counted in the file). Then:

* temperature: maximum likelihood of the labels under ``sigmoid(logit / T)`` (scipy, bounded);
* per population with labelled cases: threshold and borderline band
  (:mod:`training.operating_points`), refused (exit with a message) below ``min_per_class``
  positives or negatives; a population without any case keeps the shipped model's point;
* 95 % intervals: Wilson for sensitivity / specificity at the threshold; a bootstrap of the
  threshold itself, resampling patients when a ``patient_id`` column exists (images of one
  patient stay together), images otherwise.

Output: a versioned JSON file (:mod:`inference.site_calibration`) bound to the classifier's
sha256; serve it with ``CXR_CALIBRATION_FILE=<file>``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy.optimize import minimize, minimize_scalar

from inference.classify import calibrated_probability, gate_role, run_classifier
from inference.errors import IntakeError
from inference.input_gate import InputGate
from inference.intake import decode_upload
from inference.manifest import load_manifest
from inference.ood import load_ood_model
from inference.operating import OperatingPoints, population_for_age
from inference.sessions import RuntimeOptions, VerifiedModel, load_verified_model
from inference.site_calibration import calibration_document, parse_site_calibration
from training.operating_points import PointRule, TooFewCases, fit_points, threshold_at_sensitivity

LOG = logging.getLogger(__name__)
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RecalibrationConfig:
    """method: "temperature" fits sigmoid(logit / T); "platt" also an offset,
    sigmoid(logit / T + b), for a site whose prevalence or case mix shifts every score (the
    calibration study found a temperature alone does not help covidqu, an offset would)."""

    sensitivity: float = 0.90
    min_per_class: int = 30
    bootstrap: int = 1000
    seed: int = 0
    method: Literal["temperature", "platt"] = "temperature"


@dataclass(frozen=True)
class LabelledScores:
    logits: F64
    labels: npt.NDArray[np.int_]
    populations: npt.NDArray[np.str_]
    patients: npt.NDArray[np.str_]
    refused: int


def _population(row: dict[str, str], default: str) -> str:
    pop = (row.get("population") or "").strip().lower()
    if pop in ("adult", "pediatric"):
        return pop
    age = (row.get("age") or "").strip()
    if age:
        return population_for_age(float(age)) or default
    return default


def _gate(weights: Path, model: VerifiedModel) -> InputGate:
    path = weights / "input_gate.manifest.json"
    if not path.is_file():
        return InputGate()
    role = gate_role(model)
    name = model.manifest.outputs[role]
    dim = int(next(o.shape[1] for o in model.session.get_outputs() if o.name == name))
    return InputGate(ood=load_ood_model(path, model.manifest.sha256, dim, role))


def score_images(
    rows: list[dict[str, str]], images: Path, model: VerifiedModel, gate: InputGate
) -> LabelledScores:
    default = model.manifest.operating.default_population
    logits, labels, pops, patients, refused = [], [], [], [], 0
    for i, row in enumerate(rows):
        try:
            radiograph = decode_upload((images / row["image"]).read_bytes())
            pre = gate.precheck(radiograph)
            out = run_classifier(model, [radiograph.pixels])[0]
            gate.finish(pre, out.pooled)
        except IntakeError:  # unreadable or refused by the input gate, as the service would
            refused += 1
            continue
        logits.append(out.logit)
        labels.append(int(row["label"]))
        pops.append(_population(row, default))
        patients.append(row.get("patient_id") or f"image-{i}")
    return LabelledScores(
        np.asarray(logits, dtype=np.float64),
        np.asarray(labels, dtype=np.int_),
        np.asarray(pops),
        np.asarray(patients),
        refused,
    )


def fit_temperature(logits: F64, labels: npt.NDArray[np.int_]) -> float:
    """Maximum-likelihood temperature of sigmoid(logit / T), T in [0.05, 20]."""

    def nll(t: float) -> float:
        z = logits / t
        return float(np.mean(np.logaddexp(0.0, z) - labels * z))

    res = minimize_scalar(nll, bounds=(0.05, 20.0), method="bounded", options={"xatol": 1e-4})
    return round(float(res.x), 4)


def fit_platt(logits: F64, labels: npt.NDArray[np.int_]) -> tuple[float, float]:
    """Maximum-likelihood ``(a, b)`` of ``sigmoid(a * logit + b)`` (Platt scaling)."""

    def nll_ab(ab: F64) -> float:
        z = ab[0] * logits + ab[1]
        return float(np.mean(np.logaddexp(0.0, z) - labels * z))

    res = minimize(nll_ab, np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-5})
    return float(res.x[0]), float(res.x[1])


def fit_scale(
    logits: F64, labels: npt.NDArray[np.int_], method: Literal["temperature", "platt"]
) -> tuple[float, float, str]:
    """(temperature, offset, how) for ``sigmoid(logit / T + offset)``; raises TooFewCases
    when Platt scaling finds no usable slope (the scores do not rank the site's cases)."""
    if method != "platt":
        return fit_temperature(logits, labels), 0.0, "maximum likelihood, bounded [0.05, 20]"
    a, b = fit_platt(logits, labels)
    if not 1 / 20 <= a <= 1 / 0.05:
        raise TooFewCases(
            f"Platt scaling gave the slope {a:.3f} (temperature outside [0.05, 20]): the "
            "model's scores do not separate this site's classes"
        )
    return round(1.0 / a, 4), round(b, 4), "Platt scaling: maximum likelihood (slope, offset)"


def bootstrap_threshold(
    probs: F64,
    labels: npt.NDArray[np.int_],
    patients: npt.NDArray[np.str_],
    cfg: RecalibrationConfig,
) -> list[float]:
    """95 % percentile interval of the threshold, resampling patients (clusters)."""
    rng = np.random.default_rng(cfg.seed)
    ids, inverse = np.unique(patients, return_inverse=True)
    members = [np.flatnonzero(inverse == k) for k in range(len(ids))]
    values = []
    for _ in range(cfg.bootstrap):
        idx = np.concatenate([members[k] for k in rng.integers(0, len(ids), len(ids))])
        pos = probs[idx][labels[idx] == 1]
        if len(pos):
            values.append(threshold_at_sensitivity(pos, cfg.sensitivity))
    if not values:
        return [0.0, 1.0]
    return [
        round(float(np.percentile(values, 2.5)), 4),
        round(float(np.percentile(values, 97.5)), 4),
    ]


@dataclass(frozen=True)
class SiteFit:
    """A site's temperature and operating points fitted on its labelled scores."""

    temperature: float
    points: OperatingPoints
    report: dict[str, Any]
    """Per population: fitted or not, sensitivity / specificity with Wilson intervals and the
    bootstrap interval of the threshold (``threshold_ci95``)."""
    offset: float = 0.0
    method: str = "maximum likelihood, bounded [0.05, 20]"


def fit_site(
    scores: LabelledScores, fallback: OperatingPoints, cfg: RecalibrationConfig
) -> SiteFit:
    """Temperature (maximum likelihood) then the operating points on ``sigmoid(logit / T)``,
    per population with labelled cases (``fallback``'s point otherwise). Raises
    :class:`TooFewCases` when a population has cases but fewer than ``cfg.min_per_class`` of a
    class. The fitting core of ``python -m training recalibrate`` (also used by
    :mod:`training.calibration_study` to show what a site recalibration buys)."""
    temperature, offset, method = fit_scale(scores.logits, scores.labels, cfg.method)
    probs = np.asarray([calibrated_probability(x, temperature, offset) for x in scores.logits])
    rule = PointRule(sensitivity=cfg.sensitivity, min_per_class=cfg.min_per_class)
    points, report = fit_points(
        probs, scores.labels, scores.populations, rule, fallback, "site labelled set"
    )
    for pop, entry in report.items():
        if entry.get("fitted"):
            mask = scores.populations == pop
            entry["threshold_ci95"] = bootstrap_threshold(
                probs[mask], scores.labels[mask], scores.patients[mask], cfg
            )
    return SiteFit(temperature, points, report, offset, method)


def recalibrate(
    labels_csv: Path,
    images: Path,
    weights: Path,
    out: Path,
    calibration_id: str | None,
    cfg: RecalibrationConfig,
    command: str,
) -> Path:
    """Fit and write the site calibration file; raise SystemExit with a reason when refused."""
    manifest_path = weights / "classifier.manifest.json"
    model = load_verified_model(manifest_path, RuntimeOptions(intra_op_threads=2, prefer_gpu=False))
    with labels_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"image", "label"} <= set(rows[0]):
        raise SystemExit("the labels CSV needs the columns image and label")
    scores = score_images(rows, images, model, _gate(weights, model))
    fallback = load_manifest(manifest_path).operating
    try:
        site = fit_site(scores, fallback, cfg)
    except TooFewCases as exc:
        raise SystemExit(f"recalibration refused: {exc}") from exc
    temperature, points, report = site.temperature, site.points, site.report
    digest = hashlib.sha256(labels_csv.read_bytes()).hexdigest()[:12]
    fit: dict[str, Any] = {
        "n_images": len(rows),
        "n_used": int(len(scores.labels)),
        "n_refused_by_intake_or_gate": scores.refused,
        "patients": int(len(np.unique(scores.patients))),
        "bootstrap": {
            "resamples": cfg.bootstrap,
            "unit": "patient" if "patient_id" in rows[0] else "image",
            "seed": cfg.seed,
        },
        "temperature_method": site.method,
        "populations": report,
        "labels_sha256_prefix": digest,
        "command": command,
    }
    doc = calibration_document(
        calibration_id=calibration_id or f"site-{digest}",
        version=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        model_sha256=model.manifest.sha256,
        temperature=temperature,
        points=points.as_dict(),
        fit=fit,
        offset=site.offset,
    )
    parse_site_calibration(doc, model.manifest.sha256)  # never write a file the service refuses
    out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    LOG.info("recalibrate: wrote %s (T=%.3f, offset %.3f)", out, temperature, site.offset)
    return out

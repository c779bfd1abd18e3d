"""``python -m service.batch IN_DIR --out results.csv``: analyse a folder in process (no HTTP).

The same use cases as the API (classification, or the grounded report with ``--report``, and
the DICOM builders with ``--format dicom``), so a file gives the same numbers here as from the
API. One file at a time (memory stays bounded by one image), results appended and flushed row
by row, so an interrupted run resumes where it stopped: files whose path and sha256 already
have a row are skipped. A progress bar goes to stderr when it is a terminal.

Outputs: ``csv`` (one row per file), ``json`` (JSON Lines, one object per file) or ``dicom``
(``--out`` is a folder: SR, SEG and SC per file in ``<sha256[:16]>/``, rows in ``index.csv``).
Exit codes: 0 all files analysed; 1 some failed (listed on stderr, and ``status=error`` rows);
2 usage error (bad arguments, missing folder, models that do not load); 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO, cast

from tqdm import tqdm

from inference.errors import IntakeError
from inference.intake import Limits
from reporting.evidence import Language
from service.errors import ServiceError
from service.explain_usecase import ExplainService
from service.gate import WorkGate
from service.interop_usecase import (
    DicomObject,
    InteropService,
    findings_of,
    report_text_of,
    stand_in_objects,
)
from service.registry import ModelRegistry, load_registry
from service.report_usecase import (
    ReportOutcome,
    ReportService,
    build_report_service,
    load_backend,
)
from service.settings import Settings
from service.usecases import AnalysisService

log = logging.getLogger("cxr.batch")
FIELDS = [
    "path",
    "sha256",
    "status",
    "error",
    "decision",
    "probability_finding",
    "threshold",
    "classifier",
    "language",
    "findings",
    "interpretation",
    "recommendations",
    "dicom_dir",
]
Row = dict[str, str]


@dataclass(frozen=True)
class Options:
    in_dir: Path
    out: Path
    format: str
    report: bool
    lang: str
    lime: bool


def parse_args(argv: list[str]) -> Options:
    p = argparse.ArgumentParser(prog="python -m service.batch", description=__doc__.split("\n")[0])
    p.add_argument("in_dir", type=Path, help="folder of radiographs (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="results file (folder for dicom)")
    p.add_argument("--format", choices=["csv", "json", "dicom"], default="csv")
    p.add_argument("--report", action="store_true", help="write the grounded report too")
    p.add_argument("--lang", choices=["en", "ru"], default="en", help="report language")
    p.add_argument("--no-lime", dest="lime", action="store_false", help="reports without LIME")
    a = p.parse_args(argv)
    if not a.in_dir.is_dir():
        p.error("IN_DIR is not a folder")
    return Options(a.in_dir, a.out, a.format, a.report, a.lang, a.lime)


def list_files(root: Path) -> list[Path]:
    """Regular, non-hidden files under ``root``, in a stable order (the format is sniffed)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


NUMERIC = ("probability_finding", "threshold")


def _typed(row: Row) -> dict[str, object]:
    """JSON Lines carry numbers as numbers (the CSV's text is the same repr)."""
    return {k: float(v) if k in NUMERIC and v else v for k, v in row.items()}


class Results:
    """Append-only results with resume: rows already written are read back first."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.json = fmt == "json"
        self.done: dict[tuple[str, str], Row] = {}
        if path.exists():
            self._load()
        self.fh: TextIO = path.open("a", encoding="utf-8", newline="")
        self.writer = csv.DictWriter(self.fh, FIELDS)
        if not self.json and self.fh.tell() == 0:
            self.writer.writeheader()

    def _rows(self) -> Iterator[Row]:
        with self.path.open(encoding="utf-8", newline="") as fh:
            if self.json:
                for line in fh:
                    if line.endswith("\n"):  # a line cut by a kill is not a result
                        yield json.loads(line)
            else:
                for row in csv.DictReader(fh):
                    if None not in row and row.get("status") in ("ok", "error"):
                        yield row

    def _load(self) -> None:
        rows = list(self._rows())
        self.done = {(r["path"], r["sha256"]): r for r in rows}
        # Rewrite without a partial last record, so appending continues a valid file.
        with self.path.open("w", encoding="utf-8", newline="") as fh:
            if self.json:
                fh.writelines(json.dumps(_typed(r), ensure_ascii=False) + "\n" for r in rows)
            else:
                w = csv.DictWriter(fh, FIELDS)
                w.writeheader()
                w.writerows(rows)

    def add(self, row: Row) -> None:
        self.done[(row["path"], row["sha256"])] = row
        if self.json:
            self.fh.write(json.dumps(_typed(row), ensure_ascii=False) + "\n")
        else:
            self.writer.writerow(row)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


@dataclass
class Services:
    registry: ModelRegistry
    analysis: AnalysisService
    explain: ExplainService
    report: ReportService
    interop: InteropService


def build_services(settings: Settings, with_llm: bool) -> Services:
    registry = load_registry(settings)
    limits = Limits(max_pixels=settings.limits.max_pixels, max_side=settings.limits.max_side)
    gate = WorkGate("inference", 1, 1, 1)
    explain = ExplainService(
        registry, gate, WorkGate("lime", 1, 1, 1), limits, settings.explain.lime_batch_size
    )
    llm = load_backend(settings.report) if with_llm else (None, "not needed")
    report = build_report_service(registry, explain, settings.report, *llm)
    analysis = AnalysisService(registry, gate, limits)
    return Services(
        registry, analysis, explain, report, InteropService(analysis, explain, report, None)
    )


def _p(value: float) -> str:
    return repr(round(float(value), 6))  # the API's rounding


async def analyse(s: Services, data: bytes, sha256: str, o: Options) -> Row:
    row: Row = {"classifier": s.registry.classifier.manifest.version}
    objects: list[DicomObject] = []
    if o.report:
        outcome, objects = await _reported(s, data, sha256, o)
        f, text = findings_of(outcome), report_text_of(outcome)
        row |= {
            "language": text.language,
            "findings": text.findings,
            "interpretation": text.interpretation,
            "recommendations": text.recommendations,
            "decision": f.decision,
            "probability_finding": _p(f.probability_finding),
            "threshold": repr(f.threshold),
        }
    else:
        if o.format == "dicom":  # the Grad-CAM's vision classifies and draws the objects
            gc = await s.explain.gradcam(data, None)
            c = gc.classification
            source, objects = await s.interop.gradcam_files(data, sha256, gc)
            objects += stand_in_objects(source)
        else:
            c = (await s.analysis.classify(data)).classification
        row |= {
            "decision": c.decision,
            "probability_finding": _p(c.probability_finding),
            "threshold": repr(c.threshold),
        }
    if o.format == "dicom":
        row["dicom_dir"] = write_dicom(o.out, sha256, objects)
    return row


async def _reported(
    s: Services, data: bytes, sha256: str, o: Options
) -> tuple[ReportOutcome, list[DicomObject]]:
    """The report, and for DICOM output its SEG, SC and SR (+ stand-in) from the same vision."""
    language = cast(Language, o.lang)
    if o.format != "dicom":
        return await s.report.report(data, language, o.lime, False), []
    w = await s.interop.pictured(data, sha256, language, o.lime)
    sr = s.interop.sr_from(w.source, w.outcome, o.lime)
    return w.outcome, [w.drawn.seg, w.drawn.sc, sr, *stand_in_objects(w.source)]


def write_dicom(out: Path, sha256: str, objects: list[DicomObject]) -> str:
    """SR, SEG and SC (plus the stand-in for non-DICOM files) into ``<out>/<sha256[:16]>/``."""
    folder = out / sha256[:16]
    folder.mkdir(parents=True, exist_ok=True)
    for obj in objects:
        (folder / f"{obj.role}.dcm").write_bytes(obj.encode())
    return folder.name


def error_code(exc: Exception) -> str:
    if isinstance(exc, IntakeError | ServiceError):
        return str(exc.code)
    log.error("batch item failed with %s", type(exc).__name__)  # the type only
    return "internal_error"


async def run(o: Options, s: Services, max_bytes: int) -> tuple[int, list[Row]]:
    files = list_files(o.in_dir)
    results = Results(o.out / "index.csv" if o.format == "dicom" else o.out, o.format)
    processed = 0
    try:
        with tqdm(
            total=len(files), file=sys.stderr, unit="img", disable=not sys.stderr.isatty()
        ) as bar:
            for path in files:
                rel = path.relative_to(o.in_dir).as_posix()
                data = path.read_bytes() if path.stat().st_size <= max_bytes else b""
                sha = hashlib.sha256(data).hexdigest()
                if (rel, sha) not in results.done:
                    row: Row = {"path": rel, "sha256": sha}
                    try:
                        if not data:
                            raise ValueError("empty or over the upload limit")
                        row |= {"status": "ok", **await analyse(s, data, sha, o)}
                    except Exception as exc:  # one bad file must not stop the batch
                        code = "empty_or_too_large" if not data else error_code(exc)
                        row |= {"status": "error", "error": code}
                    results.add(row)
                    processed += 1
                bar.update(1)
    finally:
        results.close()
    failed = [r for r in results.done.values() if r.get("status") == "error"]
    return processed, failed


def main(argv: list[str] | None = None) -> int:
    o = parse_args(sys.argv[1:] if argv is None else argv)
    if o.format == "dicom":
        o.out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    try:
        services = build_services(settings, o.report)
    except Exception as exc:  # models that do not verify: a setup problem, not a file problem
        print(f"cannot load the models: {type(exc).__name__}", file=sys.stderr)
        return 2
    if o.report and services.report.generator is None:
        print("--report needs the report LLM (CXR_REPORT__BACKEND)", file=sys.stderr)
        return 2
    try:
        processed, failed = asyncio.run(run(o, services, settings.limits.max_upload_bytes))
    except KeyboardInterrupt:
        print("interrupted; finished files are saved, run again to resume", file=sys.stderr)
        return 130
    finally:
        services.report.close()
    print(f"{processed} analysed, {len(failed)} failed", file=sys.stderr)
    for r in failed:
        print(f"failed: {r['path']} ({r.get('error')})", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

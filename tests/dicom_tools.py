"""Helpers for tests of the DICOM/FHIR outputs: dciodvfy, multipart parsing, FHIR checks."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tempfile
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset


def require_binary(name: str) -> str:
    """Path of a system tool; skip without it, but fail in CI (which installs it)."""
    # Daemons such as Orthanc live in /usr/sbin, which a non-root PATH may lack.
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI (scripts/system_deps.sh installs it)")
        pytest.skip(f"{name} is not installed (Debian: see scripts/system_deps.sh)")
    return path


def dciodvfy_errors(data: bytes) -> list[str]:
    """Lines dciodvfy reports as errors for one DICOM file (warnings are ignored)."""
    tool = require_binary("dciodvfy")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "object.dcm"
        path.write_bytes(data)
        out = subprocess.run(
            [tool, str(path)], capture_output=True, text=True, timeout=60, check=False
        )
    lines = (out.stdout + out.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def read_dicom(data: bytes) -> Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def parse_related(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """(content type, body) of each part of a multipart/related answer."""
    message = BytesParser(policy=HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert message.is_multipart()
    return [
        (part.get_content_type(), part.get_payload(decode=True)) for part in message.iter_parts()
    ]


def elements_containing(ds: Dataset, needle: str) -> list[str]:
    """Keywords of every element (recursively) whose value contains ``needle``."""
    hits: list[str] = []
    for elem in ds.iterall():
        if elem.VR == "SQ" or elem.tag == 0x7FE00010:
            continue
        if needle in str(elem.value):
            hits.append(elem.keyword or str(elem.tag))
    return hits


def fhir_problems(bundle: Any) -> list[str]:
    """Our own checks of a FHIR Bundle (on top of fhir.resources' validation)."""
    problems = []
    urls = {e.fullUrl for e in bundle.entry}
    data = bundle.model_dump(mode="json")

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("reference")
            if isinstance(ref, str) and ref not in urls:
                problems.append(f"unresolved reference {ref}")
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(data)
    by_type: dict[str, list[Any]] = {}
    for e in bundle.entry:
        by_type.setdefault(e.resource.get_resource_type(), []).append(e.resource)
    for dr in by_type.get("DiagnosticReport", []):
        if dr.status != "preliminary":
            problems.append("DiagnosticReport.status is not preliminary")
        codes = {(c.system, c.code) for c in dr.code.coding}
        if ("http://loinc.org", "18748-4") not in codes:
            problems.append("DiagnosticReport.code lacks LOINC 18748-4")
    for obs in by_type.get("Observation", []):
        if obs.status not in ("registered", "preliminary", "final", "amended"):
            problems.append(f"Observation.status {obs.status}")
    for t in ("DiagnosticReport", "Device", "Provenance", "Patient"):
        if t not in by_type:
            problems.append(f"no {t}")
    return problems

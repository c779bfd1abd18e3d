"""STOW-RS push into a real Orthanc (Debian orthanc + orthanc-dicomweb) on loopback.

Orthanc runs with a temporary config and storage folder on a free port and is stopped in a
finally. A generated DX study goes through /report?format=bundle&push=true; QIDO-RS must then
list the SR, SEG, SC and GSPS under the input's StudyInstanceUID, and pushing the same upload again
must not add instances (deterministic UIDs).
"""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from service.settings import PacsSettings
from tests.api.test_interop_api import _app, _dicom
from tests.dicom_tools import parse_related, read_dicom, require_binary

PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so*",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
    "/usr/lib/*/orthanc/libOrthancDicomWeb.so*",
)
SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.33": "SR",
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
    "1.2.840.10008.5.1.4.1.1.11.1": "GSPS",
}


def _plugin() -> str:
    for pattern in PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    if os.environ.get("CI"):
        pytest.fail("the Orthanc DICOMweb plugin is missing in CI (orthanc-dicomweb)")
    pytest.skip("the Orthanc DICOMweb plugin is not installed (Debian orthanc-dicomweb)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = require_binary("Orthanc")
    plugin = _plugin()
    root = tmp_path_factory.mktemp("orthanc")
    port = _free_port()
    config = {
        "Name": "cxr-test",
        "HttpPort": port,
        "HttpBindAddress": "127.0.0.1",
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": False,
        "DicomPort": _free_port(),
        "StorageDirectory": str(root / "db"),
        "IndexDirectory": str(root / "db"),
        "Plugins": [plugin],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    path = Path(root) / "orthanc.json"
    path.write_text(json.dumps(config))
    log = (Path(root) / "orthanc.log").open("wb")
    proc = subprocess.Popen([binary, str(path)], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/plugins", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("Orthanc did not start: " + (Path(root) / "orthanc.log").read_text())
            time.sleep(0.2)
        assert "dicom-web" in httpx.get(f"{base}/plugins").json()
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _instances(base: str, study_uid: str) -> list[dict[str, Any]]:
    r = httpx.get(
        f"{base}/dicom-web/studies/{study_uid}/instances",
        headers={"Accept": "application/dicom+json"},
    )
    if r.status_code == 204:
        return []
    r.raise_for_status()
    return list(r.json())


def test_bundle_push_files_sr_seg_sc_under_the_study_once(orthanc: str, tiny_weights: Any) -> None:
    app, _ = _app(tiny_weights, PacsSettings(stow_url=f"{orthanc}/dicom-web", backoff_s=0.0))
    data = _dicom()
    study_uid = read_dicom(data).StudyInstanceUID
    with TestClient(app, raise_server_exceptions=False) as client:
        for _ in range(2):  # the second push is a retry: same UIDs, no new instances
            r = client.post(
                "/report",
                params={"format": "bundle", "push": "true", "lime": "false"},
                files={"file": ("scan.bin", data)},
            )
            assert r.status_code == 200, r.text
            assert r.headers["x-cxr-push"].startswith("stored; instances=4"), r.headers
            found = _instances(orthanc, study_uid)
            classes = sorted(SOP_CLASSES.get(i["00080016"]["Value"][0], "?") for i in found)
            assert classes == ["GSPS", "SC", "SEG", "SR"]
        parts = parse_related(r.content, r.headers["content-type"])
        sent = {read_dicom(b).SOPInstanceUID for ct, b in parts if ct == "application/dicom"}
        assert {i["00080018"]["Value"][0] for i in found} == sent
    stats = httpx.get(f"{orthanc}/statistics").json()
    assert stats["CountInstances"] == 4 and stats["CountStudies"] == 1

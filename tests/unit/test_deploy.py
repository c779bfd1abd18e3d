"""Docker cannot run on the development machines: check the deployment files' structure."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_api_service_is_hardened_and_health_checked() -> None:
    api = _compose()["services"]["api"]
    assert "/health/ready" in " ".join(api["healthcheck"]["test"])
    assert api["user"].split(":")[0] not in ("0", "root")
    assert any(v.endswith(":/app/weights:ro") for v in api["volumes"])
    assert api["environment"]["CXR_WEIGHTS_DIR"] == "/app/weights"
    assert api["read_only"] is True
    assert api["depends_on"]["llm"]["required"] is False  # API stays up without the LLM
    assert api["environment"]["CXR_REPORT__BACKEND"] == "remote"
    assert api["environment"]["CXR_REPORT__REMOTE_URL"].startswith("http://llm:")
    # Secure by default: keys come from the operator's environment; anonymous is opt-in.
    assert api["environment"]["CXR_AUTH__API_KEYS"] == "${CXR_AUTH__API_KEYS:-[]}"
    assert api["environment"]["CXR_AUTH__ALLOW_ANONYMOUS"] == "${CXR_AUTH__ALLOW_ANONYMOUS:-false}"


def test_llm_runs_as_its_own_service() -> None:
    services = _compose()["services"]
    assert "llm" in services and "healthcheck" in services["llm"]


def test_gpu_override_uses_onnxruntime_gpu() -> None:
    gpu = yaml.safe_load((REPO / "docker-compose.gpu.yml").read_text())["services"]["api"]
    assert gpu["build"]["args"]["ORT_PACKAGE"] == "onnxruntime-gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_dockerfile_runs_as_non_root_with_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in text and "/health/ready" in text
    assert "install_llama.sh" in text

"""Docker cannot run on the development machines: check the deployment files' structure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
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


def test_llm_service_serves_the_verified_qwen_gguf() -> None:
    llm = _compose()["services"]["llm"]
    cmd = llm["command"]
    model = cmd[cmd.index("--model") + 1]
    assert model.startswith("/models/") and "qwen2.5" in model
    assert len(cmd[cmd.index("--sha256") + 1]) == 64


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


def test_compose_scales_out_like_the_local_cluster() -> None:
    services = _compose()["services"]
    assert {"nginx", "redis", "worker", "api", "llm"} <= set(services)
    api, worker, nginx = services["api"], services["worker"], services["nginx"]
    for svc in (api, worker):
        assert svc["environment"]["CXR_JOBS__BACKEND"] == "redis"
        assert svc["environment"]["CXR_JOBS__REDIS_URL"].startswith("redis://redis:")
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "service.worker" in " ".join(worker["command"])
    assert api["deploy"]["replicas"] >= 2 and worker["deploy"]["replicas"] >= 2
    # Only nginx publishes a port; the replicas are reachable through it alone.
    assert "ports" not in api and nginx["ports"] == ["127.0.0.1:8000:8080"]
    assert "/health/ready" in " ".join(nginx["healthcheck"]["test"])
    assert any(v.endswith(":/etc/nginx/nginx.conf:ro") for v in nginx["volumes"])
    # X-Forwarded-For is believed from nginx's fixed address only.
    nginx_ip = nginx["networks"]["default"]["ipv4_address"]
    assert api["environment"]["CXR_TRUSTED_PROXIES"] == f'["{nginx_ip}"]'


def test_compose_nginx_config_is_valid(tmp_path: Path) -> None:
    """nginx -t on the compose config, with the container's paths and the api name mapped to
    this machine (the config itself is what compose mounts)."""
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        if os.environ.get("CI"):
            pytest.fail("nginx missing in CI (scripts/system_deps.sh installs it)")
        pytest.skip("nginx not installed (Debian package nginx)")
    text = (REPO / "deploy" / "nginx.compose.conf").read_text()
    for container_path in ("/var/cache/nginx", "/var/run"):
        text = text.replace(container_path, str(tmp_path))
    text = text.replace("server api:8000", "server 127.0.0.1:8000").replace(
        "stderr", str(tmp_path / "e.log")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-e", str(tmp_path / "e.log"), "-c", str(conf)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr

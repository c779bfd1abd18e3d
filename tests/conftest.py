from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings
from tests.factories import SHARED
from tests.tiny_models import write_tiny_weights

# TestClient sends "Host: testserver", which the anonymous loopback default refuses (DNS
# rebinding guard). Tests that check the Host allowlist pass trusted_hosts themselves.
os.environ.setdefault("CXR_TRUSTED_HOSTS", '["*"]')
# Test apps do not warm the report LLM's prompt cache after start-up (report.warm_up): with the
# embedded model on the shared fixture's app that is ~20 s of background reading per app,
# competing with the tests for the CPU. The tests of the warm-up turn it on themselves.
os.environ.setdefault("CXR_REPORT__WARM_UP", "false")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="session")
def tiny_settings(tiny_weights: Path) -> Settings:
    return Settings(weights_dir=tiny_weights, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def client(tiny_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(tiny_settings), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED / "classification.csv").is_file():
        pytest.skip("../shared/data/cxr is not present")
    return SHARED

"""Settings defaults that encode measured decisions (see bench/RESULTS.md)."""

from __future__ import annotations

import os

import pytest

from service.settings import ConcurrencySettings, Settings


def test_each_onnx_call_may_use_every_core_by_default() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert ConcurrencySettings().threads_per_call() == cores
    assert ConcurrencySettings(inference_slots=4).threads_per_call() == cores
    assert ConcurrencySettings(intra_op_threads=1).threads_per_call() == 1


def test_nested_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CXR_CONCURRENCY__MAX_WAIT_S", "2.5")
    monkeypatch.setenv("CXR_LIMITS__BODY_TIMEOUT_S", "7")
    monkeypatch.setenv("CXR_AUTH__API_KEYS", '["pacs:' + "ab" * 32 + '"]')
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.concurrency.max_wait_s == 2.5
    assert settings.limits.body_timeout_s == 7.0
    assert settings.auth.api_keys == ["pacs:" + "ab" * 32]

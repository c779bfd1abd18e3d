"""STOW-RS push of result instances to a DICOMweb server (dicomweb-client), with retry.

Never raises for a server or network failure: the caller still has its analysis, so the
outcome is a :class:`PushResult` that says what happened in words fit for a problem detail
(no server response text, which may echo patient data).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset

log = logging.getLogger("cxr.interop.stow")
RETRIABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class StowConfig:
    """``url``: the DICOMweb base URL (STOW posts to ``{url}/studies``)."""

    url: str
    timeout_s: float = 10.0
    attempts: int = 3
    backoff_s: float = 0.5
    username: str | None = None
    password: str | None = None
    bearer_token: str | None = None


@dataclass(frozen=True)
class PushResult:
    status: Literal["stored", "failed"]
    instances: int  # instances the server confirmed
    attempts: int
    code: str | None = None  # pacs_unreachable | pacs_rejected | pacs_partial | pacs_timeout
    detail: str | None = None
    http_status: int | None = None


def _client(cfg: StowConfig) -> DICOMwebClient:
    session = requests.Session()
    if cfg.username is not None:
        session.auth = (cfg.username, cfg.password or "")
    headers = {"Authorization": f"Bearer {cfg.bearer_token}"} if cfg.bearer_token else None
    client = DICOMwebClient(url=cfg.url, session=session, headers=headers, timeout=cfg.timeout_s)
    client.set_http_retry_params(retry=False)  # retried here, with network errors too
    return client


def _stored(response: Dataset, sent: int) -> PushResult | int:
    failed = len(response.get("FailedSOPSequence", []) or [])
    if failed:
        return PushResult(
            "failed",
            sent - failed,
            1,
            "pacs_partial",
            f"The PACS refused {failed} of {sent} instances.",
        )
    return sent


def push(
    datasets: Sequence[Dataset],
    cfg: StowConfig,
    sleep: Callable[[float], None] = time.sleep,
) -> PushResult:
    """STOW-RS ``datasets`` (one study) with up to ``cfg.attempts`` tries on network errors
    and retriable statuses (408/429/5xx), exponential backoff between tries."""
    client = _client(cfg)
    last = PushResult("failed", 0, 0, "pacs_unreachable", "The PACS could not be reached.")
    for attempt in range(1, cfg.attempts + 1):
        try:
            response = client.store_instances(list(datasets))
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            last = PushResult(
                "failed", 0, attempt, "pacs_rejected", f"The PACS answered HTTP {status}.", status
            )
            if status not in RETRIABLE:
                return last
        except requests.Timeout:
            last = PushResult(
                "failed",
                0,
                attempt,
                "pacs_timeout",
                f"The PACS did not answer within {cfg.timeout_s:g} s.",
            )
        except (requests.ConnectionError, OSError):
            last = PushResult(
                "failed", 0, attempt, "pacs_unreachable", "The PACS could not be reached."
            )
        else:
            outcome = _stored(response, len(datasets))
            if isinstance(outcome, PushResult):
                return PushResult(
                    outcome.status, outcome.instances, attempt, outcome.code, outcome.detail
                )
            return PushResult("stored", outcome, attempt)
        log.warning("STOW-RS attempt %d/%d failed: %s", attempt, cfg.attempts, last.code)
        if attempt < cfg.attempts:
            sleep(cfg.backoff_s * 2 ** (attempt - 1))
    return last

"""API-key authentication and the failed-attempt throttle. Pure: no HTTP types, no settings.

Keys are configured as ``key_id:sha256hex`` so the service never stores the secret itself; the
audit record names the ``key_id`` (the *principal*), never the key. Comparison is constant-time.
A client (source address) that fails ``max_failures`` times within ``window_s`` is refused
(429 + Retry-After) until the window has passed, so keys cannot be guessed at line rate; a
valid key still gets through. The address is the socket peer unless a configured trusted
proxy forwarded the request (``Settings.trusted_proxies``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

_KEY_SPEC = re.compile(r"^([A-Za-z0-9._-]{1,64}):([0-9a-fA-F]{64})$")


def parse_key_specs(specs: list[str]) -> dict[str, bytes]:
    """``["pacs:<sha256 hex>", ...]`` -> {key_id: digest}; ValueError names the bad entry's
    position only (the entry itself may be a secret pasted by mistake)."""
    out: dict[str, bytes] = {}
    for i, spec in enumerate(specs):
        m = _KEY_SPEC.match(spec.strip())
        if m is None:
            raise ValueError(f"api key entry {i} is not 'key_id:<64 hex sha256 of the key>'")
        if m.group(1) in out:
            raise ValueError(f"api key entry {i} repeats key id {m.group(1)!r}")
        out[m.group(1)] = bytes.fromhex(m.group(2))
    return out


def key_digest(secret: str) -> str:
    """The sha256 hex that goes into the configuration for ``secret``."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass
class FailureThrottle:
    """Failed attempts per client within a sliding window, bounded in memory."""

    max_failures: int
    window_s: float
    max_clients: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _failures: OrderedDict[str, list[float]] = field(default_factory=OrderedDict)

    def _recent(self, client: str) -> list[float]:
        now = self.clock()
        times = [t for t in self._failures.get(client, []) if now - t < self.window_s]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def blocked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again (0 when it may now)."""
        times = self._recent(client)
        if len(times) < self.max_failures:
            return 0.0
        return max(0.0, times[-self.max_failures] + self.window_s - self.clock())

    def record_failure(self, client: str) -> None:
        times = self._recent(client)
        times.append(self.clock())
        self._failures[client] = times
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)


@dataclass(frozen=True)
class AuthDecision:
    principal: str | None  # key id when accepted
    status: int  # 0 accepted, else 401 or 429
    code: str = ""
    retry_after_s: int = 0


class ApiKeyAuthenticator:
    def __init__(self, keys: dict[str, bytes], throttle: FailureThrottle) -> None:
        self._keys = keys
        self._throttle = throttle

    def check(self, client: str, presented: str | None) -> AuthDecision:
        """A valid key is accepted even while ``client`` is throttled: keys carry 256 bits, so
        the throttle only has to slow guessing, and checking it first let ten bad tries from a
        shared address (a proxy, the compose bridge) lock every key holder out (review F5)."""
        if presented:
            digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
            # Compare against every key so timing does not reveal which ids exist.
            match = None
            for key_id, expected in self._keys.items():
                if hmac.compare_digest(digest, expected):
                    match = key_id
            if match is not None:
                return AuthDecision(match, 0)
        wait = self._throttle.blocked_for(client)
        if wait > 0:
            return AuthDecision(None, 429, "too_many_auth_failures", int(wait) + 1)
        self._throttle.record_failure(client)
        code = "invalid_credentials" if presented else "missing_credentials"
        return AuthDecision(None, 401, code)

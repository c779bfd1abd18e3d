"""Deterministic DICOM UIDs: same input + same models + same options -> same UIDs.

A PACS that receives an instance again under the same SOP Instance UID keeps one copy, so a
gateway that retries a push (or re-runs a batch) does not duplicate results in the study.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

# Namespace of this project's name-based UUIDs (uuid5 of the project name in the URL space).
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cxr-xai.example/interop")


@dataclass(frozen=True)
class UidFactory:
    """Name-based (RFC 9562 version 5) UUIDs from a fixed seed, as 2.25 UIDs or urn:uuid.

    ``seed`` identifies the input and the models (e.g. ``sha256|classifier@1.0|...``); ``role``
    names the UID's use (``"sr.series"``, ``"seg.instance"``, ...). 2.25.<uuid as integer> is
    the DICOM PS3.5 B.2 form, so no registered root is needed.
    """

    seed: str

    def _uuid(self, role: str) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"{self.seed}\x00{role}")

    def uid(self, role: str) -> str:
        return f"2.25.{self._uuid(role).int}"

    def uuid_urn(self, role: str) -> str:
        """``urn:uuid:...`` for FHIR Bundle entries (same derivation, same stability)."""
        return self._uuid(role).urn

    def uuid_hex(self, role: str) -> str:
        """A 32-hex id for FHIR resource ids (``[A-Za-z0-9\\-.]{1,64}``)."""
        return self._uuid(role).hex

from __future__ import annotations

import yaml
from fastapi.testclient import TestClient

from service.openapi import DEFAULT_PATH, current_spec, render


def test_committed_spec_matches_the_app() -> None:
    committed = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    assert committed == yaml.safe_load(render(current_spec())), (
        "openapi.yaml drifted from the app: run `python -m service.openapi` and commit it"
    )


def test_served_spec_equals_generated(client: TestClient) -> None:
    served = client.get("/openapi.json").json()
    assert served == current_spec()


def test_every_operation_has_stable_id_and_problem_responses() -> None:
    spec = current_spec()
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            assert op.get("operationId"), f"{method} {path} lacks an operationId"
            if path.startswith("/health"):
                continue
            errors = {int(code) for code in op["responses"] if code.startswith(("4", "5"))}
            if "requestBody" in op:  # uploads: bad media, bad content, overload
                assert {415, 422, 503} <= errors, f"{method} {path}: {errors}"
            elif "{" in path:  # a resource by id: unknown id, malformed id
                assert {404, 422} <= errors, f"{method} {path}: {errors}"
            else:
                assert path in ("/version", "/metrics", "/limits"), f"{method} {path}: {errors}"
            for code in errors:
                content = op["responses"][str(code)].get("content", {})
                assert "application/problem+json" in content, f"{method} {path} {code}"
    assert "Problem" in spec["components"]["schemas"]

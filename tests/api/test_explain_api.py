"""POST /explain/gradcam and /explain/lime with the tiny generated models."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Iterator

import anyio
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from inference.intake import Limits
from service.explain_usecase import ExplainService
from service.gate import Overloaded, WorkGate
from service.registry import load_registry
from service.settings import Settings
from tests.factories import grey_chest, png_bytes, png_header_only, synthetic_chest

HEIGHT, WIDTH = 180, 150


@pytest.fixture(scope="module")
def chest_png() -> bytes:
    return png_bytes(synthetic_chest(HEIGHT, WIDTH))


def _post(client: TestClient, route: str, data: bytes, **params: object) -> dict:
    r = client.post(route, params=params, files={"file": ("x.png", data, "image/png")})
    assert r.status_code == 200, r.text
    return r.json()


def _png_size(b64: str) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(b64))).size


def test_gradcam_answers_with_maps_zones_and_quality(client: TestClient, chest_png: bytes) -> None:
    body = _post(client, "/explain/gradcam", chest_png)
    assert body["target"] == body["decision"]  # default: explain what the model decided
    for key in ("overlay_png", "heatmap_lungs_png", "heatmap_full_png"):
        assert _png_size(body[key]) == (WIDTH, HEIGHT)
    low = body["low_res"]
    assert max(low["height"], low["width"]) == 64
    assert np.asarray(low["values"]).shape == (low["height"], low["width"])
    assert np.min(low["values"]) >= 0.0 and np.max(low["values"]) <= 1.0
    quality = body["quality"]
    assert quality["agreement_iou"] is None and quality["deletion"] is not None
    assert 0.0 <= quality["energy_in_lungs"] <= 1.0
    assert quality["weak"] == bool(quality["reasons"])
    fused = [z["fused"] for z in body["zones"]]
    assert fused == sorted(fused, reverse=True)
    assert all(z["text_en"].startswith(z["name_en"]) for z in body["zones"])


def test_gradcam_target_is_echoed(client: TestClient, chest_png: bytes) -> None:
    finding = _post(client, "/explain/gradcam", chest_png, target="finding")
    other = _post(client, "/explain/gradcam", chest_png, target="no_finding")
    assert finding["target"] == "finding" and other["target"] == "no_finding"
    assert finding["quality"]["confidence"] == pytest.approx(
        1.0 - other["quality"]["confidence"], abs=1e-3
    )


def test_lime_is_reproducible_by_seed(client: TestClient, chest_png: bytes) -> None:
    first = _post(client, "/explain/lime", chest_png, n_samples=60, seed=11)
    again = _post(client, "/explain/lime", chest_png, n_samples=60, seed=11)
    assert first["seed"] == 11 and first["n_samples"] == 60
    first.pop("timings"), again.pop("timings")
    assert first == again
    assert _png_size(first["overlay_png"]) == (WIDTH, HEIGHT)
    assert first["n_superpixels"] >= 4
    assert all(s["weight"] > 0 for s in first["positive"])
    assert all(s["weight"] < 0 for s in first["negative"])
    assert first["quality"]["agreement_iou"] is not None
    assert any(z["lime_intensity"] is not None for z in first["zones"])


@pytest.mark.parametrize(
    ("route", "params"),
    [
        ("/explain/lime", {"n_samples": 1001}),
        ("/explain/lime", {"n_samples": 10}),
        ("/explain/lime", {"seed": -1}),
        ("/explain/lime", {"target": "pneumonia"}),
        ("/explain/gradcam", {"target": "pneumonia"}),
    ],
)
def test_bad_parameters_are_problem_json(
    client: TestClient, chest_png: bytes, route: str, params: dict
) -> None:
    r = client.post(route, params=params, files={"file": ("x.png", chest_png, "image/png")})
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] == "invalid_parameter"


@pytest.mark.parametrize("route", ["/explain/gradcam", "/explain/lime"])
def test_bad_images_are_problem_json(client: TestClient, route: str) -> None:
    r = client.post(route, files={"file": ("x.png", b"not an image at all", "image/png")})
    assert r.status_code in (415, 422)
    assert r.headers["content-type"].startswith("application/problem+json")
    missing = client.post(route, data={"other": "1"})  # urlencoded: not multipart at all
    assert missing.status_code == 415 and missing.json()["code"] == "multipart_required"


def test_lime_without_lungs_is_422(client: TestClient) -> None:
    flat = png_bytes(grey_chest())  # tiny segmenter finds no lung
    r = client.post("/explain/lime", files={"file": ("x.png", flat, "image/png")})
    assert r.status_code == 422 and r.json()["code"] == "lungs_not_found"


def test_busy_lime_answers_overloaded(tiny_settings: Settings, chest_png: bytes) -> None:
    """One LIME slot and no queue: a second LIME request is refused at once, not queued."""
    registry = load_registry(tiny_settings)
    inference = WorkGate("inference", 2, 4, 2)
    service = ExplainService(registry, inference, WorkGate("lime", 1, 0, 7), Limits())
    started, release = threading.Event(), threading.Event()
    original = service._predict

    def slow_predict(images: np.ndarray) -> np.ndarray:
        started.set()
        release.wait(timeout=10)
        return original(images)

    service._predict = slow_predict  # type: ignore[method-assign]
    outcome: list[BaseException] = []

    async def scenario() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(service.lime, chest_png, None, 50, 0)
            while not started.is_set():
                await anyio.sleep(0.01)
            try:
                await service.lime(chest_png, None, 50, 1)
            except Overloaded as exc:
                outcome.append(exc)
            release.set()

    start = time.perf_counter()
    anyio.run(scenario)
    assert outcome and isinstance(outcome[0], Overloaded)
    assert outcome[0].resource == "lime" and outcome[0].retry_after_s == 7
    assert time.perf_counter() - start < 30


# ---- asynchronous LIME jobs ----------------------------------------------------------------------


def _wait_job(client: TestClient, url: str, timeout_s: float = 30.0) -> dict:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(url).json()
        if body["state"] not in ("queued", "running"):
            return body
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_lime_job_gives_the_synchronous_result(client: TestClient, chest_png: bytes) -> None:
    params = {"n_samples": 60, "seed": 11}
    files = {"file": ("x.png", chest_png, "image/png")}
    submitted = client.post("/explain/lime/jobs", params=params, files=files)
    assert submitted.status_code == 202
    job = submitted.json()
    assert (
        submitted.headers["location"] == job["status_url"] == f"/explain/lime/jobs/{job['job_id']}"
    )
    assert job["state"] in ("queued", "running") and job["result"] is None
    done = _wait_job(client, job["status_url"])
    assert done["state"] == "succeeded" and done["error"] is None
    direct = _post(client, "/explain/lime", chest_png, **params)
    result = done["result"]
    result.pop("timings"), direct.pop("timings")
    assert result == direct  # same seed, same explanation, whichever way it was asked for


def test_lime_job_failure_carries_the_problem(client: TestClient) -> None:
    flat = png_bytes(grey_chest())  # no lungs: 422 synchronously
    job = client.post("/explain/lime/jobs", files={"file": ("x.png", flat, "image/png")}).json()
    done = _wait_job(client, job["status_url"])
    assert done["state"] == "failed" and done["result"] is None
    assert done["error"]["status"] == 422 and done["error"]["code"] == "lungs_not_found"


def test_lime_job_refuses_a_non_image_at_submit(client: TestClient) -> None:
    r = client.post("/explain/lime/jobs", files={"file": ("x", b"not an image at all", "x/y")})
    assert r.status_code == 415
    assert r.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize("job_id", ["0" * 32, "../../etc/passwd", "ABC"])
def test_unknown_jobs_are_404_or_422(client: TestClient, job_id: str) -> None:
    for method in ("GET", "DELETE"):
        r = client.request(method, f"/explain/lime/jobs/{job_id}")
        assert r.status_code in (404, 422)
        assert r.headers["content-type"].startswith("application/problem+json")


def test_lime_job_can_be_cancelled(client: TestClient, chest_png: bytes) -> None:
    files = {"file": ("x.png", chest_png, "image/png")}
    job = client.post("/explain/lime/jobs", params={"n_samples": 1000}, files=files).json()
    cancelled = client.delete(job["status_url"])
    assert cancelled.status_code == 200
    done = _wait_job(client, job["status_url"])
    # Either it was stopped, or it had already finished in the meantime (tiny model).
    assert done["state"] in ("cancelled", "succeeded")


# ---- F1 (security review): bounded working copy, pixel-cost admission ------------------------


@pytest.fixture(scope="module")
def small_work_client(tiny_weights: object) -> Iterator[TestClient]:
    """Working copies bounded at 64 px and a 60,000-pixel study budget, so that a 180x150
    upload exercises the same paths as a 30 MP one does under the defaults."""
    from service.app import create_app
    from service.settings import LimitSettings

    limits = LimitSettings(work_max_side=64, max_study_pixels=60_000)
    settings = Settings(weights_dir=tiny_weights, limits=limits, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _scaled_image_info(body: dict) -> None:
    image = body["image"]
    assert (image["width"], image["height"]) == (WIDTH, HEIGHT)  # the upload's own size
    assert (image["analysis_width"], image["analysis_height"]) == (53, 64)
    assert image["analysis_scale"] == pytest.approx(53 / WIDTH, abs=1e-6)


def test_explanations_run_on_the_bounded_working_copy(
    small_work_client: TestClient, chest_png: bytes
) -> None:
    """Before the fix every map and overlay came back at upload size (a 30 MP upload cost
    +1.6 GB on /explain/gradcam) and the response had no analysis size."""
    gradcam = _post(small_work_client, "/explain/gradcam", chest_png)
    _scaled_image_info(gradcam)
    for key in ("overlay_png", "heatmap_lungs_png", "heatmap_full_png"):
        assert _png_size(gradcam[key]) == (53, 64)
    lime = _post(small_work_client, "/explain/lime", chest_png, n_samples=50)
    _scaled_image_info(lime)
    assert _png_size(lime["overlay_png"]) == (53, 64)
    seg = _post(small_work_client, "/segment", chest_png)
    _scaled_image_info(seg)
    assert _png_size(seg["overlay_png"]) == (53, 64)
    assert all(_png_size(s["mask_png"]) == (53, 64) for s in seg["structures"])
    classify = _post(small_work_client, "/classify", chest_png)
    _scaled_image_info(classify)


def test_unscaled_uploads_say_so(client: TestClient, chest_png: bytes) -> None:
    image = _post(client, "/classify", chest_png)["image"]
    assert (image["analysis_width"], image["analysis_height"]) == (WIDTH, HEIGHT)
    assert image["analysis_scale"] == 1.0


def test_study_has_a_total_pixel_budget(small_work_client: TestClient, chest_png: bytes) -> None:
    """Two 180x150 views (54,000 px) fit the 60,000-pixel budget, three do not: refused
    from the headers before decoding. Before the fix six 30 MP views cost +781 MB."""
    view = ("files", ("a.png", chest_png, "image/png"))
    assert small_work_client.post("/classify/study", files=[view] * 2).status_code == 200
    r = small_work_client.post("/classify/study", files=[view] * 3)
    assert r.status_code == 422 and r.json()["code"] == "pixel_budget_exceeded"
    assert r.headers["content-type"].startswith("application/problem+json")


def _array_bytes(value: object, seen: set[int] | None = None) -> int:
    """Bytes of every numpy array reachable through dataclass fields and tuples."""
    import dataclasses

    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_array_bytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if isinstance(value, (tuple, list)):
        return sum(_array_bytes(v, seen) for v in value)
    return 0


def test_lime_outcomes_hold_no_pixel_arrays(tiny_settings: Settings, chest_png: bytes) -> None:
    """LIME jobs keep their outcome for minutes: ~254 MB each for a 30 MP upload before the
    fix (label map, signed map and two zone maps at upload size)."""
    registry = load_registry(tiny_settings)
    service = ExplainService(
        registry, WorkGate("inference", 1, 1, 1), WorkGate("lime", 1, 1, 1), Limits()
    )
    outcome = anyio.run(lambda: service.lime(chest_png, None, 50, 0))
    assert _array_bytes(outcome) < 1024, _array_bytes(outcome)
    assert outcome.lime.overlay_png.startswith(b"\x89PNG")


def test_gradcam_cost_grows_with_the_upload(tiny_settings: Settings) -> None:
    """Admission counts work, not requests: a 30 MP upload weighs more than a small one, up to
    the working-copy bound."""
    from service.usecases import GRADCAM_WEIGHT, pixel_cost

    small = png_bytes(synthetic_chest(512, 512))
    large = png_header_only(5477, 5477)
    limits = Limits()
    assert pixel_cost(large, limits, GRADCAM_WEIGHT) > 10 * pixel_cost(small, limits, 1.0)
    assert pixel_cost(large, limits, GRADCAM_WEIGHT) < GRADCAM_WEIGHT * (0.25 + 2048**2 / 1e6) + 2

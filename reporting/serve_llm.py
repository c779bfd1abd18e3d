"""Run the embedded (or any) GGUF as an OpenAI-compatible server: the compose ``llm`` service.

    python -m reporting.serve_llm [--model PATH] [--sha256 HEX] [--host H] [--port P]

Thin wrapper around ``llama_cpp.server`` (install the ``llm`` extra): it verifies the GGUF's
sha256 first, lets llama-cpp-python take the chat template and stop token from the GGUF's
metadata (sandboxed Jinja, as the in-process backend does) and enables prompt log-probabilities
so ``RemoteOpenAIBackend.score_tokens`` and the attribution endpoint work against it. The API
talks to it with ``RemoteOpenAIBackend``. This module is an entry point, not library code: it is
never imported by the service."""

from __future__ import annotations

import argparse
from pathlib import Path

from reporting.gguf import embedded_gguf_path, verify_gguf


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="GGUF path (default: embedded)")
    ap.add_argument("--sha256", default=None, help="expected sha256 of the GGUF")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048)
    args = ap.parse_args(argv)
    model = args.model or embedded_gguf_path()
    verify_gguf(model, args.sha256)

    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    app = create_app(
        server_settings=ServerSettings(host=args.host, port=args.port),
        model_settings=[
            ModelSettings(
                model=str(model),
                model_alias="local",
                chat_format=None,  # from the GGUF's tokenizer.chat_template
                n_ctx=args.n_ctx,
                n_threads=args.threads,
                n_threads_batch=args.threads,
                logits_all=True,
                verbose=False,
            )
        ],
    )
    uvicorn.run(app, host=args.host, port=args.port)


if __name__ == "__main__":
    main()

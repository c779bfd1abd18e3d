# CPU image of the cxr-xai API. Build: docker build -t cxr-xai .
# GPU variant: docker build --build-arg ORT_PACKAGE=onnxruntime-gpu -t cxr-xai:gpu .
# (and run with the NVIDIA runtime; see docker-compose.gpu.yml).
FROM python:3.11-slim AS build
ARG ORT_PACKAGE=onnxruntime
ARG EXTRAS=llm
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY api ./api
COPY inference ./inference
COPY explain ./explain
COPY reporting ./reporting
COPY training ./training
COPY scripts ./scripts
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Portable llama.cpp build (see scripts/install_llama.sh for why not the native one).
RUN if echo ",${EXTRAS}," | grep -q ",llm,"; then scripts/install_llama.sh /opt/venv/bin/pip; fi \
    && pip install --no-cache-dir ".[${EXTRAS}]" \
    && if [ "$ORT_PACKAGE" != "onnxruntime" ]; then pip uninstall -y onnxruntime && pip install --no-cache-dir "$ORT_PACKAGE"; fi

FROM python:3.11-slim
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CXR_HOST=0.0.0.0 \
    CXR_PORT=8000 \
    CXR_WEIGHTS_DIR=/app/weights
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin cxr
WORKDIR /app
# Weights are normally mounted read-only over this folder; the copy makes the image usable alone.
COPY --chown=root:root weights /app/weights
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import sys,urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=2).status == 200 else 1)"
CMD ["python", "-m", "service"]

# One image for every part of the platform: the five services, the gateway and workers.
# (Built and run by docker-compose.yml; `make run` needs none of this.)
FROM python:3.11-slim-bookworm

# ffmpeg/ffprobe do the media work; node/npm only install the page's packages (hls.js, hash-wasm).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg nodejs npm \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY services ./services
COPY gateway ./gateway
# Editable: the services find frontend/ and the migrations relative to the project folder.
RUN pip install --no-cache-dir -e .

COPY frontend/package.json frontend/package-lock.json ./frontend/
RUN cd frontend && npm ci --omit=dev --no-audit --no-fund
COPY frontend/src ./frontend/src

ENV HOST=0.0.0.0 \
    STORAGE_DIR=/data
VOLUME /data
EXPOSE 8000 8001 8002 8003 8004 8005

# Default: everything in one container, like `make run`. docker-compose.yml runs one part each.
CMD ["python", "-m", "services.launcher"]

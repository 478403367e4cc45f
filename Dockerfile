# log_capturer container image.
#
#   docker build -t log-capturer .            # public network: python:3.11-slim + PyPI
#   scripts/build_image.sh                    # offline: local base image + local wheelhouse
#
# Running it: the daemon reads the Docker socket as the non-root user 10001, which
# gets the socket's group as a supplementary group at run time (the gid differs from
# host to host, so it cannot be baked in):
#
#   docker run -d --name log-capturer \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v /var/run/docker.sock:/var/run/docker.sock:ro \
#     -v log-capturer-data:/var/lib/log_capturer \
#     -p 127.0.0.1:8001:8001 log-capturer
#
# (compose: `group_add: ["<gid>"]`). Config keys can be overridden from the environment
# (`docker run -e ...`; the rule is in the header of docs/config-reference.yaml); if you
# move server.listen off port 8001, set LOG_CAPTURER_HEALTH_URL to match.
#
# The legacy builder (Docker 20.10 without BuildKit) must build this file too: no
# RUN --mount, no heredocs.

# Pin it for reproducible builds, e.g. python:3.11-slim@sha256:<digest>.
# scripts/build_image.sh passes log-capturer-base/python:3.11-bookworm (made by
# scripts/build_base_image.sh). Only `python3 -m venv` and venv paths are used below,
# so /usr/bin/python3 (Debian) and /usr/local/bin/python3 (python:*-slim) both work.
ARG BASE_IMAGE=python:3.11-slim

# ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build

# Offline builds: scripts/build_image.sh passes PIP_NO_INDEX=1 and
# PIP_FIND_LINKS=/src/.build/wheelhouse. Build args are environment variables for RUN,
# and pip reads PIP_*. Left unset (no default), they are not in the environment and
# pip uses its own defaults (PyPI). PIP_INDEX_URL points at a mirror.
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS
ARG PIP_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# The optional wheelhouse first (.build/wheelhouse, absent in a plain checkout). COPY
# needs at least one existing source, so pyproject.toml comes along and the `.buil[d]`
# glob may match nothing; .dockerignore lets only .build/wheelhouse through.
COPY pyproject.toml .buil[d] /src/.build/

# Dependencies in their own layer: editing the code does not fetch or build them again.
COPY pyproject.toml README.md /src/
RUN set -eu; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("/src/pyproject.toml", "rb"))["project"]["dependencies"]))' >/tmp/requirements.txt; \
    /opt/venv/bin/pip wheel --wheel-dir /wheels -r /tmp/requirements.txt; \
    /opt/venv/bin/pip install --no-index --find-links /wheels -r /tmp/requirements.txt

# The project itself: a wheel (built with setuptools from the wheelhouse or the index),
# installed without touching the dependencies. pip and setuptools are then removed from
# the venv: the runtime image installs nothing.
COPY log_capturer/ /src/log_capturer/
RUN set -eu; \
    /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels /src; \
    /opt/venv/bin/pip install --no-index --no-deps /wheels/log_capturer-*.whl; \
    /opt/venv/bin/pip check; \
    /opt/venv/bin/python -m pip uninstall -y -q pip setuptools; \
    /opt/venv/bin/log-capturer --version

# ---------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime

LABEL org.opencontainers.image.title="log_capturer" \
      org.opencontainers.image.description="Captures Docker container logs exactly once through the Docker Engine API."

# A fixed uid/gid, so volume ownership and `securityContext`-style policies can rely
# on it. No home directory, no login shell.
RUN groupadd --gid 10001 log_capturer \
 && useradd --no-log-init --uid 10001 --gid 10001 \
        --home-dir /var/lib/log_capturer --no-create-home --shell /usr/sbin/nologin log_capturer \
 && mkdir -p /var/lib/log_capturer /etc/log_capturer \
 && chown 10001:10001 /var/lib/log_capturer \
 && chmod 0750 /var/lib/log_capturer

COPY --from=build /opt/venv /opt/venv
# Listens on 0.0.0.0:8001; positions and the file sink's output live in
# /var/lib/log_capturer.
COPY deploy/log_capturer/config.yaml /etc/log_capturer/config.yaml

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LOG_CAPTURER_HEALTH_URL=http://127.0.0.1:8001/health

USER 10001:10001
WORKDIR /var/lib/log_capturer
# Declared after the chown above, so a new volume starts owned by 10001.
VOLUME ["/var/lib/log_capturer"]
EXPOSE 8001
# The daemon drains its queue, flushes the sinks and saves positions on SIGTERM;
# give it time (docker stop -t / compose stop_grace_period) if batches are large.
STOPSIGNAL SIGTERM
# python's urllib: slim images have no curl. Docker 20.10 has no --start-interval, so
# the first probe runs one interval after start.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['LOG_CAPTURER_HEALTH_URL'], timeout=4)"]

ENTRYPOINT ["/opt/venv/bin/log-capturer"]
CMD ["run", "-c", "/etc/log_capturer/config.yaml"]

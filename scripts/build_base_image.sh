#!/usr/bin/env bash
# Make a local stand-in for the public `python:3.11-slim` base image, for machines that
# reach Debian's archive but no container registry: a minimal Debian bookworm root
# filesystem (debootstrap) with python3 + venv + pip wheels + CA certificates, imported
# with `docker import`. Our Dockerfile only runs `python3 -m venv` and then venv paths,
# so it builds the same on this image (/usr/bin/python3) and on python:3.11-slim
# (/usr/local/bin/python3).
# Idempotent: does nothing when the image exists (FORCE=1 rebuilds it). Needs root to
# install debootstrap and to run it. Takes about 1-3 minutes on 2 cores.
set -euo pipefail

IMAGE="${BASE_IMAGE:-log-capturer-base/python:3.11-bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# python3-venv brings ensurepip's pip/setuptools wheels (python3-pip-whl,
# python3-setuptools-whl); ca-certificates lets pip reach a package index over HTTPS
# when the build is not given a wheelhouse.
PACKAGES="python3,python3-venv,ca-certificates"

if [ -z "${FORCE:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "build_base_image: $IMAGE exists"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "build_base_image: $IMAGE missing and not root: debootstrap needs root" >&2
    exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "build_base_image: installing debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -q && apt-get install -y -q --no-install-recommends debootstrap; } \
            >/tmp/log-capturer-apt.log 2>&1; then
        tail -n 30 /tmp/log-capturer-apt.log >&2
        exit 1
    fi
fi

ROOT="$(mktemp -d /var/tmp/log-capturer-base.XXXXXX)"
cleanup() {
    # debootstrap mounts /proc etc. inside the target; a failed run can leave them.
    awk -v root="$ROOT" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r |
        while read -r mnt; do umount -l "$mnt" || true; done
    rm -rf --one-file-system "$ROOT"
}
trap cleanup EXIT

previous="$(docker image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)"
started=$SECONDS
echo "build_base_image: debootstrap $SUITE ($PACKAGES) into $ROOT"
if ! debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOT" "$MIRROR" \
        >"$ROOT.log" 2>&1; then
    tail -n 30 "$ROOT.log" >&2
    rm -f "$ROOT.log"
    exit 1
fi
rm -f "$ROOT.log"

# What a venv + pip install needs must work before we publish the image.
chroot "$ROOT" /usr/bin/python3 -m venv /tmp/venv-check
chroot "$ROOT" /tmp/venv-check/bin/python -m pip --version >/dev/null
rm -rf "$ROOT/tmp/venv-check"

# Nothing of the build host or of apt's caches in the image (as the official images do).
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/* "$ROOT"/var/cache/debconf/*-old \
    "$ROOT"/var/log/* "$ROOT"/tmp/* "$ROOT"/var/tmp/* "$ROOT"/root/.cache
: >"$ROOT/etc/resolv.conf"  # docker mounts its own; don't ship the build host's
rm -f "$ROOT/etc/hostname"
# Like debian:bookworm-slim (python:3.11-slim's base): no docs, man pages or
# translations, now or from later `apt-get install`s (copyright files stay).
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
find "$ROOT/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

tar --numeric-owner -C "$ROOT" -c . | docker import \
    -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'ENV LANG=C.UTF-8' \
    -c 'CMD ["python3"]' \
    -m "debootstrap --variant=minbase --include=$PACKAGES $SUITE" \
    - "$IMAGE" >/dev/null
echo "build_base_image: built $IMAGE in $((SECONDS - started))s," \
    "$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$IMAGE")" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || true  # still used by some image: keep it
fi

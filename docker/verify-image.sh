#!/usr/bin/env bash
# Build the project's image from its own Dockerfile and run it, without a Docker engine:
# buildah builds it (chroot isolation, vfs storage) on a Debian bookworm base made with
# debootstrap, and replicas run with `buildah run` on the host's loopback network. Needs
# root and Debian's buildah, podman and debootstrap (`.ci/run` installs them).
#
#   docker/verify-image.sh build          base (cached) + image; prints the image size
#   docker/verify-image.sh run PORT [-e NAME=VALUE]...
#                                         one replica on 127.0.0.1:PORT, in the foreground;
#                                         its container is removed when it stops
#   docker/verify-image.sh measure [N]    image size, and the median of N (default 3) starts
#                                         from `buildah run` to a 200 from /readyz
#
# The Dockerfile keeps python:3.11-slim-bookworm as its default base; here PYTHON_IMAGE points
# at the debootstrapped one, whose python3 is Debian's 3.11.
set -euo pipefail
cd "$(dirname "$0")/.."

STORAGE=(--storage-driver "${EMOTION_IMAGE_STORAGE:-vfs}")
BASE=${EMOTION_BASE_IMAGE:-localhost/pybase:bookworm}
IMAGE=${EMOTION_IMAGE:-localhost/emotion-service:verify}
SUITE=bookworm

build_base() {
  if podman "${STORAGE[@]}" image exists "$BASE"; then
    echo "base image $BASE: cached"
    return
  fi
  local rootfs
  rootfs=$(mktemp -d /var/tmp/emotion-rootfs.XXXXXX)
  chmod 0755 "$rootfs" # it becomes the image's `/`: mktemp's 0700 would lock everyone out
  trap 'rm -rf "$rootfs" "$rootfs.log"' EXIT
  echo "base image $BASE: debootstrap $SUITE (minbase)"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$rootfs" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log"; exit 1; }
  ln -sf python3 "$rootfs/usr/bin/python" # the Dockerfile calls `python`, as the official image has it
  # pip inside the build must trust what this machine trusts (a proxy may present its own CA)
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  tar -C "$rootfs" -c . | podman "${STORAGE[@]}" import --quiet - "$BASE" >/dev/null
  rm -rf "$rootfs" "$rootfs.log"
  trap - EXIT
}

image_size() {
  buildah "${STORAGE[@]}" inspect --type image --format '{{.Size}}' "$IMAGE" 2>/dev/null ||
    podman "${STORAGE[@]}" image inspect --format '{{.Size}}' "$IMAGE"
}

build() {
  build_base
  echo "image $IMAGE: buildah bud (layers cached)"
  buildah "${STORAGE[@]}" bud --quiet --layers --format docker --isolation chroot \
    --build-arg "PYTHON_IMAGE=$BASE" -t "$IMAGE" . >/dev/null
  echo "image $IMAGE: $(image_size) bytes"
}

run() {
  local port=${1:?PORT}
  shift
  REPLICA="emotion-replica-$port"
  local env=()
  while [ "$#" -gt 0 ]; do
    [ "$1" = "-e" ] || { echo "expected -e NAME=VALUE, got $1" >&2; exit 2; }
    env+=(-e "$2")
    shift 2
  done
  buildah "${STORAGE[@]}" rm "$REPLICA" >/dev/null 2>&1 || true
  buildah "${STORAGE[@]}" from --quiet --name "$REPLICA" "$IMAGE" >/dev/null
  trap 'buildah "${STORAGE[@]}" rm "$REPLICA" >/dev/null 2>&1 || true' EXIT
  trap 'exit 143' TERM INT
  buildah "${STORAGE[@]}" run --isolation chroot --user 10001:10001 \
    -e EMOTION_HOST=127.0.0.1 -e "EMOTION_PORT=$port" "${env[@]}" "$REPLICA" -- emotion-entrypoint
}

measure() {
  local n=${1:-3} times=() port pid t0 ready
  for _ in $(seq "$n"); do
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    t0=$(date +%s.%N)
    setsid "$0" run "$port" >/dev/null 2>&1 &
    pid=$!
    ready=""
    for _ in $(seq 600); do
      if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ]; then
        ready=$(date +%s.%N)
        break
      fi
      sleep 0.1
    done
    kill -TERM -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    [ -n "$ready" ] || { echo "the replica on port $port was not ready within 60 s" >&2; exit 1; }
    times+=("$(printf '%.1f' "$(echo "$ready - $t0" | bc)")")
  done
  echo "image $IMAGE: $(image_size) bytes"
  printf 'start to ready: %s s; median %s s\n' "${times[*]}" \
    "$(printf '%s\n' "${times[@]}" | sort -n | sed -n "$(((n + 1) / 2))p")"
}

case "${1:-}" in
  build) build ;;
  run) shift; run "$@" ;;
  measure) shift; measure "$@" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac

#!/bin/sh
# Container entry point: start `python -m app` (uvicorn plus the service's connection guards:
# header time-out and size limit, connection cap; see app/serving.py) with every option taken
# from the environment.
#
#   EMOTION_HOST, EMOTION_PORT listen address (default 0.0.0.0:8000; the settings that
#                              `python -m app` uses too)
#   WEB_CONCURRENCY            uvicorn worker processes (default 1; scale with replicas)
#   FORWARDED_ALLOW_IPS        proxies whose X-Forwarded-For/-Proto are trusted
#                              (comma-separated IPs/CIDRs or "*"; default 127.0.0.1)
#   TIMEOUT_KEEP_ALIVE         idle keep-alive seconds (default 75, above the gateway's 60)
#   TIMEOUT_GRACEFUL_SHUTDOWN  seconds to finish in-flight requests on SIGTERM (default:
#                              EMOTION_GRACEFUL_SHUTDOWN_S, 10; compose waits 30)
#   UVICORN_ACCESS_LOG         1 adds uvicorn's own access log (the app already logs each
#                              request with its X-Request-ID; default 0)
#   EMOTION_*                  the service settings, read by app/settings.py itself;
#                              EMOTION_LOG_LEVEL also sets uvicorn's log level.
#
# Arguments replace the server command, e.g. `docker run IMAGE python -m app.assets`.
set -eu

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

set -- \
    --host "${EMOTION_HOST:-0.0.0.0}" \
    --port "${EMOTION_PORT:-8000}" \
    --workers "${WEB_CONCURRENCY:-1}" \
    --proxy-headers \
    --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-127.0.0.1}" \
    --timeout-keep-alive "${TIMEOUT_KEEP_ALIVE:-75}"

if [ -n "${TIMEOUT_GRACEFUL_SHUTDOWN:-}" ]; then
    set -- "$@" --timeout-graceful-shutdown "$TIMEOUT_GRACEFUL_SHUTDOWN"
fi
if [ "${UVICORN_ACCESS_LOG:-0}" = "1" ]; then
    set -- "$@" --access-log
fi

exec python -m app "$@"

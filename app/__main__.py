"""`python -m app`: serve `app.main:app` with uvicorn, using the service's own access log.

uvicorn's access log is off unless --access-log: `app.middleware.RequestContext` writes one
line per request with the request ID, duration and proxied client address instead. The
connection guards of `app.serving` (header time-out and size, connection cap) apply here,
not under a bare `uvicorn app.main:app`.

SIGTERM (or Ctrl-C) shuts down gracefully: no new connections, requests in flight get up to
--timeout-graceful-shutdown seconds (EMOTION_GRACEFUL_SHUTDOWN_S) to finish, then the lifespan releases the worker pool and
models, and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import math
import signal
import sys
from types import FrameType

from pydantic import ValidationError

from app.serving import PROTOCOLS, ConnectionLimits, GuardedConfig, resolve_http, serve
from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = Settings()
    except ValidationError as e:  # a configuration mistake: say which, without a traceback
        print(f"python -m app: invalid settings: {e}", file=sys.stderr)
        return 2
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument(
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="HTTP/1.1 implementation; auto: httptools when installed (default: auto)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="add uvicorn's own access log to the service's (which has the request IDs)",
    )
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from --forwarded-allow-ips",
    )
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    parser.add_argument(
        "--timeout-keep-alive",
        type=int,
        default=5,
        help="seconds an idle keep-alive connection stays open (default: 5)",
    )
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=float,
        default=settings.graceful_shutdown_s,
        help="seconds requests in flight get to finish after SIGTERM (default: "
        "EMOTION_GRACEFUL_SHUTDOWN_S)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    limits = ConnectionLimits(
        settings.header_timeout_s, settings.max_connections, settings.max_header_bytes
    )
    config = GuardedConfig(
        "app.main:app",
        limits,
        host=args.host,
        port=args.port,
        workers=args.workers,
        http=PROTOCOLS[resolve_http(args.http)],
        h11_max_incomplete_event_size=settings.max_header_bytes,
        access_log=args.access_log,
        log_level=settings.log_level,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        server_header=False,
        timeout_keep_alive=args.timeout_keep_alive,
        timeout_graceful_shutdown=math.ceil(args.timeout_graceful_shutdown),
    )
    serve(config)
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    # uvicorn handles SIGTERM itself while it serves, then re-raises it once shut down so the
    # default action would kill the process (exit 143). A completed graceful shutdown is a
    # clean exit, so the re-raised signal lands here instead: exit 0. Before uvicorn takes
    # over (imports, set-up), SIGTERM exits at once, also with 0.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    raise SystemExit(main())

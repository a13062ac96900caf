"""`python -m app`: serve `app.main:app` with uvicorn, using the service's own access log.

uvicorn's access log is switched off: `app.middleware.RequestContext` writes one line per
request with the request ID, duration and proxied client address instead.

SIGTERM (or Ctrl-C) shuts down gracefully: no new connections, requests in flight get up to
--timeout-graceful-shutdown seconds to finish, then the lifespan releases the worker pool and
models, and the process exits 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError

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
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from --forwarded-allow-ips",
    )
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    parser.add_argument(
        "--timeout-graceful-shutdown",
        type=int,
        default=25,
        help="seconds requests in flight get to finish after SIGTERM (default: 25, as in the "
        "container, under the 30 s stop grace period)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        "app.main:app",
        host=args.host,
        port=args.port,
        access_log=False,
        log_level=settings.log_level,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        server_header=False,
        timeout_graceful_shutdown=args.timeout_graceful_shutdown,
    )
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

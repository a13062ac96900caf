"""`python -m app`: serve `app.main:app` with uvicorn, using the service's own access log.

uvicorn's access log is switched off: `app.middleware.RequestContext` writes one line per
request with the request ID, duration and proxied client address instead.
"""

from __future__ import annotations

import argparse
import logging

import uvicorn

from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    settings = Settings()
    parser = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="trust X-Forwarded-* from --forwarded-allow-ips",
    )
    parser.add_argument("--forwarded-allow-ips", default="127.0.0.1")
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
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Container HEALTHCHECK: exit 0 when the service's /healthz answers 2xx (no curl in slim)."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('EMOTION_PORT', '8000')}/healthz"
try:
    with urllib.request.urlopen(url, timeout=4) as response:
        sys.exit(0 if 200 <= response.status < 300 else 1)
except Exception as exc:  # any failure is "unhealthy"; say why in `docker inspect`
    print(f"unhealthy: {url}: {exc}", file=sys.stderr)
    sys.exit(1)

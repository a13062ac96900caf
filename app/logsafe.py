"""Make client-controlled text safe to put in a log line.

Paths, headers and error messages can carry CR/LF (a forged second log line) or ANSI escape
codes (rewriting a terminal); every control character becomes a visible `\\xNN`.
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape(value: object) -> str:
    """`value` as text with CR, LF, ESC and every other control character shown as `\\xNN`."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))

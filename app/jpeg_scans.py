"""Count the scans of a JPEG by walking its marker segments, without decoding anything.

A progressive JPEG may hold thousands of scans; Pillow (libjpeg) decodes each one over the
whole image, so a small file can cost minutes of CPU while passing every size limit. The
walk is linear in the file size and stops as soon as the count passes the cap.
"""

from __future__ import annotations

_SOI = b"\xff\xd8"
_SOS = 0xDA
_EOI = 0xD9
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM and RST0-7 carry no length


def is_jpeg(data: bytes) -> bool:
    return data[:2] == _SOI


def count_scans(data: bytes, cap: int) -> int:
    """Start-of-scan markers in `data`, counted up to `cap + 1` (enough to say "over the cap").

    Malformed structure ends the walk quietly: the decoder reports those errors itself.
    """
    scans, pos, end = 0, 2, len(data)
    while pos + 1 < end:
        if data[pos] != 0xFF:
            pos = data.find(b"\xff", pos)  # garbage between segments: resync on the next marker
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == _EOI:
            break
        if marker in _STANDALONE or marker == 0x00:
            pos += 2
            continue
        if pos + 3 >= end:
            break
        length = (data[pos + 2] << 8) | data[pos + 3]
        pos += 2 + length
        if marker == _SOS:
            scans += 1
            if scans > cap:
                break
            pos = _after_entropy_data(data, pos)
    return scans


def _after_entropy_data(data: bytes, pos: int) -> int:
    """The offset of the first marker after a scan's entropy-coded data.

    Inside that data 0xFF is followed by 0x00 (a stuffed byte) or a restart marker; any other
    byte after 0xFF starts the next segment.
    """
    end = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= end:
            return end
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            pos += 1 if nxt == 0xFF else 2
            continue
        return pos

"""Units of memory and disk, in one place: decimal GB (what disks, GPU datasheets and the hub count in) and binary
GiB (what memory tools such as nvidia-smi and `free` print), one formatter, and one parser for sizes a learner types.

    format_bytes(539e9)         # '539.0 GB (502.0 GiB)'
    format_bytes(539e9, binary=False)   # '539.0 GB'
    parse_bytes("10GB")          # 10_000_000_000  (also "500 MiB", "1.5T", "123456")

Needs nothing but the standard library: `helpers.download` uses it on machines without PyTorch.
"""

from __future__ import annotations

import re

KB = 1000
MB = 1000**2
GB = 1000**3
TB = 1000**4
KiB = 1024
MiB = 1024**2
GiB = 1024**3
TiB = 1024**4

_UNITS = {
    "": 1, "b": 1,
    "k": KB, "kb": KB, "m": MB, "mb": MB, "g": GB, "gb": GB, "t": TB, "tb": TB,
    "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
MAX_SIZE_TEXT = 64  # characters: a size is short; anything longer is refused before it is parsed


def format_bytes(n: float, binary: bool = True) -> str:
    """A size in the unit that reads best, with the binary equivalent beside it from 1 GB up ('539.0 GB (502.0 GiB)').

    binary=False drops the GiB part (progress lines, where the decimal figure is enough)."""
    n = float(n)
    if n < KB:
        return f"{n:,.0f} bytes"
    if n < MB:
        return f"{n / KB:,.1f} kB"
    if n < GB:
        return f"{n / MB:,.1f} MB" + (f" ({n / MiB:,.1f} MiB)" if binary else "")
    if n < TB:
        return f"{n / GB:,.1f} GB" + (f" ({n / GiB:,.1f} GiB)" if binary else "")
    return f"{n / TB:,.2f} TB" + (f" ({n / TiB:,.2f} TiB)" if binary else "")


def parse_bytes(text: str | int, what: str = "size") -> int:
    """Bytes from '10GB', '10 GB', '500MiB', '1.5T' or a plain integer of bytes. Decimal units (k, M, G, T, with or
    without B) are powers of 1000, binary ones (KiB, MiB, GiB, TiB) powers of 1024. Raises ValueError naming the
    accepted forms."""
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{what} must not be negative, got {text}.")
        return text
    raw = str(text)
    match = _SIZE.match(raw) if len(raw) <= MAX_SIZE_TEXT else None
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        shown = raw if len(raw) <= MAX_SIZE_TEXT else raw[:MAX_SIZE_TEXT] + "..."
        raise ValueError(
            f"{what} {shown!r} is not a size: write a number of bytes (10000000000) or a number with a unit "
            "(10GB, 10 GB, 500MiB, 1.5TB; k/M/G/T are powers of 1000, KiB/MiB/GiB/TiB powers of 1024)."
        )
    return int(float(match.group(1)) * _UNITS[unit])


__all__ = ["KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB", "format_bytes", "parse_bytes"]

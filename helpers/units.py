"""Units of memory, disk and speed, in one place: decimal GB (what disks, file sizes and the hub count in) and binary
GiB (what memory chips are built in: a GPU sold as "80 GB" or a "64 GB" DIMM holds 80 or 64 GiB, and nvidia-smi and
`free` print GiB), the rates datasheets give (decimal TB/s, GB/s, TFLOPS), one formatter, and one parser for sizes a
learner types.

    format_bytes(539e9)         # '539.0 GB (502.0 GiB)'
    format_bytes(539e9, binary=False)   # '539.0 GB'
    format_bytes(85.9e9, unit="GB", decimals=1)   # '85.9 GB': one fixed unit, for lines that compare sizes
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
# Rates as datasheets state them: decimal, per second.
TB_PER_S = 1e12
GB_PER_S = 1e9
TFLOPS = 1e12
GFLOPS = 1e9

_UNITS = {
    "": 1, "b": 1,
    "k": KB, "kb": KB, "m": MB, "mb": MB, "g": GB, "gb": GB, "t": TB, "tb": TB,
    "kib": KiB, "mib": MiB, "gib": GiB, "tib": TiB,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
MAX_SIZE_TEXT = 64  # characters: a size is short; anything longer is refused before it is parsed


FIXED_UNITS = {"bytes": 1, "kB": KB, "MB": MB, "GB": GB, "TB": TB, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB}


def format_bytes(n: float, binary: bool = True, *, unit: str | None = None, decimals: int = 1) -> str:
    """A size in the unit that reads best, with the binary equivalent beside it from 1 GB up ('539.0 GB (502.0 GiB)').

    binary=False drops the GiB part (progress lines, where the decimal figure is enough). `unit` ("GB", "GiB", any of
    FIXED_UNITS) prints every size in that one unit with `decimals` decimals and nothing beside it ('85.9 GB'): for
    lines and tables whose sizes are compared with each other."""
    if unit is not None:
        if unit not in FIXED_UNITS:
            raise ValueError(f"unit must be one of {', '.join(FIXED_UNITS)}, not {unit!r}.")
        if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals <= 6:
            raise ValueError(f"decimals must be a whole number from 0 to 6, not {decimals!r}.")
        return f"{float(n) / FIXED_UNITS[unit]:,.{decimals}f} {unit}"
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


__all__ = ["KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB", "TB_PER_S", "GB_PER_S", "TFLOPS", "GFLOPS",
           "FIXED_UNITS",
           "format_bytes", "parse_bytes"]

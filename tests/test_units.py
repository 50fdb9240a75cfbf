"""helpers.units: one byte formatter and one size parser for the whole course."""

from __future__ import annotations

import pytest

from helpers.units import GB, GiB, MiB, format_bytes, parse_bytes


def test_format_bytes_picks_the_unit_and_shows_both_systems():
    assert format_bytes(539.0e9) == "539.0 GB (502.0 GiB)"
    assert format_bytes(539.0e9, binary=False) == "539.0 GB"
    assert format_bytes(512) == "512 bytes"
    assert format_bytes(100_000) == "100.0 kB"
    assert format_bytes(5 * MiB) == "5.2 MB (5.0 MiB)"
    assert format_bytes(2.5e12) == "2.50 TB (2.27 TiB)"


@pytest.mark.parametrize("text, expected", [
    ("10GB", 10 * GB), ("10 GB", 10 * GB), ("10g", 10 * GB), ("1.5TB", 1_500_000_000_000), ("500MiB", 500 * MiB),
    ("2 GiB", 2 * GiB), ("123456", 123456), (4096, 4096), ("  7kB ", 7000),
])
def test_parse_bytes_accepts_numbers_and_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("text", ["ten", "10 GBs", "-5", "1e9", "", "10 parsecs", -1, "9" * 100])
def test_parse_bytes_refuses_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match="number of bytes") if not isinstance(text, int) else pytest.raises(ValueError):
        parse_bytes(text)


def test_format_bytes_in_one_fixed_unit():
    assert format_bytes(85.9e9, unit="GB") == "85.9 GB"
    assert format_bytes(80 * GiB, unit="GiB", decimals=0) == "80 GiB"
    assert format_bytes(1234.5e9, unit="GB", decimals=2) == "1,234.50 GB"
    with pytest.raises(ValueError, match="unit must be one of"):
        format_bytes(1e9, unit="gigabytes")
    with pytest.raises(ValueError, match="decimals"):
        format_bytes(1e9, unit="GB", decimals=-1)

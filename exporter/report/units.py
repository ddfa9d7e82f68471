"""Human units for byte counts (binary prefixes, as ``free -h`` and cAdvisor dashboards use)."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(n: int | float) -> str:
    """``1536`` -> ``"1.5 KiB"``; below 1 KiB the exact count in bytes."""
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    unit = "B"
    for unit in _UNITS:
        value /= 1024.0
        if value < 1024.0:
            break
    return f"{value:.1f} {unit}"


def format_percent(ratio: float) -> str:
    return f"{ratio * 100:.1f}%"

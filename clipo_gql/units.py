"""Sizes and durations as people read them, in messages and fields."""

from __future__ import annotations

_SIZE_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def human_size(size: int) -> str:
    """`2 GiB`, `9.8 KiB`, `512 bytes`."""
    for unit, scale in _SIZE_UNITS:
        if size >= scale:
            return f"{size // scale} {unit}" if size % scale == 0 else f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def duration_text(seconds: float) -> str:
    """`HH:MM:SS`, whole seconds: 165.4 -> `00:02:45`."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"

"""Text shared by the ops views: durations as people read them."""

from __future__ import annotations


def format_age(seconds: float | None) -> str:
    """A duration in the largest units that keep it short: 0.2s, 42s, 3m05s, 2h01m."""
    if seconds is None:
        return "?"
    if seconds < 10:
        return f"{seconds:.1f}s" if seconds else "0s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"

"""Small line charts as inline SVG, drawn on the server (no script, no inline style)."""
from __future__ import annotations

from dataclasses import dataclass

WIDTH = 120
HEIGHT = 28
PAD = 2


@dataclass(frozen=True)
class Sparkline:
    """An SVG polyline's points, and the text alternative that says what it shows."""

    points: str
    label: str
    width: int = WIDTH
    height: int = HEIGHT


def sparkline(values: list[float], *, label: str, unit: str = "") -> Sparkline | None:
    """Return a sparkline of the values (oldest first), or None with fewer than two."""
    if len(values) < 2:
        return None
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = (WIDTH - 2 * PAD) / (len(values) - 1)
    points = " ".join(
        f"{PAD + index * step:.1f},{HEIGHT - PAD - (value - low) / span * (HEIGHT - 2 * PAD):.1f}"
        for index, value in enumerate(values)
    )
    suffix = f" {unit}" if unit else ""
    text = f"{label}: from {_fmt(values[0])} to {_fmt(values[-1])}{suffix}, lowest {_fmt(low)}, highest {_fmt(high)}"
    return Sparkline(points=points, label=text)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) or abs(value) >= 100 else f"{value:,.1f}"

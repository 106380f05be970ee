"""Bar charts as geometry for server-drawn SVG (no script, no inline style: the template
draws rectangles and lines with classes from admin.css)."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH, HEIGHT = 640, 170
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 10, 24  # room for the axis labels


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str  # the day
    value: str  # shown as the bar's tooltip (<title>)


@dataclass(frozen=True)
class Line:
    y: float
    label: str
    kind: str  # warn | pause: the CSS class


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    bars: tuple[Bar, ...]
    lines: tuple[Line, ...]
    ticks: tuple[Tick, ...]
    top_label: str  # the value at the top of the scale
    baseline: float
    left: int
    total: str


def bar_chart(title: str, points: list[tuple[str, float]], *, thresholds: tuple[tuple[str, float, str], ...] = (),
              percent: bool = False) -> Chart:
    """``points``: (day label, value) oldest first; ``thresholds``: (label, value, kind) lines.
    The scale reaches the largest bar or threshold, so a threshold is always in view."""
    fmt = _percent if percent else _count
    top = max([v for _, v in points] + [t for _, t, _ in thresholds] + [0.0]) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(points), 1)

    def y_of(value: float) -> float:
        return TOP + plot_h * (1 - value / top)

    bars = tuple(Bar(round(LEFT + i * step + 1, 2), round(y_of(v), 2), round(max(step - 2, 1), 2),
                     round(plot_h * v / top, 2), day, f"{day}: {fmt(v)}") for i, (day, v) in enumerate(points))
    lines = tuple(Line(round(y_of(value), 2), f"{label} {fmt(value)}", kind) for label, value, kind in thresholds)
    last = len(points) - 1  # a label every 7 days, counted back from the newest
    ticks = tuple(Tick(round(LEFT + i * step + step / 2, 2), day[5:]) for i, (day, _) in enumerate(points)
                  if (last - i) % 7 == 0)
    total = "" if percent else f"{sum(v for _, v in points):.0f} in {len(points)} days"
    return Chart(title, WIDTH, HEIGHT, bars, lines, ticks, fmt(top), TOP + plot_h, LEFT, total)


def _percent(value: float) -> str:
    return f"{value:.2%}"


def _count(value: float) -> str:
    return f"{value:.0f}"

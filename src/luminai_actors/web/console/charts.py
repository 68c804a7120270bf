"""Chart geometry for the analytics page: numbers in, SVG rectangles and labels out (drawn by a template, so
the charts need no script, no library and no CDN, and read the same with JavaScript off).

Sizes are in the SVG's own units; the template scales the SVG to its container's width.
"""

from __future__ import annotations

from dataclasses import dataclass

from luminai_actors.services.console_analytics import DayCount

DAY_WIDTH, DAY_HEIGHT, DAY_BOTTOM, DAY_TOP = 640, 220, 24, 12
BAR_LABEL, BAR_WIDTH, BAR_ROW = 150, 640, 26


@dataclass(frozen=True, slots=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    css: str
    title: str


@dataclass(frozen=True, slots=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "middle"


@dataclass(frozen=True, slots=True)
class Chart:
    width: int
    height: int
    rects: list[Rect]
    labels: list[Label]
    gridlines: list[Label]  # y of the line and its value
    empty: bool


def _nice_max(value: int) -> int:
    """The smallest 4 x (1, 2 or 5 x 10^k) at least `value`: four gridlines at round numbers."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if 4 * step * factor >= value:
                return 4 * step * factor
        step *= 10


def messages_per_day(series: list[DayCount]) -> Chart:
    """Grouped columns per day: inbound (from leads) beside outbound (replies)."""
    top = _nice_max(max((max(d.inbound, d.outbound) for d in series), default=0))
    plot_h = DAY_HEIGHT - DAY_BOTTOM - DAY_TOP
    left = 36
    slot = (DAY_WIDTH - left - 24) / max(1, len(series))  # room on the right for the last date
    bar = max(1.0, slot * 0.4)
    rects: list[Rect] = []
    labels: list[Label] = []
    every = max(1, len(series) // 6)
    for index, day in enumerate(series):
        x = left + index * slot + slot * 0.1
        for offset, count, css, word in (
            (0.0, day.inbound, "in", "from leads"),
            (bar, day.outbound, "out", "replies"),
        ):
            height = plot_h * count / top
            rects.append(
                Rect(
                    round(x + offset, 1),
                    round(DAY_TOP + plot_h - height, 1),
                    round(bar, 1),
                    round(height, 1),
                    css,
                    f"{day.day.isoformat()}: {count} {word}",
                )
            )
        if index % every == 0 or index == len(series) - 1:
            labels.append(Label(round(x + bar, 1), DAY_HEIGHT - 6, day.day.strftime("%d %b")))
    grid = [
        Label(left, round(DAY_TOP + plot_h - plot_h * i / 4, 1), str(top * i // 4), "end") for i in range(5)
    ]
    empty = all(d.inbound == 0 and d.outbound == 0 for d in series)
    return Chart(DAY_WIDTH, DAY_HEIGHT, rects, labels, grid, empty)


def horizontal_bars(items: list[tuple[str, int]], css: str = "bar") -> Chart:
    """One labelled bar per item (TreeFlow steps in order, or outcomes), scaled to the largest."""
    top = max((value for _, value in items), default=0) or 1
    span = BAR_WIDTH - BAR_LABEL - 48
    rects = []
    labels = []
    for index, (name, value) in enumerate(items):
        y = index * BAR_ROW + 4
        width = span * value / top
        rects.append(Rect(BAR_LABEL, y, round(max(width, 1.0), 1), BAR_ROW - 8, css, f"{name}: {value}"))
        labels.append(Label(BAR_LABEL - 8, y + BAR_ROW / 2, name[:22], "end"))
        labels.append(Label(round(BAR_LABEL + width + 6, 1), y + BAR_ROW / 2, str(value), "start"))
    height = max(BAR_ROW, len(items) * BAR_ROW + 8)
    return Chart(BAR_WIDTH, height, rects, labels, [], not items)

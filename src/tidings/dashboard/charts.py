"""Charts drawn on the server as SVG: no script and no library in the browser, nothing fetched.

:func:`line_chart` turns counts per time bucket into an ``<svg>``: a frame with a few labelled
ticks on each axis, one polyline per series and one ``<circle>`` per data point. Each circle
carries what it shows (``data-series``, ``data-bucket``, ``data-value``) and a ``<title>`` the
browser shows as a tooltip, so a test (or a curious person) can read the figures back. Colours
come from the style sheet through classes (``series-<key>``): the content security policy allows
no inline ``style``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH = 720
HEIGHT = 260
LEFT, RIGHT, TOP, BOTTOM = 52, 16, 14, 34
"""Margins around the plot area, for the tick labels."""
MAX_X_TICKS = 6
EMPTY = "No messages in this range"


@dataclass(frozen=True)
class Bucket:
    """One point on the time axis: ``key`` as the data says it (``2026-11-30T13:00``), ``label``
    as the axis shows it (``13:00``)."""

    key: str
    label: str


@dataclass(frozen=True)
class Series:
    """One line: a value per bucket, in the buckets' order. ``key`` names it in the markup
    (``data-series``, the class ``series-<key>``), ``label`` in words."""

    key: str
    label: str
    values: Sequence[int]


@dataclass(frozen=True)
class Frame:
    """The plot area inside the chart, in SVG units."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


def _attr(value: object) -> str:
    return escape(str(value), quote=True)


def _num(value: float) -> str:
    """A coordinate, short: two decimals at most, no trailing zeros."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _class_key(key: str) -> str:
    """``key`` made safe for a class name."""
    return re.sub(r"[^a-z0-9_-]", "-", key.lower()) or "series"


def nice_top(largest: int) -> tuple[int, int]:
    """The top of the value axis and the step between its ticks, for values up to ``largest``:
    a step of 1, 2 or 5 times a power of ten, so the axis has two to five ticks above zero and
    its top is a whole number of steps at or above ``largest`` (1 and 1 for nothing above zero)."""
    if largest <= 0:
        return 1, 1
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor * 5 >= largest:
                size = step * factor
                return -(-largest // size) * size, size
        step *= 10


def x_ticks(count: int) -> list[int]:
    """The indexes of the buckets whose labels the time axis shows: at most :data:`MAX_X_TICKS`,
    evenly spaced, starting with the first."""
    if count <= 0:
        return []
    every = -(-count // MAX_X_TICKS)
    return list(range(0, count, every))


def frame(width: int = WIDTH, height: int = HEIGHT) -> Frame:
    return Frame(LEFT, TOP, width - RIGHT, height - BOTTOM)


def place(index: int, count: int, value: int, top: int, area: Frame) -> tuple[float, float]:
    """Where the ``index``-th of ``count`` buckets with ``value`` goes, on an axis from 0 to
    ``top``: buckets spread from the left edge to the right one (a lone bucket in the middle),
    values from the bottom edge up."""
    x = area.left + area.width / 2 if count == 1 else area.left + area.width * index / (count - 1)
    y = area.bottom - area.height * min(max(value, 0), top) / top
    return x, y


def line_chart(
    buckets: Sequence[Bucket],
    series: Sequence[Series],
    *,
    title: str,
    width: int = WIDTH,
    height: int = HEIGHT,
    empty: str = EMPTY,
) -> Markup:
    """The SVG markup of a line chart of ``series`` over ``buckets`` (each series has a value
    per bucket). With no bucket or no series it is a frame that says ``empty``; values of zero
    are drawn on the bottom edge. Every text is escaped."""
    for line in series:
        if len(line.values) != len(buckets):
            raise ValueError(f"series {line.key!r} has {len(line.values)} values for {len(buckets)} buckets")
    area = frame(width, height)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="line-chart" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="{_attr(title)}">',
        f"<title>{escape(title)}</title>",
        f'<rect class="plot-area" x="{area.left}" y="{area.top}" width="{_num(area.width)}" '
        f'height="{_num(area.height)}"/>',
    ]
    if not buckets or not series:
        parts.append(
            f'<text class="empty" x="{_num(area.left + area.width / 2)}" '
            f'y="{_num(area.top + area.height / 2)}" text-anchor="middle">{escape(empty)}</text>'
        )
        parts.append("</svg>")
        return Markup("".join(parts))

    top, step = nice_top(max(max(line.values, default=0) for line in series))
    parts.append('<g class="axis y-axis">')
    for tick in range(0, top + 1, step):
        _, y = place(0, 1, tick, top, area)
        parts.append(
            f'<line class="grid" x1="{area.left}" x2="{area.right}" y1="{_num(y)}" y2="{_num(y)}"/>'
            f'<text x="{area.left - 6}" y="{_num(y + 4)}" text-anchor="end">{tick}</text>'
        )
    parts.append("</g>")
    parts.append('<g class="axis x-axis">')
    for index in x_ticks(len(buckets)):
        x, _ = place(index, len(buckets), 0, top, area)
        parts.append(
            f'<line class="tick" x1="{_num(x)}" x2="{_num(x)}" y1="{area.bottom}" y2="{area.bottom + 5}"/>'
            f'<text x="{_num(x)}" y="{area.bottom + 20}" text-anchor="middle">'
            f"{escape(buckets[index].label)}</text>"
        )
    parts.append("</g>")

    for line in series:
        points = [place(i, len(buckets), v, top, area) for i, v in enumerate(line.values)]
        name = _class_key(line.key)
        parts.append(f'<g class="series series-{name}" data-series="{_attr(line.key)}">')
        if len(points) > 1:
            path = " ".join(f"{_num(x)},{_num(y)}" for x, y in points)
            parts.append(f'<polyline points="{path}"/>')
        for bucket, value, (x, y) in zip(buckets, line.values, points, strict=True):
            parts.append(
                f'<circle cx="{_num(x)}" cy="{_num(y)}" r="3" data-series="{_attr(line.key)}" '
                f'data-bucket="{_attr(bucket.key)}" data-value="{int(value)}">'
                f"<title>{escape(line.label)}, {escape(bucket.key)}: {int(value)}</title></circle>"
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))

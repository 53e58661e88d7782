"""The dashboard's SVG line charts: well-formed, escaped, every point where its value says, and
something sensible for no data, one bucket and nothing but zeros."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidings.dashboard.charts import EMPTY, Bucket, Series, line_chart, nice_top
from tidings.dashboard.overview import Span, buckets

SVG = "{http://www.w3.org/2000/svg}"
ROUNDING = 0.02
"""Coordinates are written to two decimals."""


def parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)


def hours(n: int) -> list[Bucket]:
    return [Bucket(f"2026-11-30T{h:02d}:00", f"{h:02d}:00") for h in range(n)]


def circles(svg: ET.Element, series: str | None = None) -> list[ET.Element]:
    found = svg.iter(f"{SVG}circle")
    return [c for c in found if series is None or c.get("data-series") == series]


def plot_area(svg: ET.Element) -> tuple[float, float, float, float]:
    rect = next(r for r in svg.iter(f"{SVG}rect") if r.get("class") == "plot-area")
    left, top = float(rect.get("x", "")), float(rect.get("y", ""))
    return left, top, left + float(rect.get("width", "")), top + float(rect.get("height", ""))


def test_each_value_is_a_point_in_bucket_order_scaled_to_the_axis() -> None:
    svg = parse(
        line_chart(
            hours(4),
            [Series("delivered", "delivered", [0, 5, 10, 2]), Series("failed", "failed", [1, 0, 0, 3])],
            title="Per hour",
        )
    )
    left, top, right, bottom = plot_area(svg)
    points = circles(svg, "delivered")
    assert [c.get("data-bucket") for c in points] == [f"2026-11-30T{h:02d}:00" for h in range(4)]
    assert [int(c.get("data-value", "")) for c in points] == [0, 5, 10, 2]
    xs = [float(c.get("cx", "")) for c in points]
    ys = [float(c.get("cy", "")) for c in points]
    # Left to right, from one edge to the other, evenly.
    assert xs[0] == pytest.approx(left) and xs[-1] == pytest.approx(right)
    assert xs == sorted(xs) and xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=ROUNDING)
    # Zero on the bottom edge, and heights in proportion to the values (axis top: 10).
    assert ys[0] == pytest.approx(bottom)
    assert (bottom - ys[1]) * 2 == pytest.approx(bottom - ys[2], abs=ROUNDING)
    assert bottom - ys[2] == pytest.approx((bottom - top) * 10 / nice_top(10)[0], abs=ROUNDING)
    # One line per series through its points, and a tooltip on each point.
    lines = list(svg.iter(f"{SVG}polyline"))
    assert len(lines) == 2
    first = lines[0].get("points", "").split()
    assert [tuple(map(float, p.split(","))) for p in first] == list(zip(xs, ys, strict=True))
    assert points[2].findtext(f"{SVG}title") == "delivered, 2026-11-30T02:00: 10"
    assert [int(c.get("data-value", "")) for c in circles(svg, "failed")] == [1, 0, 0, 3]


def test_the_value_axis_has_a_few_round_labelled_ticks_above_the_largest_value() -> None:
    assert nice_top(0) == (1, 1)
    assert nice_top(3) == (3, 1)
    assert nice_top(7) == (8, 2)
    assert nice_top(10) == (10, 2)
    assert nice_top(12_345) == (15_000, 5_000)
    svg = parse(line_chart(hours(3), [Series("sent", "sent", [0, 37, 12])], title="t"))
    y_axis = next(g for g in svg.iter(f"{SVG}g") if "y-axis" in (g.get("class") or ""))
    assert [t.text for t in y_axis.iter(f"{SVG}text")] == ["0", "10", "20", "30", "40"]


def test_a_long_range_labels_at_most_six_buckets_on_the_time_axis() -> None:
    svg = parse(line_chart(hours(24), [Series("sent", "sent", [1] * 24)], title="t"))
    x_axis = next(g for g in svg.iter(f"{SVG}g") if "x-axis" in (g.get("class") or ""))
    labels = [t.text for t in x_axis.iter(f"{SVG}text")]
    assert labels == ["00:00", "04:00", "08:00", "12:00", "16:00", "20:00"]
    assert len(circles(svg)) == 24


def test_no_data_is_a_chart_that_says_so() -> None:
    for chart in (
        line_chart([], [Series("sent", "sent", [])], title="Nothing"),
        line_chart(hours(3), [], title="Nothing"),
    ):
        svg = parse(chart)
        assert circles(svg) == []
        assert EMPTY in "".join(svg.itertext())


def test_one_bucket_is_one_point_in_the_middle_and_no_line() -> None:
    svg = parse(line_chart(hours(1), [Series("delivered", "delivered", [4])], title="t"))
    left, _, right, _ = plot_area(svg)
    [point] = circles(svg)
    assert float(point.get("cx", "")) == pytest.approx((left + right) / 2)
    assert list(svg.iter(f"{SVG}polyline")) == []


def test_all_zeros_lie_on_the_bottom_edge() -> None:
    svg = parse(line_chart(hours(5), [Series("failed", "failed", [0] * 5)], title="t"))
    _, _, _, bottom = plot_area(svg)
    assert [float(c.get("cy", "")) for c in circles(svg)] == [pytest.approx(bottom)] * 5
    assert {c.get("data-value") for c in circles(svg)} == {"0"}


def test_every_text_is_escaped() -> None:
    hostile = '<script>alert("x")</script> & "quotes"'
    chart = line_chart(
        [Bucket(hostile, hostile)], [Series('a"b<c', hostile, [1])], title=hostile, empty=hostile
    )
    assert "<script>" not in chart
    svg = parse(chart)
    assert svg.findtext(f"{SVG}title") == hostile
    [point] = circles(svg)
    assert point.get("data-bucket") == hostile
    assert point.get("data-series") == 'a"b<c'
    assert point.findtext(f"{SVG}title") == f"{hostile}, {hostile}: 1"
    group = next(g for g in svg.iter(f"{SVG}g") if g.get("data-series"))
    assert group.get("class") == "series series-a-b-c"


def test_a_series_must_have_a_value_per_bucket() -> None:
    with pytest.raises(ValueError, match="2 values for 3 buckets"):
        line_chart(hours(3), [Series("sent", "sent", [1, 2])], title="t")


@given(
    st.integers(min_value=1, max_value=60).flatmap(
        lambda n: st.lists(
            st.lists(st.integers(min_value=0, max_value=10**9), min_size=n, max_size=n),
            min_size=1,
            max_size=3,
        )
    )
)
def test_every_point_is_inside_the_plot_area_whatever_the_counts(values: list[list[int]]) -> None:
    count = len(values[0])
    series = [Series(f"s{i}", f"series {i}", v) for i, v in enumerate(values)]
    svg = parse(line_chart([Bucket(str(i), str(i)) for i in range(count)], series, title="t"))
    left, top, right, bottom = plot_area(svg)
    points = circles(svg)
    assert len(points) == count * len(values)
    largest = max(max(v) for v in values)
    for point in points:
        x, y = float(point.get("cx", "")), float(point.get("cy", ""))
        assert left <= x <= right
        assert top <= y <= bottom
        # The largest value reaches at least half way up: the axis is not needlessly tall.
        if int(point.get("data-value", "")) == largest and largest > 0:
            assert bottom - y >= (bottom - top) / 2 - ROUNDING


def test_the_overviews_buckets_fill_every_hour_or_day_of_the_range() -> None:
    day = Span("today", datetime(2026, 11, 30), datetime(2026, 11, 30, 13, 20))
    hourly = buckets(day)
    assert [b.key for b in hourly] == [f"2026-11-30T{h:02d}:00" for h in range(14)]
    assert hourly[13].label == "13:00"
    two_days = buckets(Span("24h", datetime(2026, 11, 29, 13, 20), datetime(2026, 11, 30, 13, 20)))
    assert len(two_days) == 25 and two_days[0].label == "29 Nov 13:00"
    week = buckets(Span("7d", datetime(2026, 11, 23, 13, 20), datetime(2026, 11, 30, 13, 20)))
    assert [b.key for b in week] == [f"2026-11-{d}" for d in range(23, 31)]
    assert week[-1].label == "30 Nov"

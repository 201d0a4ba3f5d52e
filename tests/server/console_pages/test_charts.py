"""The SVG charts: accessible names, escaped labels, scales, and the colours as CSS classes."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from aegis_server.console import charts
from aegis_server.console.charts import Series, horizontal_bars, nice_ceiling, stacked_bars, vertical_bars

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '<script>alert("x")</script>&"\''
OUTCOMES = [Series("ALLOW", "Allow", "chart-allow"), Series("DENY", "Deny", "chart-deny")]


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(markup)  # well-formed XML, or this raises


def test_stacked_bars_are_an_image_with_a_title_and_a_legend() -> None:
    svg = _parse(
        stacked_bars(
            "outcomes",
            "Decisions per hour",
            ["10:00", "11:00"],
            OUTCOMES,
            [{"ALLOW": 3, "DENY": 1}, {"DENY": 2}],
            summary="6 decisions",
        )
    )
    assert svg.get("role") == "img"
    assert svg.get("aria-label") == "Decisions per hour. 6 decisions"
    assert svg.findtext(f"{SVG}title") == "Decisions per hour"
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert {"Allow", "Deny", "10:00", "11:00"} <= set(texts)
    bars = [r for r in svg.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    assert [(r.get("class"), r.findtext(f"{SVG}title")) for r in bars] == [
        ("chart-allow", "10:00: 3 Allow"),
        ("chart-deny", "10:00: 1 Deny"),
        ("chart-deny", "11:00: 2 Deny"),
    ]
    # the first bar holds 4 of an axis of 4: the allow part is 3/4 of the plot, stacked under the deny part
    assert [t.text for t in svg.iter(f"{SVG}text")][:3] == ["0", "2", "4"]  # the axis
    allow, deny = bars[0], bars[1]
    assert float(allow.get("height", 0)) == pytest.approx(180 * 3 / 4, abs=0.1)
    assert float(deny.get("y", 0)) + float(deny.get("height", 0)) == pytest.approx(float(allow.get("y", 0)), abs=0.2)


def test_every_label_is_escaped() -> None:
    charts = [
        stacked_bars("a", EVIL, [EVIL], [Series(EVIL, EVIL, "chart-allow")], [{EVIL: 1}], summary=EVIL),
        vertical_bars("b", EVIL, [EVIL], [1], summary=EVIL),
        horizontal_bars("c", EVIL, [EVIL], [1], summary=EVIL),
    ]
    for chart in charts:
        assert "<script" not in chart
        svg = _parse(chart)
        assert svg.findtext(f"{SVG}title") == EVIL  # what a screen reader hears is the text itself
        assert EVIL in (svg.get("aria-label") or "")


def test_long_names_are_cut_in_the_picture_but_whole_in_the_tooltip() -> None:
    name = "capability." + "x" * 100
    svg = _parse(horizontal_bars("top", "Top capabilities", [name], [7]))
    assert next(t.text for t in svg.iter(f"{SVG}text")) == name[:31] + "…"
    assert [r.findtext(f"{SVG}title") for r in svg.iter(f"{SVG}rect")] == [f"{name}: 7"]


def test_an_empty_top_list_says_so() -> None:
    svg = _parse(horizontal_bars("top", "Top actors", [], []))
    assert [t.text for t in svg.iter(f"{SVG}text")] == ["No decisions in this window."]


def test_vertical_bars_write_each_count() -> None:
    svg = _parse(vertical_bars("risk", "Risk", ["0.0–0.1", "0.1–0.2"], [0, 4]))
    texts = [t.text for t in svg.iter(f"{SVG}text")]
    assert texts[-4:] == ["0", "0.0–0.1", "4", "0.1–0.2"]
    assert len([r for r in svg.iter(f"{SVG}rect")]) == 1  # no bar for a zero


def test_mismatched_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        stacked_bars("a", "t", ["x"], OUTCOMES, [])
    with pytest.raises(ValueError):
        vertical_bars("a", "t", ["x"], [])
    with pytest.raises(ValueError):
        horizontal_bars("a", "t", [], [1])


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1), (1, 1), (3, 4), (4.2, 6), (9, 10), (11, 20), (20, 20), (21, 50), (999, 1000), (1001, 2000)],
)
def test_nice_ceiling(value: float, top: float) -> None:
    assert nice_ceiling(value) == top


CHART_STYLE = (Path(charts.__file__).parent / "static" / "charts.css").read_text(encoding="utf-8")


def test_the_style_defines_each_colour_for_light_and_dark() -> None:
    light, dark = CHART_STYLE.split("prefers-color-scheme: dark")
    for name in ("allow", "deny", "escalate", "confirm", "bar", "text", "grid"):
        assert f"--chart-{name}:" in light and f"--chart-{name}:" in dark
    for css_class in re.findall(r"\.(chart-[a-z]+) \{ fill: var\(--(chart-[a-z]+)\)", CHART_STYLE):
        assert css_class[0] == css_class[1]

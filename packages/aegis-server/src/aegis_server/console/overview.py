"""`/console/overview` (scope governance:read): the decisions of the last 24 hours, 7 days or 30 days, as
charts (`charts.py`) with their data tables: outcomes over time, the risk distribution, the top
capabilities and actors, review latency and expiries. The numbers come from `Store.statistics`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from markupsafe import Markup

from aegis_server.console.charts import Series, horizontal_bars, stacked_bars, vertical_bars
from aegis_server.console.rendering import render
from aegis_server.console.sessions import ConsoleUser, now_of, signed_in
from aegis_server.security import SCOPE_READ
from aegis_server.store import Store
from aegis_server.store.statistics import RISK_BUCKETS, BucketSize, Count, Overview

__all__ = ["OUTCOME_SERIES", "WINDOWS", "Window", "format_duration", "overview_page", "router"]

router = APIRouter()


@dataclass(frozen=True)
class Window:
    """A choice of the overview's window: its query value, its length, its time buckets and its name."""

    value: str
    length: timedelta
    bucket_size: BucketSize
    label: str


WINDOWS: dict[str, Window] = {
    window.value: window
    for window in (
        Window("24h", timedelta(hours=24), "hour", "Last 24 hours"),
        Window("7d", timedelta(days=7), "day", "Last 7 days"),
        Window("30d", timedelta(days=30), "day", "Last 30 days"),
    )
}
DEFAULT_WINDOW = "24h"

OUTCOME_SERIES = (
    Series("ALLOW", "Allow", "chart-allow"),
    Series("DENY", "Deny", "chart-deny"),
    Series("ESCALATE", "Escalate", "chart-escalate"),
    Series("REQUIRE_CONFIRMATION", "Require confirmation", "chart-confirm"),
)
_RISK_LABELS = tuple(f"{index / RISK_BUCKETS:.1f}–{(index + 1) / RISK_BUCKETS:.1f}" for index in range(RISK_BUCKETS))


def format_duration(seconds: float | None) -> str:
    """A latency for people: "42.5 s", "3 min 20 s", "2 h 5 min", "1 d 3 h"; "—" for none."""
    if seconds is None:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        minutes, rest = divmod(whole, 60)
        return f"{minutes} min {rest} s" if rest else f"{minutes} min"
    if whole < 86400:
        hours, rest = divmod(whole, 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    days, rest = divmod(whole, 86400)
    return f"{days} d {rest // 3600} h" if rest >= 3600 else f"{days} d"


def _bucket_label(start: datetime, size: BucketSize) -> tuple[str, str]:
    """The short label of a time bucket (on the axis) and its full one (in the table)."""
    if size == "hour":
        return start.strftime("%H:00"), start.strftime("%Y-%m-%d %H:00 UTC")
    return start.strftime("%b %d"), start.strftime("%Y-%m-%d UTC")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _outcomes_view(overview: Overview) -> dict[str, Any]:
    labels = [_bucket_label(bucket.start, overview.bucket_size) for bucket in overview.outcomes]
    totals = {s.key: sum(bucket.counts.get(s.key, 0) for bucket in overview.outcomes) for s in OUTCOME_SERIES}
    summary = f"{_plural(overview.total, 'decision')}: " + ", ".join(
        f"{totals[s.key]} {s.label.lower()}" for s in OUTCOME_SERIES
    )
    per = "hour" if overview.bucket_size == "hour" else "day"
    chart = stacked_bars(
        "chart-outcomes",
        f"Decisions per {per}, by outcome",
        [short for short, _ in labels],
        OUTCOME_SERIES,
        [bucket.counts for bucket in overview.outcomes],
        summary=summary,
    )
    rows = [
        {"label": full, "counts": [bucket.counts.get(s.key, 0) for s in OUTCOME_SERIES], "total": bucket.total}
        for (_, full), bucket in zip(labels, overview.outcomes, strict=True)
    ]
    return {"chart": chart, "rows": rows, "totals": [totals[s.key] for s in OUTCOME_SERIES], "summary": summary}


def _top_view(chart_id: str, title: str, counts: list[Count] | tuple[Count, ...]) -> dict[str, Any]:
    names = [count.name for count in counts]
    values = [count.count for count in counts]
    summary = "; ".join(f"{count.name}: {count.count}" for count in counts) or "no decisions"
    return {"chart": horizontal_bars(chart_id, title, names, values, summary=summary), "rows": counts}


def _view(overview: Overview) -> dict[str, Any]:
    risk_summary = ", ".join(f"{label}: {count}" for label, count in zip(_RISK_LABELS, overview.risk, strict=True))
    risk_chart: Markup = vertical_bars(
        "chart-risk", "Risk score distribution", _RISK_LABELS, list(overview.risk), summary=risk_summary
    )
    latency = overview.review_latency
    return {
        "outcomes": _outcomes_view(overview),
        "risk": {"chart": risk_chart, "rows": list(zip(_RISK_LABELS, overview.risk, strict=True))},
        "capabilities": _top_view("chart-capabilities", "Top capabilities", list(overview.top_capabilities)),
        "actors": _top_view("chart-actors", "Top actors", list(overview.top_actors)),
        "latency": {
            "resolved": latency.resolved,
            "median": format_duration(latency.median_seconds),
            "p90": format_duration(latency.p90_seconds),
        },
    }


@router.get("/overview", response_class=HTMLResponse)
async def overview_page(
    request: Request,
    user: Annotated[ConsoleUser, Depends(signed_in(SCOPE_READ))],
    window: str = DEFAULT_WINDOW,
) -> HTMLResponse:
    chosen = WINDOWS.get(window or DEFAULT_WINDOW)
    context: dict[str, Any] = {"windows": list(WINDOWS.values()), "outcome_series": OUTCOME_SERIES}
    if chosen is None:
        problem = f"Unknown window {window[:40]!r}: choose one of {', '.join(WINDOWS)} (e.g. ?window=7d)."
        return render(
            request, "overview.html", {**context, "window": None, "problem": problem}, user=user, status_code=400
        )
    until = now_of(request)
    store: Store = request.app.state.store
    overview = await store.statistics.overview(until - chosen.length, until, chosen.bucket_size)
    context.update(window=chosen, problem=None, overview=overview, **_view(overview))
    return render(request, "overview.html", context, user=user)

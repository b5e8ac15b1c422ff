"""A project's numbers (counts, sizes, posts per hour and per day) and their bar charts.

The numbers come from a handful of small queries; the per-hour and per-day
buckets group on text prefixes of ``_received`` (``2026-11-21T08`` is an hour,
``2026-11-21`` a day), so no date parsing happens in SQL. The charts are
inline SVG drawn here, on the server: no JavaScript library, and they print.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from datasette.utils import format_bytes
from markupsafe import Markup, escape

from ..store.schema import database_bytes

if TYPE_CHECKING:
    from datasette.database import Database

HOURS = 48
DAYS = 28
TOP_CONTENT_TYPES = 10

# A bucket's key is the first characters of an ISO time: its hour, or its day.
_HOUR_KEY, _DAY_KEY = 13, 10

_CONTENT_TYPE_SQL = """
select lower(trim(substr(_content_type, 1, instr(_content_type || ';', ';') - 1))) as content_type,
       count(*) as records
from records group by 1 order by records desc, content_type limit ?
"""
_BUCKETS_SQL = """
select substr(_received, 1, ?) as bucket, count(*) as records, coalesce(sum(_size), 0) as bytes
from records where _received >= ? group by bucket
"""


@dataclass(frozen=True)
class Bar:
    """One bar of a chart: its value and the words its tooltip says."""

    value: int
    label: str


def hour_starts(now: datetime, count: int = HOURS) -> list[datetime]:
    """The starts of the last ``count`` hours, oldest first, the current hour last."""
    current = now.replace(minute=0, second=0, microsecond=0)
    return [current - timedelta(hours=n) for n in range(count - 1, -1, -1)]


def day_starts(now: datetime, count: int = DAYS) -> list[datetime]:
    """The starts of the last ``count`` days (UTC), oldest first, today last."""
    current = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return [current - timedelta(days=n) for n in range(count - 1, -1, -1)]


def iso(moment: datetime) -> str:
    """A bucket start as the same kind of text as ``_received``: ``2026-11-21T08:00:00Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _buckets(db: Database, starts: list[datetime], key_length: int) -> list[dict]:
    """Records and bytes per bucket, every bucket present (zero when nothing was posted)."""
    first = iso(starts[0])
    rows = (await db.execute(_BUCKETS_SQL, [key_length, first])).rows
    found = {row["bucket"]: (row["records"], row["bytes"]) for row in rows}
    buckets = []
    for start in starts:
        records, size = found.get(iso(start)[:key_length], (0, 0))
        buckets.append({"start": iso(start), "records": records, "bytes": size})
    return buckets


async def _scalar(db: Database, sql: str) -> object:
    rows = (await db.execute(sql)).rows
    return rows[0][0] if rows else None


async def project_stats(db: Database, now: datetime | None = None) -> dict:
    """Everything ``/_stats.json`` answers and the project page shows.

    ``last_post`` is the receive time of the last request loaded (record or
    reject): load order is log order, so that is the newest post give or take
    the milliseconds that concurrent requests can swap.
    """
    now = now or datetime.now(UTC)
    last_times = [
        await _scalar(db, f"select _received from {table} order by _id desc limit 1")
        for table in ("records", "rejects")
    ]
    content_types = (await db.execute(_CONTENT_TYPE_SQL, [TOP_CONTENT_TYPES])).rows
    return {
        "project": db.name,
        "records": await _scalar(db, "select count(*) from records"),
        "rejects": await _scalar(db, "select count(*) from rejects"),
        "database_bytes": database_bytes(Path(db.path)),
        "last_post": max((t for t in last_times if t), default=None),
        "hourly": await _buckets(db, hour_starts(now), _HOUR_KEY),
        "daily": await _buckets(db, day_starts(now), _DAY_KEY),
        "content_types": [dict(row) for row in content_types],
    }


def bar_chart(
    bars: Sequence[Bar], title: str, first: str, last: str, value_format: Callable[[int], str] = str
) -> Markup:
    """An SVG bar chart: one bar per value, the largest value named top left,
    ``first`` and ``last`` under the first and last bars, a tooltip per bar.

    It scales with its container (``viewBox``); colours come from CSS
    (``.st-chart``), so the page's stylesheet decides them.
    """
    width, height, top_pad, bottom_pad = 480, 110, 16, 16
    plot = height - top_pad - bottom_pad
    largest = max((bar.value for bar in bars), default=0)
    slot = width / max(len(bars), 1)
    parts = [
        f'<svg class="st-chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
        f"<title>{escape(title)}</title>",
    ]
    for n, bar in enumerate(bars):
        tall = 0.0 if not largest else max(plot * bar.value / largest, 1.5 if bar.value else 0.0)
        parts.append(
            f'<rect x="{n * slot + 0.5:.1f}" y="{top_pad + plot - tall:.1f}" '
            f'width="{max(slot - 1, 1):.1f}" height="{tall:.1f}"><title>{escape(bar.label)}</title></rect>'
        )
    baseline = top_pad + plot + 0.5
    parts += [
        f'<line x1="0" x2="{width}" y1="{baseline}" y2="{baseline}"/>',
        f'<text x="0" y="11">{escape(title)}: max {escape(value_format(largest))}</text>',
        f'<text x="0" y="{height - 3}">{escape(first)}</text>',
        f'<text x="{width}" y="{height - 3}" text-anchor="end">{escape(last)}</text>',
        "</svg>",
    ]
    return Markup("".join(parts))


def _bucket_label(start: str, hourly: bool) -> str:
    """``2026-11-21T08:00:00Z`` → ``Nov 21 08:00`` (hourly) or ``Nov 21`` (daily)."""
    moment = datetime.strptime(start, "%Y-%m-%dT%H:%M:%SZ")
    return moment.strftime("%b %d %H:%M" if hourly else "%b %d")


def charts(stats: dict) -> dict[str, Markup]:
    """The four charts of the project page: records and bytes, per hour and per day."""
    drawn = {}
    for period, hourly in (("hourly", True), ("daily", False)):
        buckets = stats[period]
        first = _bucket_label(buckets[0]["start"], hourly)
        last = _bucket_label(buckets[-1]["start"], hourly)
        for measure, value_format in (("records", str), ("bytes", format_bytes)):
            bars = [
                Bar(
                    bucket[measure],
                    f"{_bucket_label(bucket['start'], hourly)} UTC: {bucket['records']} records, "
                    f"{format_bytes(bucket['bytes'])}",
                )
                for bucket in buckets
            ]
            title = f"{measure} per {'hour' if hourly else 'day'}"
            drawn[f"{period}_{measure}"] = bar_chart(bars, title, first, last, value_format)
    return drawn

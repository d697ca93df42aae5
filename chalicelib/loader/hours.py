"""The hours of the writes bucket: Firehose delivers objects under `writes/YYYY/MM/DD/HH/` (UTC), and
the reconciler and `replay` walk a range of hours by those prefixes, oldest first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta


def parse_hour(text: str) -> datetime:
    """YYYY-MM-DDTHH (UTC). ValueError if not."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H").replace(tzinfo=UTC)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an hour in the form YYYY-MM-DDTHH") from exc


def hour_prefixes(prefix: str, since: datetime, until: datetime) -> Iterator[str]:
    """One prefix per hour from `since` to `until` (both included), oldest first."""
    hour = _hour(since)
    while hour <= until:
        yield f"{prefix}{hour:%Y/%m/%d/%H}/"
        hour += timedelta(hours=1)


def covering_prefixes(prefix: str, since: datetime, until: datetime) -> Iterator[str]:
    """The fewest prefixes that hold exactly the hours from `since` to `until`, oldest first.

    Whole years, months and days inside the range are listed as one prefix each, so replaying
    months costs a LIST call per page of objects rather than one per hour.
    """
    hour, last = _hour(since), _hour(until)
    while hour <= last:
        for form, start, end in _spans(hour):
            if hour == start and end is not None and end - timedelta(hours=1) <= last:
                yield f"{prefix}{hour:{form}}/"
                hour = end
                break
        else:
            yield f"{prefix}{hour:%Y/%m/%d/%H}/"
            if hour == last:
                return  # (the hour after 9999-12-31T23 does not exist)
            hour += timedelta(hours=1)


def _spans(hour: datetime) -> list[tuple[str, datetime, datetime | None]]:
    """(key format, first hour, first hour after) of the year, month and day holding `hour`."""
    year_start = hour.replace(month=1, day=1, hour=0)
    month_start = hour.replace(day=1, hour=0)
    day_start = hour.replace(hour=0)
    try:
        next_day: datetime | None = day_start + timedelta(days=1)
        next_month: datetime | None = (month_start + timedelta(days=32)).replace(day=1)
        next_year: datetime | None = year_start.replace(year=hour.year + 1)
    except (OverflowError, ValueError):  # the last day of year 9999
        next_day = next_month = next_year = None
    return [("%Y", year_start, next_year), ("%Y/%m", month_start, next_month), ("%Y/%m/%d", day_start, next_day)]


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)

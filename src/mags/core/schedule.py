"""Cron schedules: validation of 5-field expressions and time zones, and their fire times.

A :class:`Schedule` is an expression evaluated in an IANA time zone (UTC by default) by
``croniter``; times go in and out as epoch seconds.  Daylight saving time follows Vixie cron:

* a wall time that does not exist (spring forward) fires at the first minute after the jump
  (``30 2 * * *`` runs at 03:00 that day -- it is not skipped);
* a wall time that happens twice (fall back) fires once for a fixed-time schedule (minute and
  hour fields not starting with ``*``, e.g. ``30 1 * * *``), but in both hours for schedules
  that are meant to tick through the hour (``*/15 * * * *``, ``0 * * * *``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

from mags.errors import ValidationError

DEFAULT_TIMEZONE = "UTC"
MAX_EXPRESSION_CHARS = 255
MAX_TIMEZONE_CHARS = 64

# the nicknames every cron knows; @reboot has no meaning for a server-side schedule
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (label, lowest, highest, names allowed instead of numbers)
_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)
# one list item in the plain syntax: `*`, `N`, `N-M`, each with an optional `/STEP`
_ITEM = re.compile(r"(?P<base>\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:/(?P<step>.*))?")
# extensions croniter understands (L, W, #, ?); croniter itself judges items using them
_EXTENDED = re.compile(r"[LW#?]", re.IGNORECASE)


def _fail(expression: str, problem: str) -> ValidationError:
    return ValidationError(f'cron_expression "{expression}": {problem}')


def _check_fields(expression: str, fields: list[str]) -> None:
    """Range and syntax checks with messages naming the field (croniter's are vague)."""
    for text, (label, lo, hi, names) in zip(fields, _FIELDS, strict=True):
        for item in text.split(","):
            if item == "":
                raise _fail(expression, f"{label} has an empty list item")
            if _EXTENDED.search(item):
                continue
            m = _ITEM.fullmatch(item)
            if m is None:
                raise _fail(expression, f"{label} value {item!r} is not valid")
            step = m["step"]
            if step is not None and (not step.isdigit() or int(step) == 0):
                raise _fail(expression, f"{label} step {step!r} must be a positive integer")
            if m["base"] == "*":
                continue
            for value in m["base"].split("-"):
                if value.isdigit():
                    if not lo <= int(value) <= hi:
                        raise _fail(expression, f"{label} must be {lo}-{hi}")
                elif value.lower() not in names:
                    hint = f" or a name ({names[0]}...{names[-1]})" if names else ""
                    raise _fail(expression, f"{label} value {value!r} must be a number {lo}-{hi}{hint}")


def _normalize(expression: object) -> str:
    """The expression as stored: 5 fields separated by single spaces, or a nickname."""
    if not isinstance(expression, str) or not expression.strip():
        raise ValidationError("cron_expression must be a non-empty string, e.g. '0 */2 * * *'")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ValidationError(f"cron_expression is longer than {MAX_EXPRESSION_CHARS} characters")
    fields = expression.split()
    if len(fields) == 1 and fields[0].startswith("@"):
        nick = fields[0].lower()
        if nick == "@reboot":
            raise _fail(expression, "@reboot is not supported: schedules run on the server's clock")
        if nick not in NICKNAMES:
            raise _fail(expression, f"unknown nickname (use one of {', '.join(NICKNAMES)})")
        return nick
    if len(fields) != 5:
        extra = " (a seconds or year field is not supported)" if len(fields) in (6, 7) else ""
        raise _fail(
            expression,
            f"must have 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}{extra}",
        )
    _check_fields(expression, fields)
    return " ".join(fields)


def parse_timezone(value: object) -> str:
    """An IANA time zone name (``None`` / ``""`` mean UTC); 400 if unknown."""
    if value is None or value == "":
        return DEFAULT_TIMEZONE
    if not isinstance(value, str) or len(value) > MAX_TIMEZONE_CHARS:
        raise ValidationError('timezone must be an IANA time zone name such as "Europe/Berlin" or "UTC"')
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            f'timezone "{value}": unknown time zone (use an IANA name such as "Europe/Berlin" or "UTC")'
        ) from None
    return value


@dataclass(frozen=True)
class Schedule:
    """A validated expression in a time zone; see the module docstring for DST rules."""

    expression: str
    timezone: str = DEFAULT_TIMEZONE

    @property
    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def _cron(self) -> str:
        return NICKNAMES.get(self.expression, self.expression)

    @property
    def fixed_wall_time(self) -> bool:
        """True when minute and hour are fixed (Vixie cron runs those once on fall-back days)."""
        minute, hour = self._cron.split()[:2]
        return not minute.startswith("*") and not hour.startswith("*")

    def _repeat(self, d: datetime) -> bool:
        """Is ``d`` the second occurrence of an ambiguous wall time, to be dropped?"""
        return bool(d.fold) and self.fixed_wall_time and d.replace(fold=0).utcoffset() != d.utcoffset()

    def next_after(self, ts: float) -> float | None:
        """The first fire time strictly after ``ts``; None if the expression never matches."""
        try:
            it = croniter(self._cron, datetime.fromtimestamp(ts, self._tz))
            while True:
                d = it.get_next(datetime)
                if not self._repeat(d):
                    return d.timestamp()
        except CroniterBadDateError:
            return None

    def last_at_or_before(self, ts: float) -> float | None:
        """The latest fire time ``<= ts``; None if there is none."""
        try:
            # croniter's get_prev is strictly before its start; fire times are whole minutes
            it = croniter(self._cron, datetime.fromtimestamp(ts + 1.0, self._tz))
            while True:
                d = it.get_prev(datetime)
                if d.timestamp() <= ts and not self._repeat(d):
                    return d.timestamp()
        except CroniterBadDateError:
            return None

    def fires_between(self, first: float, until: float, cap: int = 1000) -> tuple[int, float | None]:
        """How many fire times lie in ``[first, until]`` (counting stops at ``cap``), and the last one."""
        count, last = 0, None
        t = self.next_after(first - 1.0)
        while t is not None and t < first:
            t = self.next_after(t)
        while t is not None and t <= until:
            count, last = count + 1, t
            if count >= cap:
                return count, self.last_at_or_before(until)
            t = self.next_after(t)
        return count, last


def parse_schedule(expression: object, timezone: object = None, *, now: float | None = None) -> Schedule:
    """Validate an expression and a time zone; 400 with a message saying what is wrong.

    With ``now``, also refuse expressions that never match a date (``0 0 30 2 *``).
    """
    expr = _normalize(expression)
    tz = parse_timezone(timezone)
    try:
        croniter(NICKNAMES.get(expr, expr))
    except CroniterError as exc:
        detail = re.sub(r"^\[.*?\]\s*", "", str(exc)) or "not a valid cron expression"
        raise _fail(str(expression), detail) from None
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # croniter's parser is not airtight
        raise _fail(str(expression), f"not a valid cron expression ({exc})") from None
    schedule = Schedule(expr, tz)
    if now is not None and schedule.next_after(now) is None:
        raise _fail(str(expression), "never matches a date")
    return schedule

"""systemd calendar expressions (a timer's ``OnCalendar=``), checked on the control machine.

``llmhost check`` runs before any host is contacted, and the control machine may have no
systemd, so ``systemd-analyze calendar`` is no help there. This is a strict reading of
systemd.time(7)'s grammar: it accepts a subset of what systemd accepts (a unit test
compares it with ``systemd-analyze calendar`` where that exists) and never an expression
systemd refuses, which would leave the timer without a trigger:

    hourly | daily | weekly | monthly | quarterly | semiannually | yearly | minutely
    [WEEKDAYS] [DATE] [TIME] [TIMEZONE]

    WEEKDAYS  Mon,Wed  Mon..Fri  Sat-Sun           (names or three-letter abbreviations)
    DATE      *-*-*  *-*-01  *-01,07-01  *-02~03    ([*-]MONTH-DAY; `~`: days from the end)
    TIME      03:00  *:00/15  00/2:30:00  9..17:00  (HOUR:MINUTE[:SECOND])
    TIMEZONE  UTC, or a name of the IANA database (Europe/London)

Each component is ``*`` or a list of values, ranges ``a..b`` and repetitions ``a/n`` or
``a..b/n``. Refused although systemd takes them: a fixed year (the timer would stop one
day), doubled spaces, empty list items, and two-digit years.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import cache

SHORTHANDS = frozenset(
    ("minutely", "hourly", "daily", "weekly", "monthly", "quarterly", "semiannually",
     "semi-annually", "yearly", "annually")
)  # fmt: skip
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_VALUE = re.compile(r"(\d{1,2})(?:\.\.(\d{1,2}))?(?:/(\d{1,4}))?")
_SECONDS = re.compile(r"(\d{1,2}(?:\.\d{1,6})?)(?:\.\.(\d{1,2}(?:\.\d{1,6})?))?(?:/(\d{1,4}))?")


class CalendarError(ValueError):
    """Why an expression is not one this module accepts."""


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_calendar(expression: str) -> None:
    """Raise CalendarError saying what is wrong with ``expression``, else return."""
    if expression != expression.strip():
        raise CalendarError("it starts or ends with white space")
    tokens = expression.split(" ")
    if "" in tokens:
        raise CalendarError("it is empty, or has two spaces in a row")
    if len(tokens) > 1 and (tokens[-1].upper() == "UTC" or tokens[-1] in _timezones()):
        tokens = tokens[:-1]  # a time zone ends the expression
    elif "/" in tokens[-1] and not any(c.isdigit() or c in "*:" for c in tokens[-1]):
        raise CalendarError(f"{tokens[-1]!r} is not a time zone this machine knows")
    if len(tokens) == 1 and tokens[0].lower() in SHORTHANDS:
        return
    parts = list(tokens)
    if parts and parts[0][:1].isalpha():
        _weekdays(parts.pop(0))
    if parts and ":" not in parts[0]:
        _date(parts.pop(0))
    if parts and ":" in parts[0]:
        _time(parts.pop(0))
    if parts:
        raise CalendarError(
            f"{parts[0]!r} is out of place: write [WEEKDAYS] [DATE] [TIME] [TIMEZONE], "
            "in that order, each once"
        )


def _weekdays(token: str) -> None:
    def index(name: str) -> int:
        lowered = name.lower()
        for number, day in enumerate(WEEKDAYS):
            if lowered in (day, day[:3]):
                return number
        raise CalendarError(f"{name!r} is not a weekday (Mon, Tue, ... or Monday, ...)")

    for item in token.split(","):
        if not item:
            raise CalendarError(f"{token!r} has an empty weekday between commas")
        bounds = re.split(r"\.\.|-", item)
        if len(bounds) > 2:
            raise CalendarError(f"{item!r} is not a weekday or a range of two")
        if index(bounds[0]) > index(bounds[-1]):
            raise CalendarError(f"{item!r} runs backwards (write Mon..Fri, not Fri..Mon)")


def _date(token: str) -> None:
    reverse = "~" in token
    head, separator, day = token.rpartition("~" if reverse else "-")
    if not separator or not head:
        raise CalendarError(f"{token!r} is not a date ([*-]MONTH-DAY, e.g. *-*-01)")
    fields = head.split("-")
    if len(fields) > 2:
        raise CalendarError(f"{token!r} has too many fields for a date (YEAR-MONTH-DAY)")
    if len(fields) == 2:
        if fields[0] != "*":
            raise CalendarError(
                f"{token!r} fixes the year: the timer would stop when it is over (use *-...)"
            )
        fields = fields[1:]
    _component(fields[0], "month", 1, 12)
    _component(day, "day", 1, 31)


def _time(token: str) -> None:
    fields = token.split(":")
    if len(fields) not in (2, 3):
        raise CalendarError(f"{token!r} is not a time (HOUR:MINUTE[:SECOND], e.g. 03:00)")
    _component(fields[0], "hour", 0, 23)
    _component(fields[1], "minute", 0, 59)
    if len(fields) == 3:
        _component(fields[2], "second", 0, 59, pattern=_SECONDS)


def _component(
    text: str, what: str, low: int, high: int, pattern: re.Pattern[str] = _VALUE
) -> None:
    if text == "*":
        return
    for item in text.split(","):
        match = pattern.fullmatch(item)
        if not match:
            raise CalendarError(
                f"{item!r} is not {_a(what)}: give *, a number, a list (1,15), a range (1..5) "
                "or a repetition (0/15)"
            )
        start, end, step = match.groups()
        for value in (start, end):
            if value is not None and not low <= float(value) < high + 1:
                raise CalendarError(f"{value} is not {_a(what)} ({low}-{high})")
        if end is not None and float(start) > float(end):
            raise CalendarError(f"{item!r} runs backwards")
        if step is not None and not 1 <= int(step) <= high - float(start):
            raise CalendarError(
                f"{item!r} repeats every {int(step)}: give a step of 1 or more that, added to "
                f"the start, is still {_a(what)} (at most {high})"
            )


def _a(what: str) -> str:
    return f"an {what}" if what == "hour" else f"a {what}"

"""OnCalendar expressions checked offline: never one systemd refuses, the usual ones accepted.

Where ``systemd-analyze`` exists the check is compared with it over written and seeded
random expressions: whatever the check accepts, systemd must accept too.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess

import pytest

from llmhost.oncalendar import CalendarError, check_calendar

USUAL = [
    "hourly", "daily", "weekly", "monthly", "Hourly", "quarterly", "semiannually", "yearly",
    "*-*-* *:00:00", "*-*-* 03:00", "*-*-* 03:00:00", "*:0/15", "*:00/30:00", "00/2:00",
    "Mon..Fri *-*-* 09:00", "Mon-Fri 09:00", "Sat,Sun 04:30", "Mon *-*-* 03:00 UTC",
    "*-*-01 00:00", "*-01,07-01 06:00", "*-02~03", "daily Europe/London", "9..17:00",
    "*-*-* 1..3/2:00", "*-*-* 00:00:59.5", "Monday", "03:00",
]  # fmt: skip
REFUSED = [
    ("", "empty"), (" hourly", "white space"), ("*", "not a date"), ("3", "not a date"),
    ("hourly Mon", "'hourly' is not a weekday"), ("Fri..Mon", "runs backwards"),
    ("*-*-* 24:00", "24 is not an hour (0-23)"), ("*-13-01", "13 is not a month"),
    ("*:0/60", "repeats every 60"), ("*-*-* 0/0:00", "repeats every 0"),
    ("03:00 Mon", "out of place"), ("*-*-* 03:00 Mars/Olympus", "not a time zone"),
    ("2026-01-01", "fixes the year"), ("Mon  03:00", "two spaces"), ("*:*/5", "not a minute"),
]  # fmt: skip


@pytest.mark.parametrize("expression", USUAL)
def test_the_usual_schedules_are_accepted(expression):
    check_calendar(expression)


@pytest.mark.parametrize(("expression", "why"), REFUSED)
def test_a_bad_schedule_is_refused_saying_why(expression, why):
    with pytest.raises(CalendarError, match=re.escape(why)):
        check_calendar(expression)


needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed here: nothing to compare the offline check with",
)


def systemd_accepts(expression: str) -> bool:
    done = subprocess.run(
        ["systemd-analyze", "calendar", expression], capture_output=True, timeout=30
    )
    return done.returncode == 0


def accepted(expression: str) -> bool:
    try:
        check_calendar(expression)
    except CalendarError:
        return False
    return True


@needs_systemd
def test_systemd_accepts_the_usual_schedules_and_refuses_what_the_check_refuses_for_cause():
    assert [e for e in USUAL if not systemd_accepts(e)] == []
    # The check is stricter than systemd only where it says so in its module docstring.
    stricter = {"2026-01-01", "Mon  03:00"}
    assert [e for e, _ in REFUSED if systemd_accepts(e) and e not in stricter] == []


PIECES = {
    "weekday": ["Mon", "fri", "Sunday", "Mon..Fri", "Sat-Sun", "Mon,Wed", "Tue..Mon", "Mo", "Mon,"],
    "date": ["*-*-*", "*-*-01", "*-02~03", "*-*~1", "12-25", "*-1..3-*", "*-*-1/30", "*-*-1/31",
             "*-0-1", "*-*-32", "*-13-*", "2026-*-*", "*-*-*/2", "*-01,07-01", "1-1", "*-*"],
    "time": ["03:00", "*:0/15", "0/23:00", "5/23:00", "24:00", "1..3/2:00", "3..1:00", "*:*:*",
             "00:00:59.999999", "00:00:60", "1:2:3.", "*:*/5", "01,13:00,30", "*:0/0", "1:"],
    "zone": ["UTC", "utc", "Europe/London", "Europe/london", "Mars/Olympus", "EST"],
}  # fmt: skip


@needs_systemd
def test_whatever_the_check_accepts_systemd_accepts_over_random_expressions():
    rng = random.Random(20260514)
    expressions = set()
    for _ in range(300):
        parts = [
            rng.choice(PIECES[kind])
            for kind in ("weekday", "date", "time", "zone")
            if rng.random() < 0.6
        ]
        if parts:
            expressions.add(" ".join(parts))
    checked = [e for e in sorted(expressions) if accepted(e)]
    assert len(checked) > 30, "the corpus must hold accepted expressions to compare"
    assert [e for e in checked if not systemd_accepts(e)] == []

"""A rolling deploy's percentage canary, judged by the edges in front of it.

The first batch of `llmhost deploy --batch-size` is the rollout's canary. Where edges
front its hosts and set `edge_canary_percent`, each of them sends that share of its
requests to those hosts (its canary backend, drawn at random per request) and the rest
to its other hosts, from before the batch converges until it is judged. The verdict
comes from HAProxy's own counters, summed over the edges, over `edge_canary_window_s`:

- more 5xx answers than `edge_canary_max_error_percent` of the canary's (judged as soon
  as it has `edge_canary_min_requests` answers): rolled back at once;
- its mean time to an answer's first byte over `edge_canary_max_latency_ratio` times the
  other hosts' (judged at the end): rolled back;
- fewer answers than `edge_canary_min_requests`: inconclusive, the rollout stops there;
- else promoted: the edges send to every host alike again, and the rollout goes on.

Rolled back means: the canary's share is set to 0 on every edge (the other hosts take
every request), its hosts switch back to their previous colour (deploy/rollback.py,
instant while that colour is warm), then the edges take them back. Every verdict is
recorded in each canary host's state, which `llmhost status` shows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from llmhost.errors import ActionableError, ConfigError
from llmhost.remote import Connected
from llmhost.settings import from_data
from roles.edge.defaults import ADMIN_SOCKET, BACKEND, CANARY_BACKEND, CANARY_MAP, EdgeSettings
from roles.edge.policy import CanaryRule as Rule
from roles.edge.policy import canary_rule

POLL_S = 2.0  # between two reads of the edges' counters

Say = Callable[[str], None]


class CanaryError(ActionableError):
    """An edge refused a command, or a canary host's state could not be read or written."""


@dataclass(frozen=True)
class EdgeShare:
    """One edge's part: its servers in the canary batch, and the others it sends to."""

    edge: str
    canary: list[str]
    stable: list[str]


@dataclass(frozen=True)
class Counts:
    """One server's counters in one backend of one edge (HAProxy's `show stat`)."""

    answers: int
    errors: int  # 5xx answers
    response_ms: int  # mean time to the first byte of its last 1024 answers


@dataclass(frozen=True)
class Verdict:
    decision: str  # promoted, rolled back, inconclusive
    reason: str
    answers: int
    errors: int
    canary_ms: int | None
    stable_ms: int | None
    elapsed_s: float


Stats = dict[tuple[str, str, str], Counts]  # (edge, backend, server) -> counters


# -- the plan, from the inventory alone ------------------------------------------------------


def shares(inventory: Any, batch: list[str]) -> tuple[Rule, list[EdgeShare]] | None:
    """The rule and each edge's part for a canary of ``batch``; None when no edge in front
    of it takes a percentage canary. ConfigError when the edges disagree on the rule, or
    when an edge would have no other host for the rest of its requests."""
    from pyinfra.context import ctx_inventory

    from roles._common.edges import fronted

    found: list[tuple[str, Rule, EdgeShare]] = []
    with ctx_inventory.use(inventory):
        for edge in inventory.get_group("edge", []):
            settings = from_data(EdgeSettings, edge.data, edge.name)
            pool = [member.name for member in fronted(settings)]
            canary = [name for name in pool if name in batch]
            rule = canary_rule(edge.name, settings)
            if rule is None or not canary:
                continue
            stable = [name for name in pool if name not in batch]
            if not stable:
                raise ConfigError(
                    f"the canary batch ({', '.join(canary)}) is every host this edge sends "
                    "to: no other host would take the rest of its requests",
                    key="edge_canary_percent",
                    fix="deploy with a smaller --canary, or set edge_canary_percent to 0",
                    host=edge.name,
                )
            found.append((edge.name, rule, EdgeShare(edge.name, canary, stable)))
    if not found:
        return None
    first_edge, rule, _ = found[0]
    for name, theirs, _ in found[1:]:
        if theirs != rule:
            raise ConfigError(
                f"edges {first_edge} and {name} front the same canary with different "
                "edge_canary_* settings",
                key="edge_canary_percent",
                fix="give the edges one canary rule (group_data of the edge group)",
                host=name,
            )
    return rule, [share for _, _, share in found]


# -- what the edges are told, through their admin socket --------------------------------------


def admin(command: str) -> str:
    """The shell command that sends ``command`` (``;``-separated) to an edge's HAProxy."""
    return f"echo {shlex.quote(command)} | socat stdio {ADMIN_SOCKET}"


def start_commands(share: EdgeShare, percent: int) -> str:
    """The canary's hosts out of the regular pool and into the canary's, which takes
    ``percent`` of the requests."""
    steps = []
    for name in share.canary:
        steps += [f"enable server {CANARY_BACKEND}/{name}", f"set server {BACKEND}/{name} weight 0"]
    return "; ".join([*steps, f"set map {CANARY_MAP} percent {percent}"])


def no_share_command() -> str:
    """No request for the canary: every one to the other hosts (the canary's are out)."""
    return f"set map {CANARY_MAP} percent 0"


def restore_commands(share: EdgeShare) -> str:
    """As the edge's configuration has it: no canary, every host at its own weight."""
    steps = [no_share_command()]
    for name in share.canary:
        steps += [
            f"set server {BACKEND}/{name} weight 100%",
            f"disable server {CANARY_BACKEND}/{name}",
        ]
    return "; ".join(steps)


def parse_stat(text: str) -> dict[tuple[str, str], Counts]:
    """(backend, server) -> its counters, from `show stat`'s CSV (frontends and backends'
    own rows left out)."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("# pxname,"):
        raise CanaryError(f"the edge answered `show stat` with {text[:200]!r}")
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    found = {}
    for row in reader:
        if row["svname"] in ("FRONTEND", "BACKEND"):
            continue
        answers = sum(_int(row, f"hrsp_{kind}") for kind in ("1xx", "2xx", "3xx", "4xx", "5xx"))
        found[(row["pxname"], row["svname"])] = Counts(
            answers + _int(row, "hrsp_other"), _int(row, "hrsp_5xx"), _int(row, "rtime")
        )
    return found


def _int(row: dict[str, str], field: str) -> int:
    value = row.get(field) or "0"
    return int(value) if value.isdigit() else 0


# -- the verdict ------------------------------------------------------------------------------


def judge(
    rule: Rule,
    answers: int,
    errors: int,
    canary_ms: int | None,
    stable_ms: int | None,
    elapsed_s: float,
    *,
    final: bool,
) -> Verdict | None:
    """The verdict on what the canary answered so far; None while it is too early."""

    def verdict(decision: str, reason: str) -> Verdict:
        return Verdict(decision, reason, answers, errors, canary_ms, stable_ms, elapsed_s)

    percent = 100 * errors / answers if answers else 0.0
    enough = answers >= rule.min_requests
    if enough and percent > rule.max_error_percent:
        return verdict(
            "rolled back",
            f"{errors} of {answers} answers were 5xx ({percent:.1f}% > "
            f"{rule.max_error_percent:g}%) after {elapsed_s:.0f} s",
        )
    if not final:
        return None
    if not enough:
        return verdict(
            "inconclusive",
            f"only {answers} answers in {elapsed_s:.0f} s, fewer than "
            f"edge_canary_min_requests ({rule.min_requests})",
        )
    if (
        rule.max_latency_ratio
        and canary_ms
        and stable_ms
        and canary_ms > rule.max_latency_ratio * stable_ms
    ):
        return verdict(
            "rolled back",
            f"its mean time to first byte, {canary_ms} ms, is over {rule.max_latency_ratio:g} "
            f"times the other hosts' ({stable_ms} ms)",
        )
    latency = f"; first byte {canary_ms} ms, others {stable_ms} ms" if canary_ms else ""
    return verdict(
        "promoted",
        f"{errors} of {answers} answers were 5xx ({percent:.1f}%) in {elapsed_s:.0f} s{latency}",
    )


def totals(
    parts: list[EdgeShare], before: Stats, now: Stats
) -> tuple[int, int, int | None, int | None]:
    """(answers, 5xx, canary's ms, the others' ms) since ``before``, over every edge."""
    answers = errors = 0
    canary_times: list[tuple[int, int]] = []
    stable_times: list[tuple[int, int]] = []
    for share in parts:
        for backend, names, times in (
            (CANARY_BACKEND, share.canary, canary_times),
            (BACKEND, share.stable, stable_times),
        ):
            for name in names:
                key = (share.edge, backend, name)
                current, earlier = now.get(key), before.get(key, Counts(0, 0, 0))
                if current is None:
                    continue
                new_answers = current.answers - earlier.answers
                if backend == CANARY_BACKEND:
                    answers += new_answers
                    errors += current.errors - earlier.errors
                if new_answers > 0 and current.response_ms > 0:
                    times.append((new_answers, current.response_ms))
    return answers, errors, _weighted(canary_times), _weighted(stable_times)


def _weighted(times: list[tuple[int, int]]) -> int | None:
    total = sum(count for count, _ in times)
    return round(sum(count * ms for count, ms in times) / total) if total else None


# -- a canary under way -----------------------------------------------------------------------


class Canary:
    """The canary of one rollout: its edges' shares, its hosts' releases and verdict."""

    def __init__(
        self, hosts: Connected, batch: list[str], rule: Rule, parts: list[EdgeShare], say: Say
    ) -> None:
        self.hosts = hosts
        self.batch = batch
        self.rule = rule
        self.parts = parts
        self.say = say
        self.rollback_failed = False

    @classmethod
    def planned(cls, inventory_path: str, batch: list[str], say: Say) -> Canary | None:
        """The canary for ``batch``, or None when no edge in front of it takes one."""
        hosts = Connected(inventory_path)
        found = shares(hosts.inventory, batch)
        if found is None:
            return None
        rule, parts = found
        return cls(hosts, batch, rule, parts, say)

    def describe(self) -> str:
        edges = ", ".join(part.edge for part in self.parts)
        return (
            f"canary {', '.join(self.batch)}: {self.rule.percent}% of the requests through "
            f"{edges}, judged over {self.rule.window_s} s"
        )

    @contextlib.contextmanager
    def sharing(self) -> Iterator[Callable[[], Verdict]]:
        """The canary's share set on every edge; yields the judge (watch, then roll back
        when it must); every edge is restored on the way out, whatever happened."""
        try:
            for part in self.parts:
                self._tell(part.edge, start_commands(part, self.rule.percent))
            yield self._judged
        finally:
            # A canary whose rollback failed still runs the bad release: it stays out.
            for part in [] if self.rollback_failed else self.parts:
                with contextlib.suppress(ActionableError):
                    self._tell(part.edge, restore_commands(part))

    def _judged(self) -> Verdict:
        releases = self._releases()
        verdict = self.watch()
        try:
            if verdict.decision == "rolled back":
                for part in self.parts:
                    self._tell(part.edge, no_share_command())
                hosts = ", ".join(self.batch)
                self.say(f"canary rolled back: {verdict.reason}; switching back {hosts}")
                self._roll_back()
        finally:
            self._record(verdict, releases)  # the decision, even when its rollback failed
        return verdict

    def watch(
        self,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> Verdict:
        """Read the edges' counters every few seconds until a verdict."""
        before = self.stats()
        start = clock()
        last_said = start
        while True:
            sleep(POLL_S)
            elapsed = clock() - start
            final = elapsed >= self.rule.window_s
            answers, errors, canary_ms, stable_ms = totals(self.parts, before, self.stats())
            verdict = judge(self.rule, answers, errors, canary_ms, stable_ms, elapsed, final=final)
            if verdict is not None:
                return verdict
            if clock() - last_said >= 30:
                self.say(f"canary: {answers} answers, {errors} 5xx in {elapsed:.0f} s")
                last_said = clock()

    def stats(self) -> Stats:
        found: Stats = {}
        for part in self.parts:
            answer = self._ask(part.edge, "show stat")
            for (backend, server), counts in parse_stat(answer).items():
                found[(part.edge, backend, server)] = counts
        return found

    def _tell(self, edge: str, command: str) -> None:
        """A command that answers nothing when done (HAProxy's blank lines); its words else."""
        refused = " ".join(line for line in self._ask(edge, command).splitlines() if line.strip())
        if refused:
            raise CanaryError(
                f"edge {edge} refused `{command}`: {refused[:300]}. Fix: converge the edges "
                "first (`llmhost deploy INVENTORY --limit edge`): their configuration must "
                "have the canary backend"
            )

    def _ask(self, edge: str, command: str) -> str:
        answer = self.hosts.run(edge, admin(command))
        if not answer.ok:
            raise CanaryError(f"edge {edge}: `{command}` failed: {answer.stderr[:300]}")
        return answer.stdout

    def _releases(self) -> dict[str, str]:
        """Each canary host's active release: the one judged."""
        from llmhost.status import status_command

        found = {}
        for name in self.batch:
            target = self.hosts.inventory.get_host(name)
            answer = self.hosts.run(name, status_command(name, target.data))
            try:
                status = json.loads(answer.stdout)
                colour = status["active"]
                found[name] = status["colours"][colour]["release"]["id"]
            except (ValueError, KeyError, TypeError) as error:
                raise CanaryError(
                    f"{name}: its state names no active release ({answer.stderr[:200]})"
                ) from error
        return found

    def _roll_back(self) -> None:
        from llmhost import converge

        result = converge.run(
            self.hosts.path, converge.ROLLBACK, limit=tuple(self.batch), stream_stderr=True
        )
        if result.returncode != 0 or result.errors:
            self.rollback_failed = True
            edges = ", ".join(part.edge for part in self.parts)
            raise CanaryError(
                f"the canary's rollback failed on {', '.join(self.batch)} (exit "
                f"{result.returncode}); the edges ({edges}) send them nothing. Fix: `llmhost "
                "rollback` those hosts, then `systemctl reload haproxy` on each edge"
            )

    def _record(self, verdict: Verdict, releases: dict[str, str]) -> None:
        from roles._common.onhost import runtimectl

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for name, release in releases.items():
            record = {
                **asdict(verdict),
                "release": release,
                "time": now,
                "percent": self.rule.percent,
                "window_s": self.rule.window_s,
                "edges": [part.edge for part in self.parts],
            }
            answer = self.hosts.run(
                name, runtimectl("canary-record", "--verdict", json.dumps(record))
            )
            if not answer.ok:
                raise CanaryError(f"{name}: the canary's verdict was not recorded: {answer.stderr}")

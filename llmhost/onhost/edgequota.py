"""The edge's token quotas: each team's tokens over the last hour, from Prometheus, into the
map of teams over their quota that HAProxy reads on every request (429 naming the team).

A timer on the edge runs one pass every `edge_token_quota_interval_s`:

1. ask the monitoring hosts' Prometheus, in turn until one answers, for each team's tokens
   (prompt and completion, counted at every serving host's gateway) over the last hour;
2. set each team that has a quota to 1 (over) or 0 (not) in the map, through HAProxy's
   admin socket: no reload, and the next request sees it;
3. print one JSON line (the journal keeps it): each team's tokens, quota and state.

With no Prometheus answering, the map is left as it was (a team over stays over, the
others are served) and the run fails, which the journal and the unit's state show. Tokens
are counted where the answers are read, at the gateways, and reach Prometheus a scrape
later: a team may go over its quota by what it asks for within one scrape interval and
one pass before it is held.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import urllib.parse
from collections.abc import Sequence

from llmhost.onhost.runtimectl import prometheus_data

WINDOW = "1h"
QUERY = f'sum by (team) (increase(llmhost_gateway_attributed_tokens_total{{team!=""}}[{WINDOW}]))'
EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2


class NoAnswer(Exception):
    """No Prometheus answered the query."""


def tokens_by_team(urls: Sequence[str], timeout: float) -> dict[str, float]:
    """Each team's tokens over the window, from the first Prometheus that answers."""
    problems = []
    for url in urls:
        query = urllib.parse.urlencode({"query": QUERY})
        try:
            data = prometheus_data(url, f"/api/v1/query?{query}", timeout)
            return {
                item["metric"].get("team", ""): float(item["value"][1]) for item in data["result"]
            }
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"{url}: {error}")
    raise NoAnswer("; ".join(problems) or "no Prometheus to ask")


def over_quota(used: dict[str, float], quotas: dict[str, int]) -> dict[str, bool]:
    """Each team with a quota: over it (its tokens reached it) or not."""
    return {team: used.get(team, 0.0) >= quota for team, quota in quotas.items()}


def admin(path: str, command: str, timeout: float = 5.0) -> str:
    """Send one line to HAProxy's admin socket; its answer (blank lines: done)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(timeout)
        connection.connect(path)
        connection.sendall(command.encode() + b"\n")
        chunks = []
        while chunk := connection.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def apply(socket_path: str, map_path: str, over: dict[str, bool]) -> None:
    """Each team's state into the map; RuntimeError with HAProxy's words if it refused."""
    if not over:
        return
    command = "; ".join(
        f"set map {map_path} {team} {int(is_over)}" for team, is_over in sorted(over.items())
    )
    answer = admin(socket_path, command).strip()
    if answer:
        raise RuntimeError(f"HAProxy refused `{command}`: {answer[:300]}")


def parse_quotas(pairs: Sequence[str]) -> dict[str, int]:
    quotas = {}
    for pair in pairs:
        team, _, tokens = pair.partition("=")
        if not team or not tokens.isdigit():
            raise ValueError(f"--quota {pair!r} is not TEAM=TOKENS")
        quotas[team] = int(tokens)
    return quotas


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onhost.pyz edge-quota", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--prometheus", action="append", default=[], help="URL; repeatable")
    parser.add_argument("--quota", action="append", default=[], help="TEAM=TOKENS an hour")
    parser.add_argument("--map", required=True, help="the map HAProxy reads (its path)")
    parser.add_argument("--socket", required=True, help="HAProxy's admin socket")
    parser.add_argument("--timeout", type=float, default=5.0, help="per Prometheus")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        quotas = parse_quotas(args.quota)
    except ValueError as error:
        print(f"edge-quota: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    try:
        used = tokens_by_team(args.prometheus, args.timeout)
    except NoAnswer as error:
        print(
            f"edge-quota: no Prometheus answered ({error}); the map is left as it was",
            file=sys.stderr,
        )
        return EXIT_FAILED
    over = over_quota(used, quotas)
    try:
        apply(args.socket, args.map, over)
    except (OSError, RuntimeError) as error:
        print(f"edge-quota: {error}", file=sys.stderr)
        return EXIT_FAILED
    teams = {
        team: {"tokens": round(used.get(team, 0.0)), "quota": quota, "over": over[team]}
        for team, quota in sorted(quotas.items())
    }
    print(json.dumps({"window": WINDOW, "teams": teams}, sort_keys=True))
    return EXIT_OK

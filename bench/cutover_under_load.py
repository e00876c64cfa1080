"""Cutover under load: failed requests and p99 latency during a blue-green switch, against steady.

    python bench/cutover_under_load.py [--concurrency 8] [--window-s 20] [--wait-minutes 30]

On testbed host tb1, serving tiny models with llama-server behind the gateway with both colours
warm (release A on one, release B on the other after an untimed first cutover), --concurrency
clients on this machine send closed-loop streamed completions (8 tokens; a new TLS connection
each, with an API key, as an application would) to the gateway, without a break, through three
windows, back to back:
  steady    --window-s of load, nothing changes;
  rollback  `llmhost rollback`: the instant switch back to the warm previous colour (A);
  deploy    `llmhost deploy --yes` of release C: staged on the idle colour, gated (soak and
            eval), then cut over.
A switch's window runs from its command's start to 3 s after its end. A request counts in the
window it started in; it failed when its status was not 200, the connection broke or timed out,
or its stream did not end with `data: [DONE]`. Prints per window the requests, the failed ones
(counted by reason), p50 and p99 of the latency to the last byte (ok requests), and its p99 over
steady p99; and per switch the colours and releases before and after (from state.json on the
host). Goal: 0 failed in every window. Exit 0 when no window had a failed request and both
switches happened (the active colour and its release changed), 1 otherwise, 2 when it cannot
run. Waits (up to --wait-minutes) while another run holds the testbed, and takes it down at the
end. Needs root.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._testbed import llmhost_cli, on_testbed, publish, succeeded, use_tiny_catalog  # noqa: E402
from llmhost import converge  # noqa: E402
from llmhost.onhost.layout import COLOURS, STATE_FILE  # noqa: E402
from llmhost.onhost.soak import percentile  # noqa: E402
from llmhost.secrets import api_keys  # noqa: E402
from llmhost.settings import from_data  # noqa: E402
from llmhost.testing.testbed import Testbed, TestbedHost  # noqa: E402
from roles.gateway.defaults import GatewaySettings  # noqa: E402
from roles.runtime.defaults import unit_name  # noqa: E402

IDENTITY = "bench"
FIRST, SECOND, THIRD = RELEASES = ("bench-cutover-a", "bench-cutover-b", "bench-cutover-c")
MAX_TOKENS = 8
SETTLE_S = 3.0  # a switch's window goes on this long after its command ends
REQUEST_TIMEOUT_S = 60
# The load is one identity at many requests a second: above the default rate limit.
LOAD_LIMITS = {"gateway_rate_limit_rps": 2000, "gateway_rate_limit_burst": 2000}
BODY = json.dumps(
    {"prompt": "Hello", "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
).encode()


# -- the load: streamed completions through the gateway ----------------------------------------


@dataclass(frozen=True)
class Gateway:
    address: str
    port: int
    key: str = field(repr=False)
    context: ssl.SSLContext


@dataclass(frozen=True)
class Outcome:
    """One request: when it started and how long to its last byte (monotonic seconds)."""

    start: float
    latency_s: float
    failure: str | None = None  # None: status 200 and a stream ending in [DONE]


def read_completion(gateway: Gateway) -> str | None:
    """Send one streamed completion on a new connection; None when it was whole, else why not."""
    connection = http.client.HTTPSConnection(
        gateway.address, gateway.port, context=gateway.context, timeout=REQUEST_TIMEOUT_S
    )
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {gateway.key}"}
    try:
        connection.request("POST", "/v1/completions", BODY, headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 200:
        return f"http {response.status}"
    if not data.rstrip().endswith(b"data: [DONE]"):
        return "stream ended without [DONE]"
    return None


def streamed_completion(gateway: Gateway) -> Outcome:
    start = time.monotonic()
    try:
        failure = read_completion(gateway)
    except (OSError, http.client.HTTPException) as error:
        failure = type(error).__name__  # e.g. RemoteDisconnected, IncompleteRead, TimeoutError
    return Outcome(start, time.monotonic() - start, failure)


class ClosedLoopLoad:
    """``clients`` threads, each sending its next request as soon as its last one ended."""

    def __init__(self, gateway: Gateway, clients: int) -> None:
        self.gateway = gateway
        self.outcomes: list[Outcome] = []
        self.started = self.stopped = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]

    def _client(self) -> None:
        while not self._stop.is_set():
            outcome = streamed_completion(self.gateway)
            with self._lock:
                self.outcomes.append(outcome)

    def __enter__(self) -> ClosedLoopLoad:
        self.started = time.monotonic()
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped = time.monotonic()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 10)


# -- the switches ------------------------------------------------------------------------------


def host_state(testbed: Testbed, host: TestbedHost) -> dict[str, Any]:
    return json.loads(testbed.ssh(host, f"cat {STATE_FILE}"))


def release_on(state: dict[str, Any], colour: str | None) -> dict[str, Any]:
    return (state.get("colours") or {}).get(colour) or {}


@dataclass(frozen=True)
class Switch:
    """A switch command run under load, and the host's state around it."""

    name: str
    done: subprocess.CompletedProcess[str]
    seconds: float
    before: dict[str, Any]
    after: dict[str, Any]
    wanted_model: str | None = None

    def problem(self) -> str | None:
        was, now = self.before.get("active"), self.after.get("active")
        old, new = release_on(self.before, was), release_on(self.after, now)
        if self.done.returncode != 0:
            return f"`llmhost {self.name}` exited {self.done.returncode}"
        if now == was:
            return f"the active colour is still {was}"
        if new.get("id") == old.get("id"):
            return f"{now} serves the release that served before, {old.get('id')}"
        if self.wanted_model and new.get("model") != self.wanted_model:
            return f"{now} serves {new.get('model')}, not {self.wanted_model}"
        return None

    def line(self) -> str:
        def served(state: dict[str, Any]) -> str:
            active = state.get("active")
            release = release_on(state, active)
            return f"{active} ({release.get('model')} {release.get('id')})"

        problem = self.problem()
        return (
            f"{self.name}: {served(self.before)} -> {served(self.after)}, command "
            f"{self.seconds:.1f} s: {'switched' if problem is None else 'NOT SWITCHED, ' + problem}"
        )


def switch_under_load(
    name: str, testbed: Testbed, host: TestbedHost, *command: str, model: str = ""
) -> Switch:
    """Run ``llmhost name command...``, then let the load run on for SETTLE_S."""
    before = host_state(testbed, host)
    start = time.monotonic()
    done = llmhost_cli(name, *command)
    seconds = time.monotonic() - start
    switched = Switch(name, done, seconds, before, host_state(testbed, host), model or None)
    if switched.problem():
        print(done.stdout[-2000:], done.stderr[-3000:], sep="\n", file=sys.stderr)
    time.sleep(SETTLE_S)
    return switched


# -- the testbed: three releases, both colours warm --------------------------------------------


def serving_data(testbed: Testbed, host: TestbedHost, model: str) -> dict[str, Any]:
    return {**testbed.inventory_data(host), "model_name": model, **LOAD_LIMITS}


def write_inventory(path: Path, testbed: Testbed, hosts: list[TestbedHost], model: str) -> str:
    """tb1 serves ``model`` through the gateway; tb2 only keeps the second registry."""
    entries = [
        (hosts[0].name, serving_data(testbed, hosts[0], model)),
        (hosts[1].name, testbed.inventory_data(hosts[1])),
    ]
    path.write_text(f"testbed = {entries!r}\nregistry = testbed[:2]\n")
    return str(path)


def both_colours_warm(testbed: Testbed, hosts: list[TestbedHost], inventory: Path) -> bool:
    """Serve A, then cut over to B (untimed): each colour runs a release, and both run."""
    for model in (FIRST, SECOND):
        served = converge.run(write_inventory(inventory, testbed, hosts, model))
        if not succeeded(served, f"serving {model}"):
            return False
    state = host_state(testbed, hosts[0])
    models = {release_on(state, colour).get("model") for colour in COLOURS}
    units = " ".join(unit_name(colour) for colour in COLOURS)
    running = testbed.ssh(hosts[0], f"systemctl is-active {units}", check=False).split()
    if models != {FIRST, SECOND} or running != ["active", "active"]:
        print(f"both colours should be warm: {state} ({units}: {running})", file=sys.stderr)
        return False
    return True


def gateway_of(testbed: Testbed, host: TestbedHost) -> Gateway:
    settings = from_data(GatewaySettings, serving_data(testbed, host, SECOND), host.name)
    ca = testbed.root / "secrets" / "ca" / "ca.crt"
    key = api_keys(testbed.root / "secrets")[IDENTITY]
    return Gateway(
        host.address, settings.gateway_port, key, ssl.create_default_context(cafile=str(ca))
    )


# -- measuring and reporting -------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    name: str
    start: float
    end: float

    def outcomes(self, outcomes: list[Outcome]) -> list[Outcome]:
        return [o for o in outcomes if self.start <= o.start < self.end]


def measure(
    testbed: Testbed,
    hosts: list[TestbedHost],
    inventory: Path,
    gateway: Gateway,
    args: argparse.Namespace,
) -> tuple[list[Window], list[Switch], list[Outcome]]:
    """Steady, rollback and deploy windows, back to back, under one unbroken load."""
    host = hosts[0]
    with ClosedLoopLoad(gateway, args.concurrency) as load:
        print(f"steady: {args.window_s:g} s of load", file=sys.stderr)
        time.sleep(args.window_s)
        marks = [load.started, time.monotonic()]
        print("rollback: `llmhost rollback` under load", file=sys.stderr)
        rolled = switch_under_load("rollback", testbed, host, str(inventory), host.name)
        marks.append(time.monotonic())
        print(f"deploy: `llmhost deploy --yes` of {THIRD} under load", file=sys.stderr)
        write_inventory(inventory, testbed, hosts, THIRD)
        deployed = switch_under_load(
            "deploy", testbed, host, str(inventory), "--yes", "--limit", host.name, model=THIRD
        )
    marks.append(load.stopped)
    names = ("steady", "rollback", "deploy")
    spans = itertools.pairwise(marks)
    windows = [Window(name, *span) for name, span in zip(names, spans, strict=True)]
    return windows, [rolled, deployed], load.outcomes


def ms(latencies: list[float], q: float) -> float | None:
    found = percentile(latencies, q)
    return None if found is None else found * 1000


def window_line(window: Window, outcomes: list[Outcome], steady_p99: float | None) -> str:
    mine = window.outcomes(outcomes)
    reasons = Counter(o.failure for o in mine if o.failure)
    ok = [o.latency_s for o in mine if o.failure is None]
    p50, p99 = ms(ok, 50), ms(ok, 99)
    failed = sum(reasons.values())
    why = f" ({', '.join(f'{r}: {n}' for r, n in reasons.most_common())})" if failed else ""
    ratio = f"{p99 / steady_p99:.2f}" if p99 is not None and steady_p99 else "n/a"
    return (
        f"{window.name:8} {window.end - window.start:6.1f} s: {len(mine):5} requests, "
        f"{failed} failed{why}, p50 {p50 or 0:.1f} ms, p99 {p99 or 0:.1f} ms, "
        f"p99 / steady p99 {ratio}"
    )


def report(
    windows: list[Window], switches: list[Switch], outcomes: list[Outcome], concurrency: int
) -> int:
    print(
        f"{concurrency} closed-loop streaming clients through the gateway, {MAX_TOKENS} tokens "
        "a request, a new TLS connection each"
    )
    steady_ok = [o.latency_s for o in windows[0].outcomes(outcomes) if o.failure is None]
    steady_p99 = ms(steady_ok, 99)
    for window in windows:
        print(window_line(window, outcomes, steady_p99))
    for switched in switches:
        print(switched.line())
    failed = sum(1 for w in windows for o in w.outcomes(outcomes) if o.failure)
    all_switched = all(s.problem() is None for s in switches)
    print(
        f"failed requests in all windows: {failed} (goal 0); "
        f"both switches happened: {'yes' if all_switched else 'NO'}"
    )
    return 0 if failed == 0 and all_switched else 1


def run_bench(testbed: Testbed, scratch: Path, args: argparse.Namespace) -> int:
    hosts = testbed.up(2)
    use_tiny_catalog(scratch, RELEASES, first_seed=31)
    inventory = scratch / "inventory.py"
    ready = publish(testbed, IDENTITY, RELEASES) and both_colours_warm(testbed, hosts, inventory)
    if not ready:
        return 2
    gateway = gateway_of(testbed, hosts[0])
    probe = streamed_completion(gateway)
    if probe.failure:
        print(f"the gateway does not serve: {probe.failure}", file=sys.stderr)
        return 2
    windows, switches, outcomes = measure(testbed, hosts, inventory, gateway, args)
    return report(windows, switches, outcomes, args.concurrency)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--window-s", type=float, default=20)
    parser.add_argument("--wait-minutes", type=float, default=30)
    args = parser.parse_args()

    return on_testbed(args.wait_minutes, lambda testbed: run_in_scratch(testbed, args))


def run_in_scratch(testbed: Testbed, args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        return run_bench(testbed, Path(scratch), args)


if __name__ == "__main__":
    sys.exit(main())

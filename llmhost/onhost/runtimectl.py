"""Host-side runtime control: readiness, draining, and the state file.

Runs on hosts as ``python3 /usr/local/lib/llmhost/onhost.pyz runtimectl ...`` (the
unit's ExecStop, and the runtime, gate and cutover roles' steps): standard library only.

- ``ready``: the runtime answers ``/health`` with 200 *and* completes one real
  token. A server can report healthy while the model is still loading or broken;
  only a completion proves it serves.
- ``drain``: wait until the runtime has no request in flight (its own metrics),
  so that stopping a colour never cuts a response off mid-stream.
- ``complete``: one completion at temperature 0, printed as the runtime's JSON
  (for operators, and tests: hosts have no curl).
- ``check-model``: the model directory is materialised from the wanted manifest.
- ``record``: write which release a colour runs into ``/var/lib/llmhost/state.json``
  atomically. Recording never activates: only a cutover makes a colour serve.
- ``generate``: the answers to a list of prompts at temperature 0, one at a time
  (the eval gate's answers, compared with checks and golden sets on the control side).
- ``gate-record`` / ``gate-check``: the gate's verdict for a staged release, kept in
  the state file; the check fails (and stops the staged colour) unless it passed.
  ``cutover --require-gate`` refuses a colour whose release has not passed.

Exit codes: 0 done, 1 failed (not ready, still busy at the deadline), 2 cannot run.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from llmhost.onhost import layout
from llmhost.onhost.layout import (
    COLOURS,
    MANIFEST_FILE,
    ROLLBACK_WINDOW_UNIT,
    RUNTIME_UNIT,
    empty_state,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2
STATE_FILE = Path(layout.STATE_FILE)
# What each runtime calls the requests it is working on, in its Prometheus metrics.
BUSY_METRICS = ("llamacpp:requests_processing", "vllm:num_requests_running")
_METRIC_LINE = re.compile(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)\s*$")


class NotReady(Exception):
    pass


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _post_json(url: str, body: dict[str, Any], timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def probe(base: str, model: str, timeout: float) -> None:
    """One readiness probe; raises NotReady saying what is missing."""
    try:
        status, body = _get(f"{base}/health", timeout)
    except OSError as error:
        raise NotReady(f"{base}/health: {error}") from error
    if status != 200:
        raise NotReady(f"{base}/health answered {status}: {body[:200]!r}")
    completion = {"model": model, "prompt": "Hello", "max_tokens": 1, "temperature": 0}
    try:
        status, body = _post_json(f"{base}/v1/completions", completion, timeout)
    except OSError as error:
        raise NotReady(f"{base}/v1/completions: {error}") from error
    if status != 200:
        raise NotReady(f"{base}/v1/completions answered {status}: {body[:200]!r}")
    try:
        choices = json.loads(body)["choices"]
        text = choices[0]["text"]
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise NotReady(f"{base}/v1/completions returned no completion: {body[:200]!r}") from error
    if not isinstance(text, str):
        raise NotReady(f"{base}/v1/completions returned no text: {body[:200]!r}")


def wait_ready(base: str, model: str, deadline_s: float, interval: float = 1.0) -> float:
    """Probe until ready; returns the seconds it took, or raises NotReady at the deadline."""
    start = time.monotonic()
    last = "no probe finished"
    while True:
        remaining = deadline_s - (time.monotonic() - start)
        if remaining <= 0:
            raise NotReady(f"not ready after {deadline_s:.0f} s; last: {last}")
        try:
            probe(base, model, timeout=max(1.0, min(30.0, remaining)))
            return time.monotonic() - start
        except NotReady as error:
            last = str(error)
        time.sleep(min(interval, max(0.0, remaining)))


def requests_in_flight(metrics_text: str) -> float | None:
    """Requests the runtime is working on, from its metrics; None when it exposes none."""
    found = None
    for line in metrics_text.splitlines():
        match = _METRIC_LINE.match(line.strip())
        if match and match.group(1) in BUSY_METRICS:
            found = (found or 0.0) + float(match.group(3))
    return found


def drain(base: str, deadline_s: float, interval: float = 0.5) -> tuple[bool, str]:
    """Wait until nothing is in flight. Returns (drained, what was seen)."""
    start = time.monotonic()
    while True:
        try:
            status, body = _get(f"{base}/metrics", timeout=5)
        except OSError as error:
            return True, f"runtime not answering ({error}): nothing to drain"
        if status != 200:
            return True, f"/metrics answered {status}: cannot see requests, not waiting"
        busy = requests_in_flight(body.decode(errors="replace"))
        if busy is None:
            return True, "the runtime reports no in-flight metric: not waiting"
        if busy == 0:
            return True, f"drained after {time.monotonic() - start:.1f} s"
        if time.monotonic() - start >= deadline_s:
            return False, f"{busy:.0f} request(s) still in flight after {deadline_s:.0f} s"
        time.sleep(interval)


def manifest_digest(directory: Path) -> str | None:
    try:
        return "sha256:" + hashlib.sha256((directory / MANIFEST_FILE).read_bytes()).hexdigest()
    except OSError:
        return None


# -- state file ----------------------------------------------------------------------------


def read_state(path: Path) -> dict[str, Any]:
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return empty_state()
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a JSON object")
    return {**empty_state(), **state}


def write_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the state file atomically: readers see the old state or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, prefix=".state-", suffix=".json", delete=False
    ) as temporary:
        json.dump(state, temporary, indent=2, sort_keys=True)
        temporary.write("\n")
        temporary.flush()
        os.fsync(temporary.fileno())
    os.chmod(temporary.name, 0o644)
    os.replace(temporary.name, path)
    if path == STATE_FILE:
        write_state_metrics(Path(layout.STATE_METRICS_FILE), state)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def state_metrics(state: dict[str, Any]) -> str:
    """The state as Prometheus text: which colour serves, what each runs, its gate verdict.

    Alerts join on these (``active colour not serving``), and dashboards mark cutovers.
    """
    colours = state.get("colours") or {}
    lines = [
        "# HELP llmhost_colour_active Whether the gateway sends to this colour.",
        "# TYPE llmhost_colour_active gauge",
        *(
            f'llmhost_colour_active{{colour="{c}"}} {int(state.get("active") == c)}'
            for c in COLOURS
        ),
        "# HELP llmhost_release_info The release a colour runs (1 while it is recorded).",
        "# TYPE llmhost_release_info gauge",
    ]
    gates = []
    for colour in COLOURS:
        release = colours.get(colour) or {}
        if not release.get("id"):
            continue
        labels = f'colour="{colour}",release="{_label(release["id"])}"'
        model = _label(release.get("model", ""))
        lines.append(f'llmhost_release_info{{{labels},model="{model}"}} 1')
        if isinstance(release.get("gate"), dict):
            passed = int(bool(release["gate"].get("passed")))
            gates.append(f"llmhost_gate_passed{{{labels}}} {passed}")
    lines += [
        "# HELP llmhost_gate_passed Whether the colour's release passed its gate.",
        "# TYPE llmhost_gate_passed gauge",
        *gates,
    ]
    scores = gate_eval_scores(state)
    if scores:
        lines += [
            "# HELP llmhost_gate_eval_score The eval score a release got at its gate "
            "(each colour's release, and the last gated one).",
            "# TYPE llmhost_gate_eval_score gauge",
            *(
                f'llmhost_gate_eval_score{{release="{_label(release)}"}} {score}'
                for release, score in sorted(scores.items())
            ),
        ]
    last = state.get("last_gate") or {}
    if isinstance(last.get("eval_score"), int | float):
        drift = last.get("drift")
        lines += [
            "# HELP llmhost_gate_eval_drift Eval answers of the last gated release that differ "
            "from its golden set.",
            "# TYPE llmhost_gate_eval_drift gauge",
            f'llmhost_gate_eval_drift{{release="{_label(last.get("release"))}"}} '
            f"{drift if isinstance(drift, int) and not isinstance(drift, bool) else 0}",
        ]
    return "\n".join(lines) + "\n"


def gate_eval_scores(state: dict[str, Any]) -> dict[str, float]:
    """Release id -> its gate's eval score: each colour's (kept with its gate since the
    production eval compares with it), then the last gate's (all a state written before
    that has)."""
    found: dict[str, float] = {}
    gates = [
        (release.get("id"), (release.get("gate") or {}).get("eval_score"))
        for release in ((state.get("colours") or {}).get(c) or {} for c in COLOURS)
        if isinstance(release.get("gate"), dict)
    ]
    last = state.get("last_gate") or {}
    for release, score in [*gates, (last.get("release"), last.get("eval_score"))]:
        if isinstance(score, bool) or not isinstance(score, int | float):
            continue
        if isinstance(release, str):
            found.setdefault(release, float(score))
    return found


def write_state_metrics(path: Path, state: dict[str, Any]) -> None:
    """Replace the textfile atomically, where node exporter reads it (nothing when absent)."""
    if not path.parent.is_dir():
        return  # no node exporter on this host (yet): the next state change writes it
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(state_metrics(state))
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def record(state: dict[str, Any], colour: str, release: dict[str, Any], now: str) -> dict[str, Any]:
    """The state after ``colour`` was made to run ``release`` (not yet serving)."""
    colours = dict(state.get("colours") or {})
    colours[colour] = {**release, "since": now}
    history = list(state.get("history") or [])
    history.append({"time": now, "event": "staged", "colour": colour, "release": release["id"]})
    return {**state, "colours": colours, "history": history[-100:]}


def record_gate(state: dict[str, Any], colour: str, verdict: dict[str, Any]) -> dict[str, Any]:
    """The state after a gate judged the release ``colour`` runs (``verdict['release']``)."""
    colours = dict(state.get("colours") or {})
    staged = dict(colours.get(colour) or {})
    if staged.get("id") != verdict.get("release"):
        raise RuntimeError(
            f"{colour} runs release {staged.get('id')}, not {verdict.get('release')}: "
            "the gate judged another release"
        )
    # The eval score stays with the colour's release: the production eval's alert compares
    # with it after a later gate (of the other colour) has replaced `last_gate`.
    kept = ("passed", "time", "eval_score")
    colours[colour] = {**staged, "gate": {k: verdict.get(k) for k in kept}}
    history = list(state.get("history") or [])
    history.append(
        {
            "time": verdict.get("time"),
            "event": "gate passed" if verdict.get("passed") else "gate failed",
            "colour": colour,
            "release": verdict.get("release"),
        }
    )
    return {**state, "colours": colours, "last_gate": verdict, "history": history[-100:]}


CANARY_DECISIONS = ("promoted", "rolled back", "inconclusive")


def record_canary(state: dict[str, Any], verdict: dict[str, Any]) -> dict[str, Any]:
    """The state after a rollout judged this host's release as its canary behind the edges."""
    if verdict.get("decision") not in CANARY_DECISIONS or not isinstance(
        verdict.get("release"), str
    ):
        raise ValueError(
            f"a canary verdict needs a release and a decision ({', '.join(CANARY_DECISIONS)})"
        )
    history = list(state.get("history") or [])
    history.append(
        {
            "time": verdict.get("time"),
            "event": f"canary {verdict['decision']}",
            "release": verdict["release"],
        }
    )
    return {**state, "last_canary": verdict, "history": history[-100:]}


def gate_passed(state: dict[str, Any], colour: str) -> bool:
    """The release ``colour`` runs now has passed its gate."""
    staged = (state.get("colours") or {}).get(colour) or {}
    return bool((staged.get("gate") or {}).get("passed"))


def check_gate(state: dict[str, Any], colour: str, release: str) -> tuple[bool, str]:
    """(passed, what to tell the operator) for ``release`` on ``colour``."""
    staged = (state.get("colours") or {}).get(colour) or {}
    if staged.get("id") != release:
        return False, f"{colour} runs release {staged.get('id')}, not {release}"
    if gate_passed(state, colour):
        return True, f"release {release} on {colour} passed its gate"
    verdict = state.get("last_gate") or {}
    if verdict.get("release") != release:
        return False, f"release {release} on {colour} has no gate verdict"
    where = ", ".join(f"{k}: {verdict[k]}" for k in ("report", "control_report") if verdict.get(k))
    failures = "; ".join(verdict.get("failures") or []) or "see the report"
    return False, f"release {release} on {colour} failed its gate: {failures} ({where})"


# -- cutover and rollback --------------------------------------------------------------------


def upstream_text(colour: str | None, port: int) -> str:
    """The gateway's one managed include: where requests go, and the colour the audit log names.

    With no colour (a new host, before its first release passed its gate) the only
    server is marked down: the gateway answers 502 and no request reaches a release
    that has not been gated.
    """
    down = "" if colour else " down"
    return (
        "# managed by llmhost (cutover): the colour the gateway sends requests to.\n"
        "# Switched only by `runtimectl.py cutover` / `rollback`, after a readiness check.\n"
        # A small pool of kept-alive connections to the engine, each closed by nginx before
        # llama-server would close it (5 s idle, 100 requests). The engine also closes its end
        # right after every streamed answer, so a pooled connection can be dead when taken:
        # the gateway's `proxy_next_upstream error non_idempotent` sends such a request again
        # on another connection (the engine closed it unread). See docs/architecture.md.
        f"upstream llmhost_runtime {{\n    server 127.0.0.1:{port}{down};\n"
        "    keepalive 8;\n    keepalive_timeout 2s;\n    keepalive_requests 90;\n}\n"
        f"map $host $llmhost_colour {{\n    default {colour or 'none'};\n}}\n"
    )


def colour_in(upstream: str) -> str | None:
    match = re.search(r"default (blue|green);", upstream)
    return match.group(1) if match else None


def _run(command: list[str]) -> tuple[bool, str]:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    return done.returncode == 0, (done.stderr or done.stdout).strip()


def replace_file(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.new")
    temporary.write_text(text)
    os.chmod(temporary, 0o644)
    os.replace(temporary, path)


def switch_gateway(upstream: Path, text: str) -> None:
    """Point nginx at ``text``'s upstream: check the whole config, reload gracefully.

    On any failure the previous include is put back (and nginx reloaded onto it),
    so the gateway never serves from a half-switched configuration.
    """
    previous = upstream.read_text() if upstream.exists() else None
    replace_file(upstream, text)
    for step in (["nginx", "-t", "-q"], ["systemctl", "reload", "nginx.service"]):
        ok, detail = _run(step)
        if not ok:
            if previous is None:
                upstream.unlink()
            else:
                replace_file(upstream, previous)
            _run(["systemctl", "reload", "nginx.service"])
            raise RuntimeError(f"`{' '.join(step)}` failed, previous upstream restored: {detail}")


def schedule_stop(colour: str, seconds: int) -> None:
    """Stop ``colour`` after the rollback window, unless a cutover back to it cancels that."""
    cancel_stop(colour)
    if seconds > 0:
        ok, detail = _run(
            [
                "systemd-run",
                f"--unit={ROLLBACK_WINDOW_UNIT.format(colour)}",
                f"--on-active={seconds}",
                "--timer-property=AccuracySec=1s",
                "systemctl",
                "stop",
                RUNTIME_UNIT.format(colour),
            ]
        )
        if not ok:
            raise RuntimeError(
                f"could not schedule the end of {colour}'s rollback window: {detail}"
            )


def cancel_stop(colour: str) -> None:
    _run(["systemctl", "stop", f"{ROLLBACK_WINDOW_UNIT.format(colour)}.timer"])


# The alert groups a watching Prometheus must have loaded (templates/monitoring/rules.yml.j2).
ALERT_GROUPS = ("llmhost-hosts", "llmhost-runtime", "llmhost-gateway")


def prometheus_data(url: str, path: str, timeout: float) -> Any:
    """The `data` of Prometheus's answer to ``path``; ValueError when it reports an error."""
    with urllib.request.urlopen(f"{url.rstrip('/')}{path}", timeout=timeout) as response:
        answer = json.loads(response.read())
    if answer.get("status") != "success":
        raise ValueError(f"{answer.get('errorType')}: {answer.get('error')}")
    return answer["data"]


def watched_by(url: str, host: str, timeout: float = 5.0) -> str | None:
    """Why Prometheus at ``url`` does not watch ``host``; None when it does.

    Watched: its node exporter was scraped successfully (``up == 1``) and the alert
    rules are loaded. A release must not take traffic where nobody would see it fail.
    """
    query = urllib.parse.quote(f'up{{job="node",host="{host}"}}')
    try:
        results = prometheus_data(url, f"/api/v1/query?query={query}", timeout)["result"]
        groups = {
            g["name"] for g in prometheus_data(url, "/api/v1/rules?type=alert", timeout)["groups"]
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"{url}: {error}"
    if not any(r.get("value", [None, "0"])[1] == "1" for r in results):
        return f"{url} has no successful scrape of {host}'s node exporter"
    missing = sorted(set(ALERT_GROUPS) - groups)
    if missing:
        return f"{url} has not loaded the alert rules ({', '.join(missing)} missing)"
    return None


def wait_watched(urls: Sequence[str], host: str, deadline_s: float) -> None:
    """Until one of ``urls`` watches ``host`` (a first scrape can take an interval); else raise."""
    start = time.monotonic()
    while True:
        reasons = [why for url in urls if (why := watched_by(url, host)) is not None]
        if len(reasons) < len(urls):
            return
        if time.monotonic() - start >= deadline_s:
            raise RuntimeError(
                f"no monitoring host watches {host} ({'; '.join(reasons)}): a release takes no "
                "traffic where nobody would see it fail. Fix: converge the monitoring hosts "
                "(their Prometheus must reach this host's exporters and load the alert rules); "
                "nothing was switched"
            )
        time.sleep(2.0)


@contextlib.contextmanager
def drained(drain: tuple[Path, float, float] | None) -> Iterator[None]:
    """Out of the edges' pools while the body runs; ``drain``: (flag, leave_s, rejoin_s).

    While the flag exists the gateway's /healthz answers 503: after ``leave_s`` every edge
    has stopped sending new requests, and ``rejoin_s`` after it is gone every edge sends
    again, so the next host of a serial rollout leaves a full pool. Requests already in
    flight finish either way (the gateway reloads gracefully).
    """
    if drain is None:
        yield
        return
    flag, leave_s, rejoin_s = drain
    flag.touch()
    time.sleep(leave_s)
    try:
        yield
    finally:
        flag.unlink(missing_ok=True)
        time.sleep(rejoin_s)


def cutover(
    *,
    to: str,
    port: int,
    model: str,
    upstream: Path,
    state_path: Path,
    ready_timeout: float,
    rollback_window: int,
    reason: str,
    require_gate: bool = False,
    watched: tuple[Sequence[str], str, float] | None = None,
    drain: tuple[Path, float, float] | None = None,
) -> str:
    """Readiness, switch, record; returns what happened. Raises NotReady or RuntimeError.

    ``watched``: (Prometheus URLs, this host's inventory name, seconds to wait) that must
    watch this host first. ``drain``: the host leaves its edges' pools for the switch
    (see ``drained``).
    """
    if require_gate and not gate_passed(read_state(state_path), to):
        raise RuntimeError(f"the release on {to} has not passed its gate; nothing was switched")
    if watched is not None:
        wait_watched(*watched)
    wait_ready(f"http://127.0.0.1:{port}", model, ready_timeout)
    cancel_stop(to)  # the colour about to serve must not have a stop pending
    before = colour_in(upstream.read_text()) if upstream.exists() else None
    text = upstream_text(to, port)
    if before != to or upstream.read_text() != text:
        with drained(drain):
            switch_gateway(upstream, text)
    with locked(state_path):
        state = read_state(state_path)
        previous = state.get("active")
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        release = (state.get("colours") or {}).get(to, {}).get("id")
        history = list(state.get("history") or [])
        history.append(
            {"time": now, "event": reason, "from": previous, "to": to, "release": release}
        )
        write_state(state_path, {**state, "active": to, "history": history[-100:]})
    if previous in COLOURS and previous != to:
        schedule_stop(previous, rollback_window)
        return f"{reason}: gateway now sends to {to} (release {release}); {previous} stays warm"
    return f"{reason}: gateway sends to {to} (release {release})"


def rollback_target(state: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    active = state.get("active")
    if active not in COLOURS:
        raise RuntimeError("no active colour recorded: nothing to roll back from")
    previous = COLOURS[1 - COLOURS.index(active)]
    release = (state.get("colours") or {}).get(previous)
    if not release:
        raise RuntimeError(f"{previous} never ran a release on this host: nothing to roll back to")
    return previous, release


def host_status(state_path: Path, ports: dict[str, int], upstream: Path) -> dict[str, Any]:
    """What `llmhost status` shows for this host: active colour, releases, health, last gate."""
    state = read_state(state_path)
    colours: dict[str, Any] = {}
    for colour in COLOURS:
        release = (state.get("colours") or {}).get(colour)
        running = unit_active(colour)
        health = "stopped"
        if running and release:
            try:
                probe(
                    f"http://127.0.0.1:{ports[colour]}",
                    release.get("served_model_name") or release["model"],
                    timeout=10,
                )
                health = "ready"
            except NotReady as error:
                health = f"not ready: {error}"
        colours[colour] = {"release": release, "running": running, "health": health}
    gateway = colour_in(upstream.read_text()) if upstream.exists() else None
    return {
        "active": state.get("active"),
        "gateway_sends_to": gateway,
        "colours": colours,
        "last_gate": state.get("last_gate"),
        "last_canary": state.get("last_canary"),
        "last_event": (state.get("history") or [None])[-1],
    }


def unit_active(colour: str) -> bool:
    return _run(["systemctl", "is-active", "--quiet", RUNTIME_UNIT.format(colour)])[0]


# -- command line ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onhost.pyz runtimectl", description="llmhost runtime control (runs on hosts)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ready = commands.add_parser("ready", help="wait for /health 200 and a one-token completion")
    ready.add_argument("--port", type=int, required=True)
    ready.add_argument("--model", required=True, help="served model name")
    ready.add_argument("--timeout", type=float, default=300.0)
    drain_cmd = commands.add_parser("drain", help="wait until no request is in flight")
    drain_cmd.add_argument("--port", type=int, required=True)
    drain_cmd.add_argument("--timeout", type=float, default=30.0)
    complete = commands.add_parser("complete", help="one completion; prints the JSON answer")
    complete.add_argument("--port", type=int, required=True)
    complete.add_argument("--model", required=True, help="served model name")
    complete.add_argument("--prompt", default="Hello")
    complete.add_argument("--max-tokens", type=int, default=16)
    check = commands.add_parser("check-model", help="the model directory is materialised")
    check.add_argument("--dir", type=Path, required=True)
    check.add_argument("--digest", required=True)
    for name, text in (
        ("cutover", "switch the gateway to a ready colour"),
        ("rollback", "switch back to the previous colour (restarted if cold)"),
    ):
        sub = commands.add_parser(name, help=text)
        if name == "cutover":
            sub.add_argument("--to", choices=COLOURS, required=True)
        sub.add_argument("--ports", required=True, help="blue=PORT,green=PORT")
        sub.add_argument("--upstream", type=Path, required=True, help="the gateway's include")
        sub.add_argument("--state", type=Path, default=STATE_FILE)
        sub.add_argument("--ready-timeout", type=float, default=300.0)
        sub.add_argument("--rollback-window", type=int, default=3600)
        if name == "cutover":
            sub.add_argument(
                "--require-gate", action="store_true", help="refuse an ungated release"
            )
            sub.add_argument(
                "--watched-by",
                action="append",
                metavar="URL",
                help="a monitoring host's Prometheus that must watch this host first (repeat)",
            )
            sub.add_argument("--host", help="this host's inventory name, as Prometheus labels it")
            sub.add_argument("--watched-timeout", type=float, default=90.0)
            sub.add_argument(
                "--drain-flag",
                type=Path,
                help="out of the edges' pools for the switch: /healthz is 503 while it exists",
            )
            sub.add_argument("--drain-wait", type=float, default=0.0, help="seconds to leave")
            sub.add_argument("--rejoin-wait", type=float, default=0.0, help="seconds to rejoin")
    status = commands.add_parser("status", help="this host's colours, releases and health")
    status.add_argument("--ports", default="blue=8001,green=8002")
    status.add_argument("--upstream", type=Path, default=Path(layout.GATEWAY_UPSTREAM))
    status.add_argument("--state", type=Path, default=STATE_FILE)
    rec = commands.add_parser("record", help="record the release a colour runs")
    rec.add_argument("--state", type=Path, default=STATE_FILE)
    rec.add_argument("--colour", choices=COLOURS, required=True)
    rec.add_argument("--release", required=True, help="JSON object with at least an id")
    generate = commands.add_parser("generate", help="answers at temperature 0, as JSON")
    generate.add_argument("--port", type=int, required=True)
    generate.add_argument("--model", required=True, help="served model name")
    generate.add_argument("--items", type=Path, required=True, help="[{id, prompt, max_tokens}]")
    generate.add_argument("--timeout", type=float, default=60.0, help="per answer")
    gate_rec = commands.add_parser("gate-record", help="record a gate's verdict")
    gate_rec.add_argument("--state", type=Path, default=STATE_FILE)
    gate_rec.add_argument("--colour", choices=COLOURS, required=True)
    gate_rec.add_argument("--verdict", type=Path, required=True, help="JSON: release, passed…")
    canary_rec = commands.add_parser("canary-record", help="record a canary's verdict")
    canary_rec.add_argument("--state", type=Path, default=STATE_FILE)
    canary_rec.add_argument("--verdict", required=True, help="JSON: release, decision, reason…")
    commands.add_parser("state-metrics", help="write the state's metrics for node exporter")
    gate_chk = commands.add_parser("gate-check", help="fail unless the release passed its gate")
    gate_chk.add_argument("--state", type=Path, default=STATE_FILE)
    gate_chk.add_argument("--colour", choices=COLOURS, required=True)
    gate_chk.add_argument("--release", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    base = f"http://127.0.0.1:{getattr(args, 'port', 0)}"
    if args.command == "ready":
        try:
            seconds = wait_ready(base, args.model, args.timeout)
        except NotReady as error:
            print(f"runtime on port {args.port} is not ready: {error}", file=sys.stderr)
            return EXIT_FAILED
        print(f"runtime on port {args.port} ready in {seconds:.1f} s")
        return EXIT_OK
    if args.command == "complete":
        body = {
            "model": args.model,
            "prompt": args.prompt,
            "max_tokens": args.max_tokens,
            "temperature": 0,
        }
        try:
            status, answer = _post_json(f"{base}/v1/completions", body, timeout=120)
        except OSError as error:
            print(f"runtime on port {args.port}: {error}", file=sys.stderr)
            return EXIT_FAILED
        print(answer.decode(errors="replace"))
        return EXIT_OK if status == 200 else EXIT_FAILED
    if args.command == "drain":
        drained, seen = drain(base, args.timeout)
        print(f"drain port {args.port}: {seen}", file=sys.stderr)
        return EXIT_OK if drained else EXIT_FAILED
    if args.command == "check-model":
        from llmhost.onhost.pull.materialise import materialised_layers  # the puller's own test

        if materialised_layers(args.dir, args.digest) is None:
            found = manifest_digest(args.dir)
            why = (
                "is missing"
                if found is None
                else f"holds {found}"
                if found != args.digest
                else "is incomplete (a file is missing, truncated or extra)"
            )
            print(
                f"model directory {args.dir} {why}, not {args.digest}. Fix: pull the model "
                "first (the model role does, in deploy/site.py)",
                file=sys.stderr,
            )
            return EXIT_CANNOT_RUN
        return EXIT_OK
    if args.command in ("cutover", "rollback"):
        return switch_command(args)
    if args.command == "state-metrics":
        write_state_metrics(Path(layout.STATE_METRICS_FILE), read_state(STATE_FILE))
        return EXIT_OK
    if args.command == "generate":
        return generate_command(base, args)
    if args.command in ("gate-record", "gate-check"):
        return gate_command(args)
    if args.command == "canary-record":
        return canary_command(args)
    if args.command == "status":
        ports = parse_ports(args.ports)
        if ports is None:
            return EXIT_CANNOT_RUN
        print(json.dumps(host_status(args.state, ports, args.upstream), sort_keys=True))
        return EXIT_OK
    try:
        release = json.loads(args.release)
        if not isinstance(release, dict) or not isinstance(release.get("id"), str):
            raise ValueError("--release must be a JSON object with a string id")
    except ValueError as error:
        print(f"record: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    with locked(args.state):
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        state = record(read_state(args.state), args.colour, release, now)
        write_state(args.state, state)
    print(f"{args.colour} runs release {release['id']} (active: {state.get('active')})")
    return EXIT_OK


def generate(
    base: str, model: str, items: Sequence[dict[str, Any]], timeout: float
) -> dict[str, Any]:
    """Each prompt in turn at temperature 0 (one at a time: batching may change the numbers).

    The gate's answers and the production eval's (``evaldrift``) are asked for here, so
    both send the engine the very same requests. Raises OSError (no answer), RuntimeError
    (an answer other than 200), or ValueError, KeyError, IndexError (not a completion).
    """
    answers = {}
    for item in items:
        body = {
            "model": model,
            "prompt": item["prompt"],
            "max_tokens": item["max_tokens"],
            "temperature": 0,
            "seed": 0,
        }
        status, raw = _post_json(f"{base}/v1/completions", body, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"{item['id']}: HTTP {status}: {raw[:200]!r}")
        answers[item["id"]] = json.loads(raw)["choices"][0]["text"]
    return answers


def generate_command(base: str, args: argparse.Namespace) -> int:
    try:
        answers = generate(base, args.model, json.loads(args.items.read_text()), args.timeout)
    except (OSError, ValueError, KeyError, IndexError, TypeError, RuntimeError) as error:
        print(f"generate on port {args.port}: {error}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(answers, sort_keys=True))
    return EXIT_OK


def gate_command(args: argparse.Namespace) -> int:
    try:
        with locked(args.state):
            state = read_state(args.state)
            if args.command == "gate-record":
                verdict = json.loads(args.verdict.read_text())
                write_state(args.state, record_gate(state, args.colour, verdict))
                print(f"gate {'passed' if verdict.get('passed') else 'failed'} recorded")
                return EXIT_OK
    except (OSError, ValueError, RuntimeError) as error:
        print(f"{args.command}: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    passed, message = check_gate(state, args.colour, args.release)
    if passed:
        print(message)
        return EXIT_OK
    if state.get("active") != args.colour and unit_active(args.colour):
        _run(["systemctl", "stop", RUNTIME_UNIT.format(args.colour)])
        message += f"; {args.colour} was stopped, {state.get('active') or 'no colour'} serves"
    print(message, file=sys.stderr)
    return EXIT_FAILED


def canary_command(args: argparse.Namespace) -> int:
    try:
        verdict = json.loads(args.verdict)
        if not isinstance(verdict, dict):
            raise ValueError("--verdict must be a JSON object")
        with locked(args.state):
            write_state(args.state, record_canary(read_state(args.state), verdict))
    except (OSError, ValueError) as error:
        print(f"canary-record: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(f"canary {verdict['decision']} recorded for release {verdict['release']}")
    return EXIT_OK


def parse_ports(text: str) -> dict[str, int] | None:
    try:
        pairs = dict(part.split("=", 1) for part in text.split(","))
        return {colour: int(pairs[colour]) for colour in COLOURS}
    except (ValueError, KeyError):
        print(f"--ports {text!r}: give blue=PORT,green=PORT", file=sys.stderr)
        return None


def switch_command(args: argparse.Namespace) -> int:
    ports = parse_ports(args.ports)
    if ports is None:
        return EXIT_CANNOT_RUN
    try:
        state = read_state(args.state)
        if args.command == "rollback":
            target, release = rollback_target(state)
            if not unit_active(target):
                print(f"rollback: {target} is cold; starting it", file=sys.stderr)
                cancel_stop(target)
                ok, detail = _run(["systemctl", "start", RUNTIME_UNIT.format(target)])
                if not ok:
                    raise RuntimeError(f"could not start {target}: {detail}")
        else:
            target = args.to
            release = (state.get("colours") or {}).get(target) or {}
        model = release.get("served_model_name") or release.get("model")
        if not model:
            raise RuntimeError(f"state.json records no release on {target}")
        print(
            cutover(
                to=target,
                port=ports[target],
                model=model,
                upstream=args.upstream,
                state_path=args.state,
                ready_timeout=args.ready_timeout,
                rollback_window=args.rollback_window,
                reason=args.command,
                require_gate=getattr(args, "require_gate", False),
                watched=(args.watched_by, args.host, args.watched_timeout)
                if getattr(args, "watched_by", None)
                else None,
                drain=(args.drain_flag, args.drain_wait, args.rejoin_wait)
                if getattr(args, "drain_flag", None)
                else None,
            )
        )
        return EXIT_OK
    except NotReady as error:
        print(f"{args.command}: {error}; the gateway was not switched", file=sys.stderr)
        return EXIT_FAILED
    except (RuntimeError, OSError, ValueError) as error:
        print(f"{args.command}: {error}", file=sys.stderr)
        return EXIT_FAILED

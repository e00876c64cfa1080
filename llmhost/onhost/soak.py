"""Soak load against an OpenAI-compatible endpoint, its statistics, and gates on them.

This is the measuring core of the soak gate (the CLI and the deploy wiring build on
it). The client is a small asyncio HTTP/1.1 client on the standard library: the
well-kept load tools (locust, k6, vegeta) either need a network install, cannot read
a streamed answer token by token, or cannot turn their results into a pass/fail gate
with a sample-size rule; timing the first token and each next one is the point here.

Error-rate claims need samples: with 0 errors in n requests, the 95 % upper bound on
the error rate is about 3/n ("rule of three"), so a gate of `error_rate_max` = 1 %
needs at least 299 requests before a pass means anything.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

Z_95_ONE_SIDED = 1.6448536269514722


@dataclass
class Sample:
    """One request: when it started, how it ended, and its token timings (seconds)."""

    start: float
    ok: bool = False
    error: str | None = None  # kind: http-<status>, timeout, connection, protocol
    ttft: float | None = None
    e2e: float | None = None
    tokens: int = 0
    itl: list[float] = field(default_factory=list)  # gaps between consecutive tokens


@dataclass(frozen=True)
class Gates:
    ttft_p95_ms: float | None = None
    e2e_p99_ms: float | None = None
    error_rate_max: float | None = None
    min_tokens_per_s: float | None = None
    confidence: float = 0.95


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100), linearly interpolated between closest ranks."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def error_rate_upper_bound(errors: int, n: int, confidence: float = 0.95) -> float:
    """One-sided upper bound on the true error rate after ``errors`` in ``n`` requests.

    Exact for 0 errors (1 - (1 - c)^(1/n), about 3/n at 95 %); the Wilson score
    bound otherwise, which stays honest for small counts where n*p is tiny.
    """
    if n <= 0:
        return 1.0
    if errors == 0:
        return 1 - (1 - confidence) ** (1 / n)
    z = Z_95_ONE_SIDED if confidence == 0.95 else _z(confidence)
    p = errors / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z * z / n))


def _z(confidence: float) -> float:
    """One-sided normal quantile by bisection (no scipy on hosts or here)."""
    low, high = 0.0, 10.0
    for _ in range(80):
        mid = (low + high) / 2
        if 0.5 * math.erfc(-mid / math.sqrt(2)) < confidence:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def minimum_requests(error_rate_max: float, confidence: float = 0.95) -> int:
    """Requests needed so that 0 errors bounds the rate below ``error_rate_max``."""
    return math.ceil(math.log(1 - confidence) / math.log(1 - error_rate_max))


def summarise(samples: Sequence[Sample], duration_s: float) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]

    def ms(values: list[float], q: float) -> float | None:
        found = percentile(values, q)
        return None if found is None else found * 1000

    ttft = [s.ttft for s in ok if s.ttft is not None]
    e2e = [s.e2e for s in ok if s.e2e is not None]
    itl = [gap for s in ok for gap in s.itl]
    tokens = sum(s.tokens for s in ok)
    errors = Counter(s.error or "unknown" for s in samples if not s.ok)
    summary: dict[str, Any] = {
        "requests": len(samples),
        "ok": len(ok),
        "errors": dict(sorted(errors.items())),
        "error_rate": (len(samples) - len(ok)) / len(samples) if samples else None,
        "duration_s": duration_s,
        "requests_per_s": len(samples) / duration_s if duration_s > 0 else None,
        "output_tokens_per_s": tokens / duration_s if duration_s > 0 else None,
    }
    for name, values in (("ttft", ttft), ("itl", itl), ("e2e", e2e)):
        for q in (50, 95, 99):
            summary[f"{name}_p{q}_ms"] = ms(values, q)
    return summary


def evaluate(summary: dict[str, Any], gates: Gates) -> list[str]:
    """Every gate the summary misses, in words; empty means pass."""
    failures = []
    limits = (("ttft_p95_ms", gates.ttft_p95_ms), ("e2e_p99_ms", gates.e2e_p99_ms))
    for key, limit in limits:
        if limit is not None and (summary[key] is None or summary[key] > limit):
            failures.append(f"{key} {summary[key]} > {limit}")
    if gates.min_tokens_per_s is not None:
        rate = summary["output_tokens_per_s"] or 0.0
        if rate < gates.min_tokens_per_s:
            failures.append(f"output_tokens_per_s {rate:.1f} < {gates.min_tokens_per_s}")
    if gates.error_rate_max is not None:
        n, errors = summary["requests"], summary["requests"] - summary["ok"]
        needed = minimum_requests(gates.error_rate_max, gates.confidence)
        bound = error_rate_upper_bound(errors, n, gates.confidence)
        if n < needed:
            failures.append(
                f"{n} requests cannot show an error rate below {gates.error_rate_max} "
                f"(needs at least {needed})"
            )
        elif bound > gates.error_rate_max:
            failures.append(
                f"error rate bound {bound:.4f} ({errors} of {n}) > {gates.error_rate_max}"
            )
    return failures


# -- the client -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    url: str  # base URL, e.g. https://gpu-lon-1:8000
    model: str
    api_key: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    timeout_s: float = 60.0


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:80]!r}")
    headers = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body_lines(reader: asyncio.StreamReader, headers: dict[str, str]) -> Any:
    """The body's lines as they arrive (chunked or not)."""
    if headers.get("transfer-encoding", "").lower() != "chunked":
        while line := await reader.readline():
            yield line
        return
    pending = b""
    while True:
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        pending += await reader.readexactly(size)
        await reader.readexactly(2)
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line + b"\n"
    if pending:
        yield pending


async def one_request(target: Target, prompt: str, max_tokens: int) -> Sample:
    """One streamed completion, timed token by token."""
    sample = Sample(start=time.perf_counter())
    parts = urlsplit(target.url)
    tls = parts.scheme == "https"
    context = ssl.create_default_context(cafile=target.ca_file) if tls else None
    body = json.dumps(
        {
            "model": target.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "stream": True,
            "temperature": 0,
        }
    ).encode()
    request = (
        f"POST {parts.path.rstrip('/')}/v1/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/json\r\nAccept: text/event-stream\r\nConnection: close\r\n"
        + (f"Authorization: Bearer {target.api_key}\r\n" if target.api_key else "")
        + f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def run() -> None:
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port or (443 if tls else 80), ssl=context
        )
        try:
            writer.write(request)
            await writer.drain()
            status, headers = await _read_headers(reader)
            if status != 200:
                sample.error = f"http-{status}"
                return
            last = None
            async for line in _body_lines(reader, headers):
                text = line.strip()
                if not text.startswith(b"data: ") or text == b"data: [DONE]":
                    continue
                if not json.loads(text[6:])["choices"][0].get("text"):
                    continue
                now = time.perf_counter()
                if last is None:
                    sample.ttft = now - sample.start
                else:
                    sample.itl.append(now - last)
                last = now
                sample.tokens += 1
            sample.e2e = time.perf_counter() - sample.start
            sample.ok = sample.tokens > 0
            if not sample.ok:
                sample.error = "protocol"
        finally:
            writer.close()

    try:
        await asyncio.wait_for(run(), timeout=target.timeout_s)
    except TimeoutError:
        sample.error = "timeout"
    except (OSError, asyncio.IncompleteReadError) as error:
        sample.error = "connection" if isinstance(error, OSError) else "protocol"
    except (ValueError, KeyError, IndexError):
        sample.error = "protocol"
    return sample


def allowed_errors(requests: int, error_rate_max: float, confidence: float = 0.95) -> int:
    """The most errors ``requests`` requests may have and still pass ``error_rate_max``.

    -1 when even none would not do (too few requests to back the claim).
    """
    allowed = -1
    while allowed + 1 <= requests and (
        error_rate_upper_bound(allowed + 1, requests, confidence) <= error_rate_max
    ):
        allowed += 1
    return allowed


def stop_when_failed(requests: int, gates: Gates) -> Callable[[Sequence[Sample]], bool]:
    """A stop rule for a gate run: stop once errors alone have decided it fails.

    A dead or hung runtime then ends the run after a few failed requests instead
    of after all of them (each failure may cost a whole request timeout).
    """
    if gates.error_rate_max is None:
        return lambda samples: False
    allowed = max(0, allowed_errors(requests, gates.error_rate_max, gates.confidence))
    counted = {"samples": 0, "failed": 0}  # checked before every request: count only new ones

    def failed_already(samples: Sequence[Sample]) -> bool:
        new = samples[counted["samples"] :]
        counted["samples"] += len(new)
        counted["failed"] += sum(1 for s in new if not s.ok)
        return counted["failed"] > allowed

    return failed_already


def _open(
    issued: int,
    requests: int,
    deadline: float | None,
    done: Sequence[Sample] = (),
    stop: Callable[[Sequence[Sample]], bool] | None = None,
) -> bool:
    return (
        issued < requests
        and (deadline is None or time.perf_counter() < deadline)
        and not (stop and stop(done))
    )


async def closed_loop(
    target: Target,
    prompts: Sequence[str],
    concurrency: int,
    requests: int,
    max_tokens: int,
    duration_s: float | None = None,
    samples: list[Sample] | None = None,
    stop: Callable[[Sequence[Sample]], bool] | None = None,
) -> list[Sample]:
    """``concurrency`` clients, each sending its next request when the last one ends.

    Stops issuing after ``requests`` or ``duration_s``, whichever comes first, or
    once ``stop(samples so far)`` says so; ``samples``, when given, fills as
    requests finish (for live progress).
    """
    done: list[Sample] = [] if samples is None else samples
    deadline = None if duration_s is None else time.perf_counter() + duration_s
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while _open(issued, requests, deadline, done, stop):
            prompt = prompts[issued % len(prompts)]
            issued += 1
            done.append(await one_request(target, prompt, max_tokens))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


async def open_loop(
    target: Target,
    prompts: Sequence[str],
    rate_per_s: float,
    requests: int,
    max_tokens: int,
    duration_s: float | None = None,
    samples: list[Sample] | None = None,
    seed: int = 0,
    stop: Callable[[Sequence[Sample]], bool] | None = None,
) -> list[Sample]:
    """Requests arriving as a Poisson process at ``rate_per_s``, whatever the answers do."""
    done: list[Sample] = [] if samples is None else samples
    deadline = None if duration_s is None else time.perf_counter() + duration_s
    arrivals = random.Random(seed)

    async def tracked(prompt: str) -> None:
        done.append(await one_request(target, prompt, max_tokens))

    tasks: list[asyncio.Task[None]] = []
    while _open(len(tasks), requests, deadline, done, stop):
        tasks.append(asyncio.create_task(tracked(prompts[len(tasks) % len(prompts)])))
        await asyncio.sleep(arrivals.expovariate(rate_per_s))
    await asyncio.gather(*tasks)
    return done


async def run_load(
    target: Target,
    prompts: Sequence[str],
    *,
    concurrency: int,
    rate_per_s: float | None,
    requests: int,
    max_tokens: int,
    duration_s: float | None,
    samples: list[Sample],
    stop: Callable[[Sequence[Sample]], bool] | None = None,
) -> float:
    """Closed loop, or open loop when ``rate_per_s`` is given; returns the wall time."""
    started = time.perf_counter()
    if rate_per_s:
        await open_loop(
            target, prompts, rate_per_s, requests, max_tokens, duration_s, samples, stop=stop
        )
    else:
        await closed_loop(
            target, prompts, concurrency, requests, max_tokens, duration_s, samples, stop
        )
    return time.perf_counter() - started


def sample_from(document: dict[str, Any]) -> Sample:
    return Sample(**{k: v for k, v in document.items() if k in Sample.__dataclass_fields__})


# -- on a host: the deploy's gate runs the load next to the runtime ---------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run a soak on this machine and print the raw samples as JSON (for the gate).

    The gate runs it on each serving host (``onhost.pyz soak``), so the load
    reaches the idle colour over loopback; the control machine turns the samples
    into the result, the gates' verdict and the report.
    """
    import argparse

    parser = argparse.ArgumentParser(prog="onhost.pyz soak", description=main.__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--prompts", help="a JSON list of prompts")
    parser.add_argument("--error-rate-max", type=float, help="stop once errors decide a fail")
    args = parser.parse_args(argv)
    prompts = ["Hello"]
    if args.prompts:
        with open(args.prompts) as handle:
            prompts = [str(p) for p in json.load(handle)] or prompts
    target = Target(url=args.url, model=args.model, timeout_s=args.timeout)
    stop = stop_when_failed(args.requests, Gates(error_rate_max=args.error_rate_max))
    samples: list[Sample] = []
    elapsed = asyncio.run(
        run_load(
            target,
            prompts,
            concurrency=args.concurrency,
            rate_per_s=args.rate,
            requests=args.requests,
            max_tokens=args.max_tokens,
            duration_s=args.duration,
            samples=samples,
            stop=stop,
        )
    )
    json.dump({"duration_s": elapsed, "samples": [asdict(s) for s in samples]}, sys.stdout)
    return 0

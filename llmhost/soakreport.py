"""A soak run's result: the JSON document (with its schema) and a self-contained HTML report.

The HTML report draws its plots as inline SVG (latency over time, a TTFT histogram,
throughput per second), so it opens anywhere, offline, with nothing to install.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llmhost.onhost.soak import Gates, Sample

SCHEMA_FILE = Path(__file__).with_name("soak-result.schema.json")
WIDTH, HEIGHT, PAD = 640, 220, 40


def result_document(
    *,
    target: dict[str, Any],
    load: dict[str, Any],
    summary: dict[str, Any],
    gates: Gates,
    failures: list[str],
    gate: dict[str, Any] | None = None,
    evaluation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The result; a deploy's gate adds where it ran (``gate``) and the eval's outcome."""
    document = {
        "version": 1,
        "passed": not failures,
        "failures": failures,
        "target": target,
        "load": load,
        "gates": {k: v for k, v in asdict(gates).items() if v is not None},
        "summary": summary,
    }
    if gate is not None:
        document["gate"] = gate
    if evaluation is not None:
        document["eval"] = evaluation
    return document


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return loaded


def _axes(title: str, x_label: str, y_label: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'role="img" aria-label="{html.escape(title)}">',
        f'<text x="{WIDTH / 2}" y="14" text-anchor="middle" font-size="13">'
        f"{html.escape(title)}</text>",
        f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH - 10}" y2="{HEIGHT - PAD}" '
        'stroke="black"/>',
        f'<line x1="{PAD}" y1="20" x2="{PAD}" y2="{HEIGHT - PAD}" stroke="black"/>',
        f'<text x="{WIDTH / 2}" y="{HEIGHT - 8}" text-anchor="middle" font-size="11">'
        f"{html.escape(x_label)}</text>",
        f'<text x="12" y="{HEIGHT / 2}" font-size="11" transform="rotate(-90 12 {HEIGHT / 2})" '
        f'text-anchor="middle">{html.escape(y_label)}</text>',
    ]


def _scale(value: float, top: float, length: float) -> float:
    return 0.0 if top <= 0 else value / top * length


def latency_plot(samples: Sequence[Sample]) -> str:
    """End-to-end latency of each request against when it started; failures in red."""
    if not samples:
        return ""
    t0 = min(s.start for s in samples)
    span = max(s.start - t0 for s in samples) or 1.0
    top = max((s.e2e or 0.0) for s in samples) or 1.0
    parts = _axes("Latency over time", "seconds into the run", f"e2e (max {top * 1000:.0f} ms)")
    for s in samples:
        x = PAD + _scale(s.start - t0, span, WIDTH - PAD - 10)
        y = HEIGHT - PAD - _scale(s.e2e or 0.0, top, HEIGHT - PAD - 20)
        colour = "#1f77b4" if s.ok else "#d62728"
        parts.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{colour}"/>')
    return "\n".join([*parts, "</svg>"])


def ttft_histogram(samples: Sequence[Sample], bins: int = 20) -> str:
    values = [s.ttft for s in samples if s.ok and s.ttft is not None]
    if not values:
        return ""
    top = max(values) or 1.0
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, int(value / top * bins))] += 1
    most = max(counts)
    parts = _axes("Time to first token", f"TTFT (0 to {top * 1000:.0f} ms)", "requests")
    width = (WIDTH - PAD - 10) / bins
    for number, count in enumerate(counts):
        height = _scale(count, most, HEIGHT - PAD - 20)
        parts.append(
            f'<rect class="bar" x="{PAD + number * width:.1f}" y="{HEIGHT - PAD - height:.1f}" '
            f'width="{width - 1:.1f}" height="{height:.1f}" fill="#2ca02c"/>'
        )
    return "\n".join([*parts, "</svg>"])


def throughput_plot(samples: Sequence[Sample]) -> str:
    """Output tokens finished per second of the run."""
    done = [s for s in samples if s.ok and s.e2e is not None]
    if not done:
        return ""
    t0 = min(s.start for s in samples)
    seconds = int(max(s.start + (s.e2e or 0) - t0 for s in done)) + 1
    per_second = [0] * seconds
    for s in done:
        per_second[min(seconds - 1, int(s.start + (s.e2e or 0) - t0))] += s.tokens
    top = max(per_second) or 1
    parts = _axes("Throughput", "seconds into the run", f"tokens/s (max {top})")
    points = " ".join(
        f"{PAD + _scale(i + 0.5, seconds, WIDTH - PAD - 10):.1f},"
        f"{HEIGHT - PAD - _scale(v, top, HEIGHT - PAD - 20):.1f}"
        for i, v in enumerate(per_second)
    )
    parts.append(f'<polyline class="line" points="{points}" fill="none" stroke="#ff7f0e"/>')
    return "\n".join([*parts, "</svg>"])


def _rows(pairs: Any) -> str:
    return "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in pairs
    )


def eval_section(evaluation: dict[str, Any] | None) -> str:
    """The eval's score against its baseline, each check, and each drifted answer."""
    if not evaluation:
        return ""
    shown = ("eval_set", "score", "baseline", "golden", "changed")
    overview = _rows((k, evaluation[k]) for k in shown if k in evaluation)
    checks = _rows(
        (r["id"], f"{'pass' if r['passed'] else 'FAIL'} ({r['check']}): {r['answer']!r}")
        for r in evaluation.get("results", [])
    )
    drifted = _rows(
        (d["id"], f"golden {d['golden']!r} / now {d['answer']!r}")
        for d in evaluation.get("drift", [])
    )
    return (
        f"<h2>Eval</h2>\n<table>{overview}</table>\n<h3>Checks</h3>\n<table>{checks}</table>\n"
        f"<h3>Drift ({len(evaluation.get('drift', []))} answers)</h3>\n<table>{drifted}</table>\n"
    )


def html_report(document: dict[str, Any], samples: Sequence[Sample]) -> str:
    verdict = "PASS" if document["passed"] else "FAIL"
    failures = "".join(f"<li>{html.escape(f)}</li>" for f in document["failures"])
    kind = "Gate" if document.get("gate") else "Soak"
    context = document.get("gate") or document["target"]
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>llmhost {kind.lower()}: "
        f"{verdict}</title></head><body>\n<h1>{kind} {verdict}</h1>\n"
        f"<p>{html.escape(json.dumps(context))}</p>\n"
        f"<p>{html.escape(json.dumps(document['load']))}</p>\n"
        f"<ul>{failures}</ul>\n<h2>Soak</h2>\n<table>{_rows(document['summary'].items())}</table>\n"
        f"{latency_plot(samples)}\n{ttft_histogram(samples)}\n{throughput_plot(samples)}\n"
        f"{eval_section(document.get('eval'))}"
        "</body></html>\n"
    )


def write_reports(directory: Path, document: dict[str, Any], samples: Sequence[Sample]) -> Path:
    """result.json and report.html in ``directory``; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "result.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (directory / "report.html").write_text(html_report(document, samples))
    return directory

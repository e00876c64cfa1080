"""The Grafana dashboards (templates/monitoring/dashboards/*.json), checked without Grafana.

Each file is valid JSON with unique panel ids; every panel, query, variable and annotation
names the provisioned data source by its fixed uid; every query parses with Prometheus's own
parser (`promtool check rules`, each query as a recording rule); and every metric a query
reads is one an exporter emits. Those names come from the project's exporters themselves
(their render code run on sample input), from lists taken from the engines' sources at the
versions this project pins, and from node exporter's and Prometheus's documentation; each
list says where it comes from. A panel on a name no exporter emits fails here, not on an
empty graph during an incident.

The helpers at the top (the queries of a dashboard, Grafana's variables substituted, the
metric names of a PromQL expression) are also what tests/e2e/test_grafana.py evaluates
against a live Prometheus.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmhost.onhost import auditexporter, evaldrift, runtimectl
from llmhost.paths import REPO_ROOT
from roles.monitoring.grafana import DATASOURCE_UID, dashboard_sources
from tests.unit.test_auditexporter import COMPLETION, UNAUTHORIZED
from tests.unit.test_gpuexporter import FakeNvml, collector

DATASOURCE = {"type": "prometheus", "uid": DATASOURCE_UID}
BOARDS = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in dashboard_sources()}

# -- the names a dashboard may read ------------------------------------------------------------

# Prometheus's own series for every target and rule ("Jobs and instances", "Alerting rules").
PROMETHEUS = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "ALERTS"}

# Debian 12's prometheus-node-exporter (1.5.0) with the collectors the role leaves on, plus
# systemd and textfile: the names as its collectors (cpu, filesystem, meminfo, loadavg,
# netdev, systemd, textfile) export them.
NODE_EXPORTER = {
    "node_cpu_seconds_total",
    "node_filesystem_avail_bytes",
    "node_filesystem_free_bytes",
    "node_filesystem_size_bytes",
    "node_memory_MemAvailable_bytes",
    "node_memory_MemTotal_bytes",
    "node_load1",
    "node_load5",
    "node_load15",
    "node_network_receive_bytes_total",
    "node_network_transmit_bytes_total",
    "node_systemd_unit_state",
    "node_textfile_scrape_error",
    "node_boot_time_seconds",
}

# llama.cpp's llama-server --metrics, as vendored by llama-cpp-python 0.3.36 (the source
# inventories/runtimes.toml pins): tools/server/server-task.cpp,
# server_task_result_metrics::to_metrics(). There is no KV-cache gauge in this version.
LLAMA_CPP = {
    f"llamacpp:{name}"
    for name in (
        # counters
        "prompt_tokens_total",
        "prompt_tokens_cached_total",
        "prompt_seconds_total",
        "tokens_predicted_total",
        "tokens_predicted_seconds_total",
        "n_decode_total",
        "n_tokens_max",
        "spec_decode_num_draft_tokens_total",
        "spec_decode_num_accepted_tokens_total",
        "spec_decode_num_drafts_total",
        "spec_decode_num_accepted_tokens_per_pos_total",
        # gauges
        "prompt_tokens_seconds",
        "predicted_tokens_seconds",
        "requests_processing",
        "requests_deferred",
        "n_busy_slots_per_decode",
    )
}


def histogram(name: str) -> set[str]:
    return {f"{name}_bucket", f"{name}_sum", f"{name}_count"}


# vLLM 0.10.1.1 (inventories/locks/vllm-0.10.1.1.txt): vllm/v1/metrics/loggers.py,
# PrometheusStatLogger. prometheus_client adds `_total` to counters and `_bucket`, `_sum`,
# `_count` to histograms. `gpu_cache_usage_perc` is deprecated there (kv_cache_usage_perc).
VLLM_GAUGES = (
    "num_requests_running",
    "num_requests_waiting",
    "gpu_cache_usage_perc",
    "kv_cache_usage_perc",
    "lora_requests_info",
    "cache_config_info",
)
VLLM_COUNTERS = (
    "gpu_prefix_cache_queries",
    "gpu_prefix_cache_hits",
    "prefix_cache_queries",
    "prefix_cache_hits",
    "num_preemptions",
    "prompt_tokens",
    "generation_tokens",
    "request_success",
)
VLLM_HISTOGRAMS = (
    "request_prompt_tokens",
    "request_generation_tokens",
    "iteration_tokens_total",
    "request_max_num_generation_tokens",
    "request_params_n",
    "request_params_max_tokens",
    "time_to_first_token_seconds",
    "time_per_output_token_seconds",
    "e2e_request_latency_seconds",
    "request_queue_time_seconds",
    "request_inference_time_seconds",
    "request_prefill_time_seconds",
    "request_decode_time_seconds",
)
VLLM = (
    {f"vllm:{name}" for name in VLLM_GAUGES}
    | {f"vllm:{name}_total" for name in VLLM_COUNTERS}
    | {n for name in VLLM_HISTOGRAMS for n in histogram(f"vllm:{name}")}
)

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]")


def rendered(text: str) -> set[str]:
    """The metric names of the samples in a Prometheus text exposition."""
    return {m.group(1) for line in text.splitlines() if (m := SAMPLE.match(line))}


def exporter_names() -> set[str]:
    """Every name the project's own exporters write, from their render code."""
    audit = auditexporter.Metrics()
    answered = json.loads(COMPLETION) | {"prompt_tokens": "12", "completion_tokens": "30"}
    audit.add_lines([json.dumps(answered).encode(), UNAUTHORIZED.encode()])
    gpu = collector(FakeNvml())
    gpu.collect_once()
    gpu.record_xid(gpu.devices()[1][0], 79)
    without_driver = FakeNvml()
    without_driver.init_error = runtimectl_nvml_missing()
    down = collector(without_driver)
    down.collect_once()
    state = {
        "active": "blue",
        "colours": {
            "blue": {"id": "r2", "model": "tiny", "gate": {"passed": True}},
            "green": {"id": "r1", "model": "tiny", "gate": {"passed": False}},
        },
        "last_gate": {"release": "r2", "eval_score": 0.93},
    }
    last_eval = {"release": "r2", "colour": "blue", "score": 0.9, "cases": 10, "compared": 10,
                 "drift": 1, "regressed": 0, "finished": 1.7e9, "duration_s": 3.5}  # fmt: skip
    return (
        rendered(audit.render())
        | rendered(gpu.render())
        | rendered(down.render())
        | rendered(runtimectl.state_metrics(state))
        | rendered(evaldrift.metrics_text(last_eval, "engine timeout", 0.05))
    )


def runtimectl_nvml_missing() -> Exception:
    from llmhost.onhost import nvml

    return nvml.NvmlLibraryNotFound(nvml.LIBRARY_NOT_FOUND, "nvmlInit_v2")


def recorded() -> set[str]:
    """The names the project's recording rules make (the cost), as the role renders them."""
    from tests.unit.test_alert_rules import rules

    return {
        rule["record"]
        for group in yaml.safe_load(rules())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def emitted() -> set[str]:
    return exporter_names() | recorded() | PROMETHEUS | NODE_EXPORTER | LLAMA_CPP | VLLM


# -- the queries of a dashboard ----------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    board: str
    where: str  # "panel 3 'Requests per second' A", "annotation 'Cutovers'", "variable host"
    expr: str
    panel: dict[str, Any] | None = None


LABEL_VALUES = re.compile(r"label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)\s*", re.S)


def queries(name: str, board: dict[str, Any]) -> list[Query]:
    """Every PromQL expression the dashboard runs: panel targets, annotations, variables."""
    found = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            where = f"panel {panel['id']} {panel['title']!r} {target['refId']}"
            found.append(Query(name, where, target["expr"], panel))
    for annotation in board["annotations"]["list"]:
        found.append(
            Query(name, f"annotation {annotation['name']!r}", annotation["target"]["expr"])
        )
    for variable in board["templating"]["list"]:
        match = LABEL_VALUES.fullmatch(variable["query"]["query"])
        assert match, f"{name}: variable {variable['name']} is not label_values(...)"
        if match["selector"]:
            found.append(Query(name, f"variable {variable['name']}", match["selector"]))
    return found


def all_queries() -> list[Query]:
    return [query for name, board in BOARDS.items() for query in queries(name, board)]


# Grafana's own variables, as concrete values (the e2e test evaluates with these too).
BUILT_IN = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def substitute(expr: str, values: dict[str, str]) -> str:
    """``expr`` with each ``$var`` / ``${var}`` replaced; a variable not in ``values`` raises."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in values:
            raise KeyError(f"${name} is not a variable of the dashboard")
        return values[name]

    return VARIABLE.sub(one, expr)


def board_values(board: dict[str, Any]) -> dict[str, str]:
    """The built-in variables, and each of the board's at its "All" value."""
    return {**BUILT_IN, **{v["name"]: v["allValue"] for v in board["templating"]["list"]}}


def concrete(query: Query) -> str:
    return substitute(query.expr, board_values(BOARDS[query.board]))


# -- the metric names of a PromQL expression ---------------------------------------------------

TOKEN = re.compile(
    r"""
      (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    | (?P<number>0[xX][0-9a-fA-F]+
        |(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:(?:ms|[smhdwy])(?:\d+(?:ms|[smhdwy]))*)?)
    | (?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    | (?P<space>\s+)
    | (?P<other>.)
    """,
    re.X | re.S,
)
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}  # fmt: skip
OPERATORS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
# Followed by a parenthesised list of label names.
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects: not functions, aggregations, operators, label
    names (in ``{}`` or after ``by``/``on``/...), strings, numbers or durations. A selector
    without a name counts its ``__name__="..."`` matcher."""
    tokens = [(m.lastgroup, m.group()) for m in TOKEN.finditer(expr) if m.lastgroup != "space"]
    names: set[str] = set()
    braces = brackets = 0
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else (None, "")
        if kind == "other":
            braces += {"{": 1, "}": -1}.get(text, 0)
            brackets += {"[": 1, "]": -1}.get(text, 0)
        elif braces:
            if text == "__name__" and tokens[index + 1 : index + 3][:1] == [("other", "=")]:
                value = tokens[index + 2]
                if value[0] == "string":
                    names.add(value[1][1:-1])
        elif kind == "name" and not brackets:
            word = text.lower()
            if word in LABEL_LISTS and following == ("other", "("):
                index = tokens.index(("other", ")"), index)  # label names hold no parentheses
            elif word not in AGGREGATIONS | OPERATORS and following != ("other", "("):
                names.add(text)
        index += 1
    assert braces == 0 and brackets == 0, f"unbalanced braces or brackets in {expr!r}"
    return names


# -- the tests ---------------------------------------------------------------------------------


def test_the_five_dashboards_are_there_with_their_uids_and_say_they_are_managed():
    titles = {board["title"]: name for name, board in BOARDS.items()}
    assert set(titles) == {
        "Cluster health",
        "Incident timeline",
        "Runtime",
        "Quality",
        "Usage and cost",
    }
    for name, board in BOARDS.items():
        assert board["uid"] == f"llmhost-{name}", name
        assert board["description"].startswith("managed by llmhost"), name
        assert f"templates/monitoring/dashboards/{name}.json" in board["description"]
        assert board["editable"] is False and "llmhost" in board["tags"]
        assert board["panels"], name
    assert 4 <= len(BOARDS["cluster-health"]["panels"]) <= 6


def test_each_dashboard_has_unique_panel_ids_and_titles_and_no_overlapping_panels():
    for name, board in BOARDS.items():
        ids = [panel["id"] for panel in board["panels"]]
        titles = [panel["title"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: panel ids {ids}"
        assert len(titles) == len(set(titles)), f"{name}: panel titles {titles}"
        cells: dict[tuple[int, int], int] = {}
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, f"{name}: panel {panel['id']} is too wide"
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, (
                        f"{name}: panels {cells[(x, y)]} and {panel['id']} overlap"
                    )
                    cells[(x, y)] = panel["id"]


def test_every_panel_query_variable_and_annotation_uses_the_provisioned_datasource():
    for name, board in BOARDS.items():
        for panel in board["panels"]:
            assert panel["datasource"] == DATASOURCE, f"{name}: panel {panel['id']}"
            assert panel["targets"], f"{name}: panel {panel['id']} has no query"
            for target in panel["targets"]:
                assert target["datasource"] == DATASOURCE, f"{name}: {panel['id']} {target}"
        for annotation in board["annotations"]["list"]:
            assert annotation["datasource"] == DATASOURCE, f"{name}: {annotation['name']}"
        for variable in board["templating"]["list"]:
            assert variable["datasource"] == DATASOURCE, f"{name}: ${variable['name']}"


def test_every_variable_a_query_uses_is_the_dashboards_or_grafanas():
    for query in all_queries():
        try:
            concrete(query)
        except KeyError as error:
            pytest.fail(f"{query.board}: {query.where}: {error}")
    assert "$" not in "".join(concrete(q) for q in all_queries())


def test_every_metric_a_dashboard_reads_is_one_an_exporter_emits():
    known = emitted()
    unknown = [
        f"{query.board}: {query.where}: {name}"
        for query in all_queries()
        for name in sorted(metric_names(concrete(query)))
        if name not in known
    ]
    assert not unknown, "no exporter emits these:\n" + "\n".join(unknown)


def test_the_name_check_catches_a_name_nobody_emits():
    # llama.cpp's KV-cache gauge is not in the pinned version: a panel on it would be empty.
    expr = 'avg by (host) (llamacpp:kv_cache_usage_ratio{host=~".*"})'
    assert metric_names(expr) - emitted() == {"llamacpp:kv_cache_usage_ratio"}


def test_the_exporters_own_render_output_is_where_their_names_come_from():
    names = exporter_names()
    assert {
        "llmhost_gateway_requests_total",
        "llmhost_gateway_first_byte_seconds_bucket",
        "DCGM_FI_DEV_GPU_UTIL",
        "llmhost_gpu_up_reason",
        "llmhost_gpu_xid_errors_total",
        "llmhost_colour_active",
        "llmhost_gate_passed",
        "llmhost_gate_eval_score",
        "llmhost_gateway_tokens_total",
        "llmhost_eval_score",
        "llmhost_eval_drift_cases",
        "llmhost_eval_last_run_timestamp_seconds",
    } <= names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (host, le) (rate(a_bucket{host=~".*",le!="1"}[5m]))', {"a_bucket"}),
        ("rate(llamacpp:prompt_tokens_total[1h30m] offset 5m)", {"llamacpp:prompt_tokens_total"}),
        ("a and on (host, colour) (b == 1)", {"a", "b"}),
        ("a - on (host, release) group_left () max by (host, release) (b)", {"a", "b"}),
        ("sum(rate(x_total[5m])) by (job) > bool 0.5 or vector(0)", {"x_total"}),
        ('count({__name__="named", job="node"}) unless absent(up)', {"named", "up"}),
        ('label_replace(up, "dst", "not_a_metric", "src", "(.*)")', {"up"}),
        ("histogram_quantile(0.95, c_bucket) > Inf", {"c_bucket"}),
        ("time() - d_timestamp_seconds @ 1609746000", {"d_timestamp_seconds"}),
    ],
)
def test_metric_names_are_the_selectors_only(expr, names):
    assert metric_names(expr) == names


def test_the_dashboards_cover_what_each_is_for():
    def names(board: str, title: str | None = None) -> set[str]:
        return {
            n
            for q in queries(board, BOARDS[board])
            if title is None or (q.panel and q.panel["title"] == title)
            for n in metric_names(concrete(q))
        }

    timeline = BOARDS["incident-timeline"]
    assert timeline["graphTooltip"] == 1, "a shared crosshair: one time axis"
    assert {
        "llmhost_gateway_requests_total",
        "DCGM_FI_DEV_GPU_UTIL",
        "llamacpp:requests_deferred",
        "vllm:num_requests_waiting",
    } <= names("incident-timeline")
    annotations = " ".join(a["target"]["expr"] for a in timeline["annotations"]["list"])
    assert "changes(llmhost_colour_active" in annotations and "llmhost_gate_passed" in annotations
    runtime = names("runtime")
    assert any(n.startswith("llamacpp:") for n in runtime)
    assert any(n.startswith("vllm:") for n in runtime)
    tokens = [
        q.panel
        for q in all_queries()
        if q.panel and "llmhost_gateway_tokens_total" in q.expr and "identity" in q.expr
    ]
    assert tokens, "a panel of tokens per identity"
    assert {"llmhost_eval_score", "llmhost_eval_drift_cases"} <= names("quality")
    cost = names("usage-cost", "Cost per team and feature, per hour")
    assert cost == {"llmhost:token_cost_per_second"}, "cost from the inventory's price table"


# -- with Prometheus's own parser and evaluator ---------------------------------------------

needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (scripts/setup installs Debian's prometheus package)",
)


def promtool(directory: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *arguments], capture_output=True, text=True, cwd=directory, timeout=120
    )


@needs_promtool
def test_every_query_parses_with_prometheus_parser(tmp_path):
    groups = [
        {"name": f"{q.board}: {q.where}", "rules": [{"record": f"query_{n}", "expr": concrete(q)}]}
        for n, q in enumerate(all_queries())
    ]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    checked = promtool(tmp_path, "check", "rules", "queries.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(groups)} rules found" in checked.stdout


@needs_promtool
def test_the_check_with_promtool_fails_on_a_broken_query(tmp_path):
    groups = [{"name": "broken", "rules": [{"record": "q", "expr": "sum by (host (up)"}]}]
    (tmp_path / "queries.yml").write_text(yaml.safe_dump({"groups": groups}))
    assert promtool(tmp_path, "check", "rules", "queries.yml").returncode != 0


def annotation_expr(board: str, name: str) -> str:
    (found,) = [q for q in queries(board, BOARDS[board]) if q.where == f"annotation {name!r}"]
    return concrete(found)


@needs_promtool
def test_annotations_mark_a_cutover_and_each_gate_verdict_once(tmp_path):
    """Grafana marks the steps where an annotation query has a value above 0: a cutover at
    the minute the colour switched, a new gate verdict where its series appeared."""
    cutover = annotation_expr("incident-timeline", "Cutovers")
    passed = annotation_expr("incident-timeline", "Gate passed")
    failed = annotation_expr("incident-timeline", "Gate failed")
    blue, green = (f'llmhost_colour_active{{host="a",colour="{c}"}}' for c in ("blue", "green"))
    gated = 'llmhost_gate_passed{host="a",colour="green",release="r2"}'
    refused = '{host="b",colour="green",release="r3"}'
    series = {
        blue: "1 1 1 0 0 0 0 0",
        green: "0 0 0 1 1 1 1 1",
        gated: "_ _ 1 1 1 1 1 1",
        f"llmhost_gate_passed{refused}": "_ _ 0 0 0 0 0 0",
    }

    def sample(labels: str) -> list[dict[str, Any]]:
        return [{"labels": labels, "value": 1}]

    expected = [
        (cutover, "3m", sample(green)),  # the minute the gateway switched to green
        (cutover, "7m", []),
        (passed, "2m", sample(gated)),  # the verdict's series appeared
        (passed, "6m", []),
        (failed, "2m", sample(refused)),
        (failed, "6m", []),
    ]
    suite = {
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in series.items()],
                "promql_expr_test": [
                    {"expr": expr, "eval_time": at, "exp_samples": samples}
                    for expr, at, samples in expected
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(suite, sort_keys=False))
    result = promtool(tmp_path, "test", "rules", "tests.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alerts_runbook_section_names_the_dashboard_to_open():
    runbook = (REPO_ROOT / "docs" / "runbooks" / "monitoring.md").read_text(encoding="utf-8")
    titles = {board["title"] for board in BOARDS.values()}
    sections = re.split(r"^## ", runbook, flags=re.M)[1:]
    assert len(sections) >= 13
    for section in sections:
        name = section.splitlines()[0].strip()
        lines = [x for x in section.splitlines() if x.startswith("Dashboard: ")]
        assert len(lines) == 1, f"{name}: one `Dashboard:` line, not {len(lines)}"
        first = lines[0].removeprefix("Dashboard: ").split(" (")[0]
        assert first in titles, f"{name}: {first!r} is no dashboard"
        table = re.search(rf"^\| {re.escape(first)} \|([^\n]*)", runbook, re.M)
        assert table and name in table.group(1), f"{name} not in the table row of {first}"

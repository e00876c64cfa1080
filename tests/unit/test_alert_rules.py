"""The alert rules, as the monitoring role renders them, checked and unit-tested with promtool.

Each alert has a case where it fires (with its labels and annotations, exactly) and one
where it does not; `promtool test rules` evaluates them over synthetic series. A rule
that stopped firing, fired too early or named the wrong host fails here, not at 3 a.m.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmhost.paths import REPO_ROOT
from llmhost.render import render

pytestmark = pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not installed (scripts/setup installs Debian's prometheus package)",
)

RUNBOOK = "docs/runbooks/monitoring.md#"
SLO = {"host": "gpu-1", "model": "tiny", "seconds": 0.8}


PRICES = [("completion", 1.5), ("prompt", 0.5)]  # per million tokens


def rules() -> str:
    return render(
        "monitoring/rules.yml.j2",
        ttft_slos=[SLO],
        token_prices=PRICES,
        currency="EUR",
        error_ratio=0.05,
        limited_ratio=0.10,
        gpu_memory_ratio=0.95,
        gpu_temperature_c=85,
    )


def alert(name: str, labels: dict[str, str], summary: str) -> dict[str, Any]:
    return {
        "exp_labels": labels,
        "exp_annotations": {"summary": summary, "runbook": RUNBOOK + name.lower()},
    }


def case(name: str, series: dict[str, str], at: str, expected: list[dict[str, Any]]) -> dict:
    return {
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": name, "exp_alerts": expected}],
    }


GPU = 'gpu="0",UUID="GPU-1",modelName="NVIDIA L40S",Hostname="gpu-1",host="gpu-1"'
GPU_LABELS = {"gpu": "0", "UUID": "GPU-1", "modelName": "NVIDIA L40S", "Hostname": "gpu-1"}

CASES = [
    # HostDown: 2 minutes of failed scrapes, and not before
    case("HostDown", {'up{job="node",host="a"}': "0x10"}, "5m", [
        alert("HostDown", {"severity": "page", "job": "node", "host": "a"},
              "a: node exporter unreachable for 2 minutes"),
    ]),
    case("HostDown", {'up{job="node",host="a"}': "1 1 0 0"}, "3m", []),
    case("NodeMetricsAbsent", {'up{job="gpu",host="a"}': "1x10"}, "6m", [
        alert("NodeMetricsAbsent", {"severity": "page", "job": "node"},
              "no node exporter target is scraped at all: monitoring is blind"),
    ]),
    case("NodeMetricsAbsent", {'up{job="node",host="a"}': "1x10"}, "6m", []),
    case("DiskFillingUp", {
        'node_filesystem_avail_bytes{host="a",mountpoint="/var",fstype="ext4"}':
            "100000-1000x480",
        'node_filesystem_size_bytes{host="a",mountpoint="/var",fstype="ext4"}': "1000000x480",
    }, "7h", [
        alert("DiskFillingUp", {"severity": "ticket", "host": "a", "mountpoint": "/var",
                                "fstype": "ext4"},
              "a: /var fills within a day (model store, logs)"),
    ]),
    case("DiskFillingUp", {
        'node_filesystem_avail_bytes{host="a",mountpoint="/var",fstype="ext4"}': "900000x480",
        'node_filesystem_size_bytes{host="a",mountpoint="/var",fstype="ext4"}': "1000000x480",
    }, "7h", []),
    # the runtime
    case("RuntimeUnitFailed", {
        'node_systemd_unit_state{host="a",name="llmhost-runtime@blue.service",state="failed"}':
            "1x5",
    }, "3m", [
        alert("RuntimeUnitFailed", {"severity": "page", "host": "a",
                                    "name": "llmhost-runtime@blue.service", "state": "failed"},
              "a: llmhost-runtime@blue.service failed"),
    ]),
    case("RuntimeUnitFailed", {
        'node_systemd_unit_state{host="a",name="llmhost-runtime@blue.service",state="failed"}':
            "0x5",
    }, "3m", []),
    case("ActiveColourNotServing", {
        'llmhost_colour_active{host="a",colour="blue",job="node"}': "1x5",
        'up{job="runtime",host="a",colour="blue"}': "0x5",
        'up{job="runtime",host="a",colour="green"}': "1x5",
    }, "3m", [
        alert("ActiveColourNotServing", {"severity": "page", "host": "a", "colour": "blue",
                                         "job": "node"},
              "a: the active colour blue does not answer its metrics scrape"),
    ]),
    case("ActiveColourNotServing", {
        'llmhost_colour_active{host="a",colour="blue",job="node"}': "1x5",
        'llmhost_colour_active{host="a",colour="green",job="node"}': "0x5",
        'up{job="runtime",host="a",colour="blue"}': "1x5",
        'up{job="runtime",host="a",colour="green"}': "0x5",
    }, "3m", []),
    case("RuntimeCrashLooping", {
        'node_systemd_service_restart_total{host="a",name="llmhost-runtime@green.service"}':
            "0 0 1 1 2 2 3 3 4 4",
    }, "9m", [
        alert("RuntimeCrashLooping", {"severity": "page", "host": "a",
                                      "name": "llmhost-runtime@green.service"},
              "a: llmhost-runtime@green.service restarted 4 times in 15 minutes"),
    ]),
    case("RuntimeCrashLooping", {
        'node_systemd_service_restart_total{host="a",name="llmhost-runtime@green.service"}':
            "5 5 5 5 5 5 6 6 6 6",
    }, "9m", []),
    case("RuntimeMetricsAbsent", {'up{job="runtime",host="a",colour="blue"}': "1x10"}, "7m", [
        alert("RuntimeMetricsAbsent", {"severity": "ticket", "host": "a", "colour": "blue"},
              "a blue: the engine answers but exports none of the metrics the alerts use "
              "(renamed in a new version?)"),
    ]),
    case("RuntimeMetricsAbsent", {
        'up{job="runtime",host="a",colour="blue"}': "1x10",
        'llamacpp:requests_processing{job="runtime",host="a",colour="blue"}': "0x10",
    }, "7m", []),
    case("TimeToFirstTokenOverSLO", {
        'llmhost_gateway_first_byte_seconds_bucket{host="gpu-1",colour="blue",le="0.5"}':
            "0+0x20",
        'llmhost_gateway_first_byte_seconds_bucket{host="gpu-1",colour="blue",le="1"}':
            "0+0x20",
        'llmhost_gateway_first_byte_seconds_bucket{host="gpu-1",colour="blue",le="+Inf"}':
            "0+10x20",
    }, "17m", [
        alert("TimeToFirstTokenOverSLO", {"severity": "page", "model": "tiny", "host": "gpu-1"},
              "gpu-1: time to first token p95 above 0.8 s, the SLO of model tiny"),
    ]),
    case("TimeToFirstTokenOverSLO", {
        'llmhost_gateway_first_byte_seconds_bucket{host="gpu-1",colour="blue",le="0.5"}':
            "0+10x20",
        'llmhost_gateway_first_byte_seconds_bucket{host="gpu-1",colour="blue",le="1"}':
            "0+10x20",
        'llmhost_gateway_first_byte_seconds_bucket{host="gpu-1",colour="blue",le="+Inf"}':
            "0+10x20",
    }, "17m", []),
    # releases: the gate, the eval, the registry they come from
    case("GateFailed", {
        'llmhost_gate_passed{host="a",job="node",colour="green",release="3f2a9c0e11d4"}': "0x3",
        'llmhost_gate_passed{host="a",job="node",colour="blue",release="0c1d2e3f4a5b"}': "1x3",
    }, "2m", [
        alert("GateFailed", {"severity": "ticket", "host": "a", "job": "node", "colour": "green",
                             "release": "3f2a9c0e11d4"},
              "a: release 3f2a9c0e11d4 on green failed its gate and was not cut over"),
    ]),
    case("GateFailed", {
        'llmhost_gate_passed{host="a",job="node",colour="blue",release="0c1d2e3f4a5b"}': "1x3",
    }, "2m", []),
    case("EvalDrift", {
        'llmhost_gate_eval_drift{host="a",job="node",release="3f2a9c0e11d4"}': "2x3",
    }, "2m", [
        alert("EvalDrift", {"severity": "ticket", "host": "a", "job": "node",
                            "release": "3f2a9c0e11d4"},
              "a: release 3f2a9c0e11d4 gave 2 eval answers that differ from its golden set"),
    ]),
    case("EvalDrift", {
        'llmhost_gate_eval_drift{host="a",job="node",release="3f2a9c0e11d4"}': "0x3",
    }, "2m", []),
    case("RegistryDown", {
        'node_systemd_unit_state{host="r",name="docker-registry.service",state="active"}': "0x5",
    }, "4m", [
        alert("RegistryDown", {"severity": "ticket", "host": "r",
                               "name": "docker-registry.service", "state": "active"},
              "r: the model registry is not running (pulls fall back to the next registry)"),
    ]),
    case("RegistryDown", {
        'node_systemd_unit_state{host="r",name="docker-registry.service",state="active"}':
            "1 0 1 1 1",
    }, "4m", []),
    # the gateway
    case("GatewayErrorRate", {
        'llmhost_gateway_requests_total{host="a",identity="t",colour="blue",status="200"}':
            "0+90x20",
        'llmhost_gateway_requests_total{host="a",identity="t",colour="blue",status="502"}':
            "0+10x20",
    }, "15m", [
        alert("GatewayErrorRate", {"severity": "page", "host": "a"},
              "a: more than 5.0 % of requests answered 5xx"),
    ]),
    case("GatewayErrorRate", {
        'llmhost_gateway_requests_total{host="a",identity="t",colour="blue",status="200"}':
            "0+99x20",
        'llmhost_gateway_requests_total{host="a",identity="t",colour="blue",status="502"}':
            "0+1x20",
    }, "15m", []),
    case("GatewayRateLimited", {
        'llmhost_gateway_requests_total{host="a",identity="t",colour="blue",status="200"}':
            "0+50x40",
        'llmhost_gateway_requests_total{host="a",identity="t",colour="blue",status="429"}':
            "0+50x40",
    }, "30m", [
        alert("GatewayRateLimited", {"severity": "ticket", "host": "a"},
              "a: more than 10.0 % of requests refused by rate limits (429)"),
    ]),
    case("GatewayRateLimited", {
        'llmhost_gateway_requests_total{host="a",identity="t",colour="blue",status="200"}':
            "0+99x40",
        'llmhost_gateway_requests_total{host="a",identity="t",colour="blue",status="429"}':
            "0+1x40",
    }, "30m", []),
    # the edge
    case("EdgeNoLocalHost", {
        'haproxy_backend_active_servers{job="edge",host="e",proxy="llmhost_serving"}': "2 0x5",
    }, "4m", [
        alert("EdgeNoLocalHost", {"severity": "page", "job": "edge", "host": "e",
                                  "proxy": "llmhost_serving"},
              "e: no serving host of the edge's own cluster is up: requests go to the "
              "fallback tiers, or are refused"),
    ]),
    case("EdgeNoLocalHost", {
        'haproxy_backend_active_servers{job="edge",host="e",proxy="llmhost_serving"}': "2 1x5",
    }, "4m", []),
    # GPUs
    case("GpuMemoryNearlyFull", {
        f"DCGM_FI_DEV_FB_USED{{{GPU}}}": "47000x10", f"DCGM_FI_DEV_FB_FREE{{{GPU}}}": "1000x10",
    }, "7m", [
        alert("GpuMemoryNearlyFull", {"severity": "ticket", "host": "gpu-1", **GPU_LABELS},
              "gpu-1 GPU 0: memory above 95 %"),
    ]),
    case("GpuMemoryNearlyFull", {
        f"DCGM_FI_DEV_FB_USED{{{GPU}}}": "40000x10", f"DCGM_FI_DEV_FB_FREE{{{GPU}}}": "8000x10",
    }, "7m", []),
    case("GpuTemperatureHigh", {f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}": "90x10"}, "7m", [
        alert("GpuTemperatureHigh", {"severity": "page", "host": "gpu-1", **GPU_LABELS},
              "gpu-1 GPU 0: 90 C"),
    ]),
    case("GpuTemperatureHigh", {f"DCGM_FI_DEV_GPU_TEMP{{{GPU}}}": "80x10"}, "7m", []),
    case("GpuUncorrectedErrors", {
        f'llmhost_gpu_xid_errors_total{{{GPU},xid="79"}}': "0 0 0 1 1 1",
    }, "5m", [
        alert("GpuUncorrectedErrors", {"severity": "page", "host": "gpu-1", "xid": "79",
                                       **GPU_LABELS},
              "gpu-1 GPU 0: uncorrected ECC or XID 79 errors"),
    ]),
    case("GpuUncorrectedErrors", {
        f'llmhost_gpu_xid_errors_total{{{GPU},xid="79"}}': "2x20",
        f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{GPU}}}": "0x20",
    }, "15m", []),
    case("GpuExporterDown", {'llmhost_gpu_up{host="a"}': "0x10"}, "7m", [
        alert("GpuExporterDown", {"severity": "ticket", "host": "a"},
              "a: NVML unavailable (llmhost_gpu_up_reason says why)"),
    ]),
    case("GpuExporterDown", {'llmhost_gpu_up{host="a"}': "1x10"}, "7m", []),
    # the production eval: below the release's gated score less the host's tolerance
    case("EvalScoreBelowGate", {
        'llmhost_eval_score{job="node",host="a",release="r1",colour="blue"}': "0.5x10",
        'llmhost_gate_eval_score{job="node",host="a",release="r1"}': "0.75x10",
        'llmhost_gate_eval_score{job="node",host="a",release="r0"}': "0.25x10",
        'llmhost_eval_tolerance{job="node",host="a"}': "0.05x10",
    }, "7m", [
        alert("EvalScoreBelowGate", {"severity": "ticket", "job": "node", "host": "a",
                                     "release": "r1", "colour": "blue"},
              "a: release r1 on blue scores 0.5 on its eval set in production, below its "
              "gate's score less the tolerance"),
    ]),
    case("EvalScoreBelowGate", {
        # within the tolerance of its own gate's score (another release's is no baseline)
        'llmhost_eval_score{job="node",host="a",release="r1",colour="blue"}': "0.72x10",
        'llmhost_gate_eval_score{job="node",host="a",release="r1"}': "0.75x10",
        'llmhost_gate_eval_score{job="node",host="b",release="r1"}': "1x10",
        'llmhost_eval_tolerance{job="node",host="a"}': "0.05x10",
        # a release whose gate recorded no eval score has nothing to fall below
        'llmhost_eval_score{job="node",host="b",release="r9",colour="green"}': "0x10",
        'llmhost_eval_tolerance{job="node",host="b"}': "0.05x10",
    }, "7m", []),
    case("EvalRunFailing", {'llmhost_eval_up{job="node",host="a"}': "0x20"}, "20m", [
        alert("EvalRunFailing", {"severity": "ticket", "job": "node", "host": "a"},
              "a: the production eval could not run (llmhost_eval_up_reason says why)"),
    ]),
    case("EvalRunFailing", {'llmhost_eval_up{job="node",host="a"}': "0x10 1x10"}, "20m", []),
]  # fmt: skip


def promtool(tmp_path: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *arguments], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


def run_tests(tmp_path: Path, cases: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "rules.yml").write_text(rules())
    suite = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": cases}
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(suite, sort_keys=False))
    return promtool(tmp_path, "test", "rules", "tests.yml")


def test_the_rules_pass_promtool_check(tmp_path):
    (tmp_path / "rules.yml").write_text(rules())
    checked = promtool(tmp_path, "check", "rules", "rules.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_alert_has_a_firing_and_a_quiet_case():
    names = [
        r["alert"] for g in yaml.safe_load(rules())["groups"] for r in g["rules"] if "alert" in r
    ]
    fired = [
        c["alert_rule_test"][0]["alertname"] for c in CASES if c["alert_rule_test"][0]["exp_alerts"]
    ]
    quiet = [
        c["alert_rule_test"][0]["alertname"]
        for c in CASES
        if not c["alert_rule_test"][0]["exp_alerts"]
    ]
    assert sorted(names) == sorted(set(names)) == sorted(fired) == sorted(quiet)


def test_every_alert_has_its_section_in_the_runbook():
    runbook = (REPO_ROOT / "docs" / "runbooks" / "monitoring.md").read_text()
    sections = {line[3:].strip().lower() for line in runbook.splitlines() if line.startswith("## ")}
    for group in yaml.safe_load(rules())["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue  # a recording rule
            assert rule["annotations"]["runbook"] == RUNBOOK + rule["alert"].lower()
            assert rule["alert"].lower() in sections, rule["alert"]


def test_each_alert_fires_when_it_should_and_stays_quiet_otherwise(tmp_path):
    result = run_tests(tmp_path, CASES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_tokens_are_priced_per_identity_team_and_feature_by_the_inventorys_table(tmp_path):
    tokens = "llmhost_gateway_attributed_tokens_total"
    labels = 'host="a",identity="alice",team="research",feature="chat"'
    cost = {
        "interval": "1m",
        "input_series": [
            # 600 prompt and 60 completion tokens a minute: 10/s and 1/s
            {"series": f'{tokens}{{{labels},kind="prompt"}}', "values": "0+600x20"},
            {"series": f'{tokens}{{{labels},kind="completion"}}', "values": "0+60x20"},
        ],
        "promql_expr_test": [
            {
                "expr": "llmhost:token_cost_per_second",
                "eval_time": "10m",
                # (10 * 0.5 + 1 * 1.5) / 1e6 per second
                "exp_samples": [
                    {
                        "labels": 'llmhost:token_cost_per_second{identity="alice",team="research",'
                        'feature="chat",currency="EUR"}',
                        "value": 6.5e-06,
                    }
                ],
            }
        ],
    }
    result = run_tests(tmp_path, [cost])
    assert result.returncode == 0, result.stdout + result.stderr
    unpriced = render(
        "monitoring/rules.yml.j2",
        ttft_slos=[SLO],
        token_prices=[],
        currency="EUR",
        error_ratio=0.05,
        limited_ratio=0.10,
        gpu_memory_ratio=0.95,
        gpu_temperature_c=85,
    )
    assert "llmhost:token_cost_per_second" not in unpriced, "no price table: no cost series"


def test_a_wrong_expectation_fails_the_suite(tmp_path):
    """The harness can fail: HostDown expected from a host that is up."""
    wrong = case(
        "HostDown",
        {'up{job="node",host="a"}': "1x10"},
        "5m",
        CASES[0]["alert_rule_test"][0]["exp_alerts"],
    )
    assert run_tests(tmp_path, [wrong]).returncode != 0

"""The canary's plan, its reading of HAProxy's counters, and its verdict (no host here).

The edges' real counters, the share they give and the rollback are proven in
tests/e2e/test_edge.py; `show stat` below is what HAProxy 2.6.12 answered, verbatim.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyinfra.api import Inventory

from llmhost.canary import (
    Counts,
    EdgeShare,
    judge,
    parse_stat,
    restore_commands,
    shares,
    start_commands,
    totals,
)
from llmhost.errors import ConfigError
from roles.edge.policy import CanaryRule

SHOW_STAT = (Path(__file__).parent / "data" / "haproxy-2.6-show-stat.csv").read_text()
RULE = CanaryRule(
    percent=10, window_s=60, max_error_percent=1.0, max_latency_ratio=2.0, min_requests=20
)
CANARY = {"edge_canary_percent": 10, "edge_canary_window_s": 60}


def fleet(edges: dict[str, dict], serving=("gpu-a", "gpu-b", "gpu-c")) -> Inventory:
    hosts = [(name, {"model_name": "m"}) for name in serving]
    hosts += [(name, data) for name, data in edges.items()]
    return Inventory((hosts, {}), edge=(list(edges), {}), serving=(list(serving), {}))


def test_show_stat_is_read_per_server_and_backend_as_haproxy_writes_it():
    found = parse_stat(SHOW_STAT)
    assert set(found) == {
        ("llmhost_serving", "tb1"),
        ("llmhost_serving", "tb2"),
        ("llmhost_canary", "tb1"),
    }, "frontends and backends' own rows are not servers"
    assert found[("llmhost_serving", "tb1")] == Counts(answers=4, errors=0, response_ms=2)
    assert found[("llmhost_canary", "tb1")].answers == 0


def test_an_answer_that_is_not_show_stat_is_an_error():
    with pytest.raises(Exception, match="answered `show stat`"):
        parse_stat("Unknown command.\n")


def test_each_edge_in_front_of_the_batch_takes_a_share_and_keeps_its_other_hosts():
    inventory = fleet({"edge-1": CANARY, "edge-2": CANARY, "edge-3": {}})
    rule, parts = shares(inventory, ["gpu-a"])
    assert rule == RULE
    assert parts == [
        EdgeShare("edge-1", ["gpu-a"], ["gpu-b", "gpu-c"]),
        EdgeShare("edge-2", ["gpu-a"], ["gpu-b", "gpu-c"]),
    ], "edge-3 takes no percentage canary"
    assert shares(fleet({"edge-1": {}}), ["gpu-a"]) is None


def test_edges_that_disagree_or_have_no_other_host_are_refused_before_anything_changes():
    with pytest.raises(ConfigError) as raised:
        shares(
            fleet({"edge-1": CANARY, "edge-2": {**CANARY, "edge_canary_percent": 20}}), ["gpu-a"]
        )
    assert raised.value.key == "edge_canary_percent" and "edge-1 and edge-2" in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        shares(fleet({"edge-1": CANARY}, serving=("gpu-a",)), ["gpu-a"])
    assert "no other host would take the rest" in str(raised.value)
    assert raised.value.host == "edge-1"


def test_the_share_takes_the_canary_out_of_the_pool_and_the_restore_undoes_all_of_it():
    share = EdgeShare("edge-1", ["gpu-a"], ["gpu-b"])
    assert start_commands(share, 10) == (
        "enable server llmhost_canary/gpu-a; set server llmhost_serving/gpu-a weight 0; "
        "set map /etc/haproxy/llmhost/canary.map percent 10"
    )
    assert restore_commands(share) == (
        "set map /etc/haproxy/llmhost/canary.map percent 0; "
        "set server llmhost_serving/gpu-a weight 100%; disable server llmhost_canary/gpu-a"
    )


def test_counters_are_summed_over_the_edges_since_the_window_began():
    parts = [EdgeShare("e1", ["a"], ["b"]), EdgeShare("e2", ["a"], ["b"])]
    before = {
        ("e1", "llmhost_canary", "a"): Counts(100, 5, 40),
        ("e1", "llmhost_serving", "b"): Counts(900, 0, 20),
    }
    now = {
        ("e1", "llmhost_canary", "a"): Counts(110, 8, 60),
        ("e2", "llmhost_canary", "a"): Counts(30, 1, 30),
        ("e1", "llmhost_serving", "b"): Counts(1000, 0, 20),
        ("e2", "llmhost_serving", "b"): Counts(100, 0, 10),
    }
    answers, errors, canary_ms, stable_ms = totals(parts, before, now)
    assert (answers, errors) == (40, 4), "10 and 3 new on e1, 30 and 1 on e2"
    assert canary_ms == round((10 * 60 + 30 * 30) / 40)
    assert stable_ms == 15


@pytest.mark.parametrize(
    ("answers", "errors", "canary_ms", "final", "decision", "reason"),
    [
        (19, 19, 10, False, None, None),  # too few answers to judge yet
        (20, 1, 10, False, "rolled back", "1 of 20 answers were 5xx (5.0% > 1%)"),
        (100, 1, 10, False, None, None),  # 1%: not over
        (100, 1, 10, True, "promoted", "1 of 100 answers were 5xx (1.0%)"),
        (100, 0, 41, True, "rolled back", "41 ms, is over 2 times the other hosts' (20 ms)"),
        (100, 0, 41, False, None, None),  # latency: judged at the end alone
        (5, 0, 10, True, "inconclusive", "only 5 answers in 60 s"),
    ],
)
def test_the_verdict(answers, errors, canary_ms, final, decision, reason):
    verdict = judge(RULE, answers, errors, canary_ms, 20, 60.0, final=final)
    if decision is None:
        assert verdict is None
        return
    assert verdict is not None and verdict.decision == decision
    assert reason in verdict.reason


def test_latency_is_not_judged_when_the_rule_says_so_or_nothing_was_timed():
    unjudged = CanaryRule(10, 60, 1.0, 0, 20)
    assert judge(unjudged, 100, 0, 900, 20, 60, final=True).decision == "promoted"  # type: ignore[union-attr]
    assert judge(RULE, 100, 0, None, 20, 60, final=True).decision == "promoted"  # type: ignore[union-attr]

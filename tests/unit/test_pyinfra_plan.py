"""The plan helper's fake facts: plain values, values per argument set, and rules."""

from __future__ import annotations

from typing import Any

import pytest
from pyinfra import host
from pyinfra.api import FactBase, deploy
from pyinfra.facts.files import File
from pyinfra.facts.server import Which
from pyinfra.operations import files

from roles._common.facts import HostState
from tests.unit.pyinfra_plan import per_argument, plan


class Owned(FactBase[str]):
    """A fact with a required and a defaulted argument (none of the project's has two)."""

    def command(self, path: str, user: str = "root") -> str:
        return f"stat -c %U {path} {user}"


def looked_up(facts: dict[str, Any], *lookups: tuple[type, dict[str, Any]]) -> list[Any]:
    """What a deploy planned with ``facts`` gets for each ``(fact class, kwargs)``."""
    seen: list[Any] = []

    @deploy("look up facts")
    def read() -> None:
        for cls, kwargs in lookups:
            seen.append(host.get_fact(cls, **kwargs))

    plan(read, {}, facts=facts)
    return seen


def test_a_value_given_for_one_path_is_seen_for_that_path_only():
    facts = {"File": per_argument({"path=/etc/x": {"mode": 644}})}
    assert looked_up(facts, (File, {"path": "/etc/x"}), (File, {"path": "/etc/y"})) == [
        {"mode": 644},
        None,
    ]


def test_other_arguments_get_the_facts_default():
    facts = {"HostState": per_argument({"path=/srv/state.json": {"active": "blue"}})}
    (other,) = looked_up(facts, (HostState, {"path": "/var/lib/llmhost/state.json"}))
    assert other == HostState.default() == {"active": None, "colours": {}, "history": []}


def test_each_listed_argument_set_gets_its_own_value():
    facts = {"File": per_argument({"path=/etc/x": {"mode": 600}, "path=/etc/y": {"mode": 644}})}
    seen = looked_up(facts, (File, {"path": "/etc/y"}), (File, {"path": "/etc/x"}))
    assert seen == [{"mode": 644}, {"mode": 600}]


def test_operations_decide_from_the_value_for_their_path():
    facts = {"File": per_argument({"path=/etc/x": {"mode": 644}})}

    @deploy("remove files")
    def remove() -> None:
        files.file(name="x", path="/etc/x", present=False)
        files.file(name="y", path="/etc/y", present=False)

    assert plan(remove, {}, facts=facts) == {"x": ["rm -f /etc/x"], "y": []}


def test_a_plain_value_is_seen_for_any_arguments():
    facts = {"File": {"mode": 640}}
    seen = looked_up(facts, (File, {"path": "/etc/x"}), (File, {"path": "/etc/y"}))
    assert seen == [{"mode": 640}, {"mode": 640}]


def test_a_fact_not_given_is_its_default_or_the_fresh_host_value():
    seen = looked_up({}, (File, {"path": "/etc/x"}), (Which, {"command": "nginx"}))
    assert seen == [None, "/usr/bin/nginx"]


def test_global_arguments_are_not_fact_arguments():
    facts = {"File": per_argument({"path=/etc/x": {"mode": 644}})}
    seen = looked_up(facts, (File, {"path": "/etc/x", "_sudo": True, "_su_user": None}))
    assert seen == [{"mode": 644}]


def test_several_arguments_are_sorted_by_name_and_defaults_may_be_left_out():
    facts = {
        "Owned": per_argument(
            {"path=/srv/a": "root", "path=/srv/b, user=app": "app", "path=/srv/c, user=root": "c"}
        )
    }
    seen = looked_up(
        facts,
        (Owned, {"path": "/srv/a"}),
        (Owned, {"path": "/srv/a", "user": "root"}),
        (Owned, {"path": "/srv/a", "user": "app"}),
        (Owned, {"path": "/srv/b", "user": "app"}),
        (Owned, {"path": "/srv/b"}),
        (Owned, {"path": "/srv/c"}),
    )
    assert seen == ["root", "root", None, "app", None, "c"]


def test_a_value_may_hold_a_comma():
    facts = {"File": per_argument({"path=/srv/a,b": {"mode": 600}})}
    assert looked_up(facts, (File, {"path": "/srv/a,b"}), (File, {"path": "/srv/a"})) == [
        {"mode": 600},
        None,
    ]


@pytest.mark.parametrize("key", ["user=app, path=/srv/a", "path=/a, path=/b", "/etc/x", "=x"])
def test_a_key_not_in_the_format_is_refused(key):
    with pytest.raises(ValueError, match="per_argument key"):
        per_argument({key: 1})


@pytest.mark.parametrize("key", ["paht=/etc/x", "path=/etc/x, user=root", ""])
def test_a_key_that_could_never_match_fails_the_lookup(key):
    with pytest.raises(ValueError, match=r"File\.command takes \['path'\]"):
        looked_up({"File": per_argument({key: {"mode": 644}})}, (File, {"path": "/etc/x"}))


def test_an_argument_the_fact_does_not_take_fails_the_lookup():
    facts = {"File": per_argument({"path=/etc/x": {"mode": 644}})}
    with pytest.raises(TypeError, match="paht"):
        looked_up(facts, (File, {"paht": "/etc/x"}))
    with pytest.raises(TypeError, match="paht"):
        looked_up({"File": {"mode": 644}}, (File, {"paht": "/etc/x"}))


def test_a_callable_is_called_with_the_facts_arguments():
    facts = {"Which": lambda command: f"/opt/bin/{command}"}
    seen = looked_up(facts, (Which, {"command": "nginx", "_sudo": True}))
    assert seen == ["/opt/bin/nginx"]

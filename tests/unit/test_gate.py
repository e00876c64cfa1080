"""The gate: eval sets and their checks, golden sets and drift, and the gate role's plan."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmhost import evalset
from llmhost.catalog import find
from llmhost.errors import ConfigError
from llmhost.onhost.layout import ONHOST_APP
from roles.gate import gate, preflight
from roles.gate.defaults import GateSettings
from roles.gate.operations import GateRun, judge_eval, record_golden
from roles.gateway.cutover import cutover
from tests.unit import test_runtime_role as runtime_tests
from tests.unit.pyinfra_plan import plan

catalog = runtime_tests.catalog  # the same catalog and recorded build (autouse fixture)
host_data = runtime_tests.host_data

EVAL_LINES = [
    {"id": "exact", "prompt": "Say hi", "max_tokens": 4, "check": {"exact": "hi"}},
    {"id": "regex", "prompt": "A number", "check": {"regex": r"^\s*\d+"}},
    {"id": "contains", "prompt": "Capital of France", "check": {"contains": "Paris"}},
    {
        "id": "json",
        "prompt": "JSON please",
        "check": {"json_schema": {"type": "object", "required": ["a"]}},
    },
]


def write_eval_set(directory: Path, lines: list[object], name: str = "evals/tiny.jsonl") -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines)
    )
    return path


# -- eval sets ---------------------------------------------------------------------------


def test_each_check_kind_judges_its_answer(tmp_path: Path):
    loaded = evalset.load_eval_set(write_eval_set(tmp_path, EVAL_LINES))
    assert [i.kind for i in loaded.items] == ["exact", "regex", "contains", "json_schema"]
    assert loaded.items[1].max_tokens == evalset.DEFAULT_MAX_TOKENS
    good = {"exact": " hi\n", "regex": " 42 apples", "contains": "It is Paris.", "json": '{"a": 1}'}
    bad = {"exact": "hi there", "regex": "forty", "contains": "Lyon", "json": '{"b": 1}'}
    assert evalset.score(loaded, good)[0] == 1.0
    score, results = evalset.score(loaded, bad)
    assert score == 0.0 and not any(r["passed"] for r in results)
    assert evalset.score(loaded, {**good, "json": "not json"})[0] == 0.75
    assert evalset.score(loaded, {})[0] == 0.0, "a missing answer fails its check"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("{not json", "not JSON"),
        ('["a list"]', "not a JSON object"),
        ({"prompt": "p", "check": {"exact": "x"}}, "`id` is missing"),
        ({"id": "a", "check": {"exact": "x"}}, "`prompt` is missing"),
        ({"id": "a", "prompt": "p", "max_tokens": 0, "check": {"exact": "x"}}, "`max_tokens`"),
        ({"id": "a", "prompt": "p", "check": {"fuzzy": "x"}}, "is not one check"),
        ({"id": "a", "prompt": "p", "check": {"exact": "x", "regex": "y"}}, "is not one check"),
        ({"id": "a", "prompt": "p", "check": {"regex": "("}}, "does not compile"),
        ({"id": "a", "prompt": "p", "check": {"contains": 3}}, "needs a string"),
        ({"id": "a", "prompt": "p", "check": {"json_schema": {"type": 5}}}, "schema is invalid"),
    ],
)
def test_a_bad_eval_line_is_refused_with_its_file_and_line(tmp_path: Path, line, problem):
    path = write_eval_set(tmp_path, [EVAL_LINES[0], line])
    with pytest.raises(ConfigError) as raised:
        evalset.load_eval_set(path)
    assert f"{path}:2" in str(raised.value) and problem in str(raised.value)
    assert raised.value.key == "eval_set"


def test_an_empty_missing_or_duplicated_eval_set_is_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        evalset.load_eval_set(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="is empty"):
        evalset.load_eval_set(write_eval_set(tmp_path, ["", "  "]))
    with pytest.raises(ConfigError, match="uses id 'exact' twice"):
        evalset.load_eval_set(write_eval_set(tmp_path, [EVAL_LINES[0], EVAL_LINES[0]]))


def test_every_problem_of_an_eval_set_is_listed_with_its_line(tmp_path: Path):
    path = tmp_path / "evals" / "bad.jsonl"
    path.parent.mkdir()
    lines = [
        json.dumps(EVAL_LINES[0]).encode(),
        b'{"id": "a", "promt": "p", "check": {"exact": "x"}}',
        b'{"id": "b", "prompt": "p", "check": {"regexp": "x"}}',
        b'{"id": "c", "prompt": "caf\xe9", "check": {"exact": "x"}}',
        b"",
        json.dumps(EVAL_LINES[0]).encode(),
    ]
    path.write_bytes(b"\n".join(lines))
    problems = [str(p) for p in evalset.eval_set_problems(path)]
    assert len(problems) == 4
    assert f"{path}:2: `promt` is not a key of an eval line (did you mean `prompt`?)" in problems[0]
    assert f"{path}:3: " in problems[1] and "did you mean `regex`?" in problems[1]
    assert f"{path}:4: is not UTF-8 (byte 0xe9 at column 27)" in problems[2]
    assert f"{path}:6: uses id 'exact' twice (first on line 1)" in problems[3]
    with pytest.raises(ConfigError, match=f"{path}:2: "):
        evalset.load_eval_set(path)
    assert evalset.eval_set_problems(write_eval_set(tmp_path, EVAL_LINES)) == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"id": "a", "id": "b", "prompt": "p", "check": {"exact": "x"}}', "'id' appears twice"),
        ('{"id": "a", "prompt": "p", "max_tokens": NaN, "check": {"exact": "x"}}', "NaN"),
        ({"id": "a", "prompt": "p", "check": {"contains": ""}}, "cannot fail"),
        ({"id": "a", "prompt": "p", "check": {"regex": ".*"}}, "matches any answer"),
        ({"id": "a", "prompt": "p", "check": {"regex": r"\s*"}}, "matches any answer"),
        ({"id": "a", "prompt": "p", "check": {"regex": "[[:digit:]]+"}}, "nested set"),
        ({"id": "a", "prompt": "p", "check": {"regex": "a{2,1}"}}, "does not compile"),
        ({"id": "a", "prompt": "p", "check": {"regex": 5}}, "needs a string"),
        ({"id": "a", "prompt": "   ", "check": {"exact": "x"}}, "`prompt` is missing"),
        ({"id": "a", "prompt": "p", "check": {"json_schema": {"$ref": "#/$defs/x"}}},
         "does not resolve"),
        ({"id": "a", "prompt": "p", "check": {"json_schema": {"$ref": "https://x.test/s.json"}}},
         "does not resolve"),
        ({"id": "a", "prompt": "p", "check": {"json_schema": {"$ref": "#nowhere"}}},
         "does not resolve"),
        ({"id": "a", "prompt": "p", "check": {"json_schema": "object"}}, "schema is invalid"),
    ],
    ids=["duplicate-key", "nan", "empty-contains", "dot-star", "optional-space", "posix-class",
         "bad-repeat", "regex-number", "blank-prompt", "missing-pointer", "remote-ref",
         "missing-anchor", "schema-string"],
)  # fmt: skip
def test_an_eval_check_that_cannot_work_or_cannot_fail_is_refused(tmp_path: Path, line, problem):
    path = write_eval_set(tmp_path, [EVAL_LINES[0], line])
    (found,) = evalset.eval_set_problems(path)
    assert f"{path}:2: " in str(found) and problem in str(found)


def test_local_schema_references_and_a_line_separator_inside_a_string_are_fine(tmp_path: Path):
    schema = {"$defs": {"n": {"type": "integer"}, "a": {"$anchor": "num", "type": "number"}},
              "properties": {"x": {"$ref": "#/$defs/n"}, "y": {"$ref": "#num"}}}  # fmt: skip
    line = {"id": "j", "prompt": "p\u2028q", "check": {"json_schema": schema}}
    path = tmp_path / "evals" / "ok.jsonl"
    path.parent.mkdir()
    path.write_text(json.dumps(line, ensure_ascii=False) + "\n")
    loaded = evalset.load_eval_set(path)
    assert loaded.items[0].prompt == "p\u2028q"
    assert evalset.passes(loaded.items[0], '{"x": 1, "y": 2.5}')
    assert not evalset.passes(loaded.items[0], '{"x": 1.5}')


# Patterns the validation accepts, and answers: the timed search must agree with `re` itself.
REGEX_CASES = [
    (r"^\s*\d+", [" 42 apples", "forty", "\n7"]),
    (r"(?i)paris\b", ["PARIS.", "Parisian", "in paris"]),
    (r"^yes$", ["yes", "yes\n", "yes\n\n", "yess"]),
    (r"\bcolou?r\b", ["colour", "color", "colr"]),
    (r"[^\x00-\x7f]", ["é", "e"]),
    (r"(\w+)\s\1", ["the the", "the then"]),
    (r"\d{3}-\d{4}", ["555-1234", "55-1234", "\u0665\u0665\u0665-\u0661\u0662\u0663\u0664"]),
    (r"(?s)a.b", ["a\nb", "ab"]),
    (r"(?m)^b", ["a\nb", "ab"]),
]


@pytest.mark.parametrize(("pattern", "answers"), REGEX_CASES)
def test_the_timed_regex_search_gives_the_answers_of_re(pattern, answers):
    import re

    for answer in answers:
        expected = re.search(pattern, answer) is not None
        assert evalset.regex_search(pattern, answer, 10) is expected, (pattern, answer)


def test_a_catastrophic_regex_fails_its_check_instead_of_hanging(tmp_path: Path):
    import time

    item = evalset.EvalItem("slow", "p", 4, "regex", r"^(a+)+$")
    started = time.monotonic()
    reason = evalset.check_answer(item, "a" * 40 + "b", regex_timeout_s=0.5)
    assert reason == "regex search timed out after 0.5 s"
    assert time.monotonic() - started < 5
    loaded = evalset.EvalSet(tmp_path / "x.jsonl", (item,), "0" * 64)
    score, (result,) = evalset.score(loaded, {"slow": "a" * 5})
    assert score == 1.0 and result["passed"] and "reason" not in result


def test_a_failed_check_says_why(tmp_path: Path):
    loaded = evalset.load_eval_set(write_eval_set(tmp_path, EVAL_LINES))
    _, results = evalset.score(loaded, {"exact": "no", "json": "{"})
    reasons = {r["id"]: r.get("reason") for r in results}
    assert reasons == {
        "exact": "the answer is not the expected text",
        "regex": "no answer",
        "contains": "no answer",
        "json": "the answer is not JSON",
    }


# -- golden sets, drift and the eval's verdict -------------------------------------------------


def gate_run(models_dir: Path, eval_set, release: dict, replaced=None, **settings) -> GateRun:
    return GateRun(
        host="h1",
        colour="green",
        port=8002,
        release=release,
        served_model="tiny",
        model="tiny",
        models_dir=models_dir,
        replaced=replaced,
        settings=GateSettings(**settings),
        limits={"eval_tolerance": 0.0},
        eval_set=eval_set,
        prompts=("Hello",),
    )


RELEASE_1 = {"id": "r1", "model_digest": "sha256:1", "executable": "/x/llama-server"}
RELEASE_2 = {"id": "r2", "model_digest": "sha256:2", "executable": "/x/llama-server"}
GOOD = {"exact": "hi", "regex": "42", "contains": "Paris", "json": '{"a": 1}'}


def test_a_passed_release_records_its_golden_set_once(tmp_path: Path):
    loaded = evalset.load_eval_set(write_eval_set(tmp_path, EVAL_LINES))
    run = gate_run(tmp_path, loaded, RELEASE_1)
    outcome, failures = judge_eval(run, loaded, GOOD)
    assert failures == [] and outcome["baseline"] is None and outcome["golden"] is None
    record_golden(run, outcome, "2026-01-01T00:00:00Z")
    path = evalset.golden_path(tmp_path, "tiny", "r1")
    golden = json.loads(path.read_text())
    assert golden["score"] == 1.0 and golden["answers"]["exact"]["text"] == "hi"
    assert golden["eval_set_sha256"] == loaded.sha256
    record_golden(run, {**outcome, "answers": {}}, "later")
    assert json.loads(path.read_text()) == golden, "a golden set is never overwritten"
    again, failures = judge_eval(run, loaded, GOOD)
    assert failures == [] and again["drift"] == [] and again["golden"] == "r1"


def test_a_changed_model_digest_under_a_recorded_golden_set_is_reported_as_drift(
    tmp_path: Path,
):
    loaded = evalset.load_eval_set(write_eval_set(tmp_path, EVAL_LINES))
    first = gate_run(tmp_path, loaded, RELEASE_1)
    record_golden(first, judge_eval(first, loaded, GOOD)[0], "2026-01-01T00:00:00Z")
    second = gate_run(tmp_path, loaded, RELEASE_2, replaced="r1")
    changed = {**GOOD, "regex": "42 and more"}
    outcome, failures = judge_eval(second, loaded, changed)
    assert failures == [], "drift is reported, not failed, unless asked"
    assert outcome["drift"] == [{"id": "regex", "golden": "42", "answer": "42 and more"}]
    assert outcome["changed"] == ["model digest sha256:1 -> sha256:2"]
    strict = gate_run(tmp_path, loaded, RELEASE_2, replaced="r1", gate_fail_on_drift=True)
    assert judge_eval(strict, loaded, changed)[1] == ["1 eval answers drifted from golden set r1"]


def test_a_lower_score_than_the_replaced_release_fails_beyond_the_tolerance(tmp_path: Path):
    loaded = evalset.load_eval_set(write_eval_set(tmp_path, EVAL_LINES))
    first = gate_run(tmp_path, loaded, RELEASE_1)
    record_golden(first, judge_eval(first, loaded, GOOD)[0], "2026-01-01T00:00:00Z")
    worse = {**GOOD, "contains": "Lyon"}
    outcome, failures = judge_eval(gate_run(tmp_path, loaded, RELEASE_2, "r1"), loaded, worse)
    assert outcome["score"] == 0.75 and outcome["baseline"] == 1.0
    assert failures == ["eval score 0.750 < baseline 1.000 - 0.0"]
    lenient = replace(gate_run(tmp_path, loaded, RELEASE_2, "r1"), limits={"eval_tolerance": 0.25})
    assert judge_eval(lenient, loaded, worse)[1] == []
    floor = replace(lenient, limits={"eval_tolerance": 0.25, "eval_min_score": 0.9})
    assert judge_eval(floor, loaded, worse)[1] == ["eval score 0.750 < eval_min_score 0.9"]


def test_an_edited_eval_set_has_no_baseline_and_compares_only_unchanged_prompts(tmp_path: Path):
    loaded = evalset.load_eval_set(write_eval_set(tmp_path, EVAL_LINES))
    first = gate_run(tmp_path, loaded, RELEASE_1)
    record_golden(first, judge_eval(first, loaded, GOOD)[0], "2026-01-01T00:00:00Z")
    edited = [{**EVAL_LINES[0], "prompt": "Say hello"}, *EVAL_LINES[1:]]
    reloaded = evalset.load_eval_set(write_eval_set(tmp_path, edited))
    outcome, _ = judge_eval(
        gate_run(tmp_path, reloaded, RELEASE_2, "r1"), reloaded, {**GOOD, "exact": "hello"}
    )
    assert outcome["baseline"] is None, "scores of different eval sets do not compare"
    assert outcome["drift"] == [], "the edited prompt has no golden answer to differ from"


# -- the role's plan -------------------------------------------------------------------------


def model_with(catalog: Path, text: str) -> None:
    path = catalog / "tiny.toml"
    path.write_text(path.read_text().replace("[source]", f"{text}\n[source]", 1))


def test_a_staged_first_release_is_soaked_then_checked_before_cutover():
    planned = plan(gate, host_data())
    release = runtime_tests.the_release().id
    names = list(planned)
    soak = f"Gate: soak and eval blue (release {release} staged on blue)"
    check = f"Gate: release {release} passed (if not, blue is stopped, no cutover)"
    assert names[-2:] == [soak, check]
    assert f"gate-check --colour blue --release {release}" in planned[check][0]
    assert planned[f"Host-side tools {ONHOST_APP} (puller, runtime control, soak)"]


def test_a_release_that_serves_or_already_passed_is_not_gated_again():
    release = runtime_tests.the_release().id
    serving = runtime_tests.active_state("blue", release)
    assert not any("soak and eval" in n for n in plan(gate, host_data(), {"HostState": serving}))
    passed = {
        "active": "blue",
        "colours": {"blue": {"id": "old"}, "green": {"id": release, "gate": {"passed": True}}},
    }
    facts = {"HostState": passed, "UnitActive": True}
    assert not any("soak and eval" in n for n in plan(gate, host_data(), facts))
    failed = {**passed, "colours": {**passed["colours"], "green": {"id": release}}}
    facts = {"HostState": failed, "UnitActive": True}
    assert any("soak and eval green" in n for n in plan(gate, host_data(), facts))


def test_a_disabled_gate_runs_nothing_and_cutover_does_not_require_it():
    planned = plan(gate, host_data(gate_enabled=False))
    assert not any(n.startswith("Gate:") for n in planned)
    state = runtime_tests.active_state("blue", "old")
    facts = {"HostState": state, "UnitActive": True}
    (command,) = plan(cutover, host_data(), facts=facts).values()
    assert "--require-gate" in command[0]
    (command,) = plan(cutover, host_data(gate_enabled=False), facts=facts).values()
    assert "--require-gate" not in command[0]


def test_limits_come_from_defaults_then_the_model_then_its_class_then_the_host(catalog: Path):
    model_with(
        catalog, "[gates]\nttft_p95_ms = 900\ne2e_p99_ms = 5000\n[gates.cpu]\nttft_p95_ms = 800"
    )
    assert find("tiny").gate_limits("cpu") == {"ttft_p95_ms": 800.0, "e2e_p99_ms": 5000.0}
    seen = {}

    def capture() -> None:
        seen["plan"] = preflight()

    plan(capture, host_data(gate_limits={"e2e_p99_ms": 4000}))
    assert seen["plan"].limits == {
        "error_rate_max": 0.01,
        "eval_tolerance": 0.0,
        "ttft_p95_ms": 800.0,
        "e2e_p99_ms": 4000.0,
    }


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"gate_limits": {"p50": 1}}, "gate_limits.p50", "is not a gate limit"),
        ({"gate_limits": {"ttft_p95_ms": -1}}, "gate_limits.ttft_p95_ms", "is not a gate limit"),
        ({"gate_requests": 0}, "gate_requests", "is below 1"),
        ({"gate_rate_per_s": -2.0}, "gate_rate_per_s", "is not a rate"),
        ({"gate_prompts": "no/such/prompts.txt"}, "gate_prompts", "does not exist"),
    ],
)
def test_bad_gate_settings_are_refused_naming_the_key(data, key, problem):
    with pytest.raises(ConfigError) as raised:
        plan(gate, host_data(**data))
    assert raised.value.key == key and problem in str(raised.value)


def test_a_bad_eval_set_or_gates_table_is_refused_before_anything_runs(catalog: Path):
    model_with(catalog, 'eval_set = "evals/missing.jsonl"')
    with pytest.raises(ConfigError, match=r"model tiny: eval set .*missing\.jsonl does not exist"):
        plan(gate, host_data())
    model_with(catalog, "[gates]\nttft_p95 = 1")
    with pytest.raises(ConfigError, match=r"gates\.ttft_p95"):
        find("tiny")


def test_an_eval_set_outside_the_models_directory_is_refused(catalog: Path):
    model_with(catalog, 'eval_set = "../evals/x.jsonl"')
    with pytest.raises(ConfigError, match="is not a path inside the models directory"):
        find("tiny")

"""Eval sets, their checks, and golden outputs with drift detection.

An eval set is a JSON Lines file next to the model files (the catalog's `eval_set`),
one prompt per line, each with one check of its answer:

    {"id": "capital", "prompt": "The capital of France is", "max_tokens": 8,
     "check": {"contains": "Paris"}}

Check kinds: `exact` (the whole answer, stripped), `regex` (searched in the answer, with
a time limit), `contains`, and `json_schema` (the answer parses as JSON and validates).
The score is the share of checks passed. `llmhost models validate` checks every line
(`eval_set_problems`), so a bad eval set is refused before any deploy, not in the gate.

The checks themselves are `llmhost.onhost.evalcheck`, the code the production eval runs
on hosts, so the gate and production judge an answer alike. A JSON schema that uses a
keyword outside that module's subset of JSON Schema is judged here with `jsonschema`;
hosts that run the production eval refuse such a schema (`production_problems`).

Answers are generated at temperature 0, so one release (the same model digest, engine
build and arguments) must give the same tokens every time. The answers of each
release that passes its gate are recorded as its *golden set* under
`models/golden/<model>/<release id>.json`; later gates compare against it and report
every differing answer as drift, saying what changed between the two releases.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import jsonschema

from llmhost.errors import ConfigError
from llmhost.onhost import evalcheck
from llmhost.onhost.evalcheck import CHECK_KINDS as CHECK_KINDS
from llmhost.onhost.evalcheck import REGEX_TIMEOUT_S as REGEX_TIMEOUT_S
from llmhost.onhost.evalcheck import RegexSearchError as RegexSearchError
from llmhost.onhost.evalcheck import regex_search as regex_search
from llmhost.textfiles import did_you_mean, first_unknown_key

ITEM_KEYS = ("id", "prompt", "max_tokens", "check")
DEFAULT_MAX_TOKENS = 32
# Answers a regex that cannot fail would match: the empty one and one of each kind of text.
_PROBES = ("", " ", "\n", "x", "X", "0", "#", "\x00", "é")


@dataclass(frozen=True)
class EvalItem:
    id: str
    prompt: str
    max_tokens: int
    kind: str
    expected: Any  # the text, pattern or schema the check uses
    line: int = 0  # where it is in its file (0: not read from one)

    @property
    def fingerprint(self) -> str:
        """What makes two answers comparable: the same prompt and token budget."""
        canonical = json.dumps([self.prompt, self.max_tokens])
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class EvalSet:
    path: Path
    items: tuple[EvalItem, ...]
    sha256: str


def load_eval_set(path: Path) -> EvalSet:
    """Parse and validate an eval set; every problem names the file, the line and the fix.

    The first problem is raised; `eval_set_problems` lists them all.
    """
    loaded, problems = _parse(path)
    if problems:
        raise problems[0]
    assert loaded is not None
    return loaded


def eval_set_problems(path: Path) -> list[ConfigError]:
    """Every problem of the eval set at ``path``, in file order (empty: it is valid)."""
    return _parse(path)[1]


def _parse(path: Path) -> tuple[EvalSet | None, list[ConfigError]]:
    def problem(text: str, fix: str) -> ConfigError:
        return ConfigError(text, key="eval_set", fix=fix)

    if not path.is_file():
        fix = "give a path relative to the models directory, or remove eval_set"
        return None, [problem(f"eval set {path} does not exist", fix)]
    try:
        raw = path.read_bytes()
    except OSError as error:
        return None, [problem(f"eval set {path} cannot be read ({error})", "make it readable")]
    items: list[EvalItem] = []
    problems: list[ConfigError] = []
    lines: dict[str, int] = {}
    # Split on "\n" only: str.splitlines() also splits inside a JSON string holding U+2028.
    for number, data in enumerate(raw.split(b"\n"), start=1):
        try:
            line = data.decode("utf-8").removesuffix("\r")
        except UnicodeDecodeError as error:
            bad = f"byte {data[error.start]:#04x} at column {error.start + 1}"
            problems.append(problem(f"{path}:{number}: is not UTF-8 ({bad})", "save it as UTF-8"))
            continue
        if not line.strip():
            continue
        try:
            item = _item(path, number, line)
        except ConfigError as error:
            problems.append(error)
            continue
        if item.id in lines:
            problems.append(
                problem(
                    f"{path}:{number}: uses id {item.id!r} twice (first on line {lines[item.id]})",
                    "give every prompt its own id",
                )
            )
            continue
        lines[item.id] = number
        items.append(item)
    if not items and not problems:
        problems.append(problem(f"eval set {path} is empty", "add one prompt a line"))
    return EvalSet(path, tuple(items), hashlib.sha256(raw).hexdigest()), problems


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"key {repeated[0]!r} appears twice")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _item(path: Path, number: int, line: str) -> EvalItem:
    where = f"{path}:{number}"

    def fail(problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{where}: {problem}", key="eval_set", fix=fix)

    try:
        entry = json.loads(line, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constant)
    except json.JSONDecodeError as error:
        raise fail(f"not JSON ({error.msg})", "write one JSON object per line") from error
    except (ValueError, RecursionError) as error:
        raise fail(f"not JSON ({error})", "write one JSON object per line") from error
    if not isinstance(entry, dict):
        raise fail("not a JSON object", 'write {"id": ..., "prompt": ..., "check": {...}}')
    unknown = first_unknown_key(entry, ITEM_KEYS, "an eval line")
    if unknown:
        name, problem, fix = unknown
        raise fail(f"`{name}` {problem}", fix)
    identity, prompt = entry.get("id"), entry.get("prompt")
    if not isinstance(identity, str) or not identity.strip():
        raise fail("`id` is missing", "give each prompt a short unique id")
    if not isinstance(prompt, str) or not prompt.strip():
        raise fail("`prompt` is missing", "give the prompt text")
    max_tokens = entry.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise fail(f"`max_tokens` {max_tokens!r} is not a count", "give an integer >= 1")
    check = entry.get("check")
    if not isinstance(check, dict) or len(check) != 1 or next(iter(check)) not in CHECK_KINDS:
        hint = ""
        if isinstance(check, dict) and len(check) == 1:
            hint = did_you_mean(next(iter(check)), CHECK_KINDS)
        raise fail(
            f"`check` {check!r} is not one check{hint}",
            f'give exactly one of {", ".join(CHECK_KINDS)}, e.g. {{"contains": "Paris"}}',
        )
    kind, expected = next(iter(check.items()))
    _check_expected(kind, expected, fail)
    return EvalItem(identity, prompt, max_tokens, kind, expected, number)


def _check_expected(kind: str, expected: Any, fail: Any) -> None:
    if kind == "json_schema":
        try:
            jsonschema.Draft202012Validator.check_schema(expected)
        except jsonschema.SchemaError as error:
            raise fail(f"the JSON schema is invalid: {error.message}", "fix the schema") from error
        except RecursionError as error:
            raise fail("the JSON schema is nested too deeply", "simplify the schema") from error
        reference = _unresolvable_reference(expected)
        if reference is not None:
            raise fail(
                f"the JSON schema's $ref {reference!r} does not resolve inside the schema",
                "use $ref only to '#/...' paths or '#anchor' names of the schema itself "
                "(the gate never fetches schemas)",
            )
        return
    if not isinstance(expected, str):
        raise fail(f"the {kind} check needs a string, not {expected!r}", "give a string")
    if kind == "contains" and not expected:
        raise fail("the contains check is empty, so it cannot fail", "give the text to look for")
    if kind == "regex":
        _check_pattern(expected, fail)


def _check_pattern(pattern: str, fail: Any) -> None:
    """Refuse a pattern that does not compile, that Python reads other than it looks (a
    FutureWarning such as "possible nested set", e.g. POSIX ``[[:digit:]]``), or that
    matches every answer."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            compiled = re.compile(pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as error:
            problem = f"regex {pattern!r} does not compile: {error}"
            raise fail(problem, "fix the pattern (Python `re` syntax)") from error
        except (FutureWarning, DeprecationWarning) as warning:
            problem = f"regex {pattern!r} is ambiguous to Python's re: {warning}"
            raise fail(problem, "escape the character, or write the set out in full") from None
    # Short probes cannot backtrack for long, so they are searched here, not in a child.
    if all(compiled.search(probe) for probe in _PROBES):
        raise fail(
            f"regex {pattern!r} matches any answer (even an empty one), so it cannot fail",
            "anchor it or require some text, e.g. '^\\s*\\d+'",
        )


def _unresolvable_reference(schema: Any) -> str | None:
    """The first ``$ref`` in ``schema`` that does not point inside it, else None."""
    anchors: set[str] = set()
    references: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("$anchor", "$dynamicAnchor") and isinstance(value, str):
                    anchors.add(value)
                elif key in ("$ref", "$dynamicRef") and isinstance(value, str):
                    references.append(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    for reference in references:
        if not reference.startswith("#"):
            return reference
        fragment = reference[1:]
        if fragment.startswith("/") or not fragment:
            if not _points_inside(schema, fragment):
                return reference
        elif fragment not in anchors:
            return reference
    return None


def _points_inside(schema: Any, pointer: str) -> bool:
    """Whether the JSON pointer ``pointer`` (``/a/b``, or "" for the root) names a node."""
    node = schema
    for escaped in pointer.split("/")[1:]:
        token = unquote(escaped).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return False
    return True


def check_answer(item: EvalItem, answer: str, regex_timeout_s: float | None = None) -> str | None:
    """None when ``answer`` passes the item's check, else why it fails.

    The production eval's checks (``evalcheck``), but for a JSON schema outside their
    subset, which `jsonschema` judges (such a schema never reaches a host's eval).
    """
    if item.kind != "json_schema" or evalcheck.unsupported_keyword(item.expected) is None:
        return evalcheck.check_answer(item.kind, item.expected, answer, regex_timeout_s)
    try:
        jsonschema.validate(json.loads(answer), item.expected)
    except (ValueError, RecursionError):
        return "the answer is not JSON"
    except jsonschema.ValidationError as error:
        return f"the answer does not match the schema: {error.message}"
    except Exception as error:  # a schema validation refuses (a bad $ref...): a guard only
        return f"the schema cannot be applied: {type(error).__name__}: {error}"
    return None


def production_problems(eval_set: EvalSet) -> list[ConfigError]:
    """The items the production eval on a host could not judge as the gate does: a JSON
    schema with a keyword outside the host-side subset (``evalcheck.SUPPORTED_KEYWORDS``)."""
    problems = []
    for item in eval_set.items:
        if item.kind != "json_schema":
            continue
        found = evalcheck.unsupported_keyword(item.expected)
        if found is None:
            continue
        keyword, pointer = found
        where = f" (in the schema at {pointer})" if pointer else ""
        problems.append(
            ConfigError(
                f"{eval_set.path}:{item.line}: item {item.id!r}: the JSON schema uses "
                f"`{keyword}`{where}, which the production eval on hosts cannot check",
                key="eval_set",
                fix="use only "
                + ", ".join(sorted(evalcheck.SUPPORTED_KEYWORDS))
                + "; or set monitoring_eval_schedule = '' for the hosts serving this model",
            )
        )
    return problems


def passes(item: EvalItem, answer: str) -> bool:
    return check_answer(item, answer) is None


def score(eval_set: EvalSet, answers: dict[str, str]) -> tuple[float, list[dict[str, Any]]]:
    """The share of checks passed, and each item's answer and verdict."""
    results = []
    for item in eval_set.items:
        answer = answers.get(item.id)
        reason = check_answer(item, answer) if isinstance(answer, str) else "no answer"
        result = {"id": item.id, "check": item.kind, "passed": reason is None, "answer": answer}
        results.append(result if reason is None else {**result, "reason": reason})
    return sum(1 for r in results if r["passed"]) / len(results), results


# -- golden sets ----------------------------------------------------------------------------


def golden_path(models_dir: Path, model: str, release_id: str) -> Path:
    return models_dir / "golden" / model / f"{release_id}.json"


def golden_document(
    *,
    release: dict[str, Any],
    eval_set: EvalSet,
    eval_score: float,
    answers: dict[str, str],
    recorded: str,
) -> dict[str, Any]:
    return {
        "version": 1,
        "release": release,
        "recorded": recorded,
        "eval_set_sha256": eval_set.sha256,
        "score": eval_score,
        "answers": {
            item.id: {"fingerprint": item.fingerprint, "text": answers.get(item.id, "")}
            for item in eval_set.items
        },
    }


def read_golden(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        document = json.loads(path.read_text())
    except ValueError as error:
        raise ConfigError(
            f"golden set {path} is not JSON: {error}",
            key=None,
            fix="restore it from version control, or delete it to record it again",
        ) from error
    return document if isinstance(document, dict) else None


def reference_golden(
    models_dir: Path, model: str, release_id: str, replaced_id: str | None
) -> dict[str, Any] | None:
    """The golden set to compare with: this release's own, else the replaced release's,
    else the newest one recorded for the model."""
    for candidate in (release_id, replaced_id):
        if candidate:
            found = read_golden(golden_path(models_dir, model, candidate))
            if found:
                return found
    directory = models_dir / "golden" / model
    recorded = [read_golden(p) for p in sorted(directory.glob("*.json"))]
    usable = [g for g in recorded if g]
    return max(usable, key=lambda g: str(g.get("recorded", ""))) if usable else None


def what_changed(reference: dict[str, Any], release: dict[str, Any]) -> list[str]:
    """Between the golden set's release and this one: model digest, engine build, arguments."""
    before = reference.get("release") or {}
    labels = (
        ("model_digest", "model digest"),
        ("executable", "runtime"),
        ("arguments", "arguments"),
        ("engine", "engine"),
    )
    return [
        f"{label} {before.get(key)} -> {release.get(key)}"
        for key, label in labels
        if before.get(key) != release.get(key)
    ]


def drift(
    reference: dict[str, Any], eval_set: EvalSet, answers: dict[str, str]
) -> list[dict[str, str]]:
    """Every answer that differs from the golden one for the same prompt and budget."""
    golden = reference.get("answers") or {}
    drifted = []
    for item in eval_set.items:
        recorded = golden.get(item.id)
        if not recorded or recorded.get("fingerprint") != item.fingerprint:
            continue  # a new or edited prompt: nothing to compare with
        if recorded.get("text") != answers.get(item.id, ""):
            drifted.append(
                {"id": item.id, "golden": recorded.get("text"), "answer": answers.get(item.id, "")}
            )
    return drifted

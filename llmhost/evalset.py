"""Eval sets, their checks, and golden outputs with drift detection.

An eval set is a JSON Lines file next to the model files (the catalog's `eval_set`),
one prompt per line, each with one check of its answer:

    {"id": "capital", "prompt": "The capital of France is", "max_tokens": 8,
     "check": {"contains": "Paris"}}

Check kinds: `exact` (the whole answer, stripped), `regex` (searched in the answer),
`contains`, and `json_schema` (the answer parses as JSON and validates). The score is
the share of checks passed.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

from llmhost.errors import ConfigError

CHECK_KINDS = ("exact", "regex", "contains", "json_schema")
DEFAULT_MAX_TOKENS = 32


@dataclass(frozen=True)
class EvalItem:
    id: str
    prompt: str
    max_tokens: int
    kind: str
    expected: Any  # the text, pattern or schema the check uses

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
    """Parse and validate an eval set; every problem names the file, the line and the fix."""
    if not path.is_file():
        raise ConfigError(
            f"eval set {path} does not exist",
            key="eval_set",
            fix="give a path relative to the models directory, or remove eval_set",
        )
    raw = path.read_bytes()
    items: list[EvalItem] = []
    for number, line in enumerate(raw.decode().splitlines(), start=1):
        if line.strip():
            items.append(_item(path, number, line))
    if not items:
        raise ConfigError(f"eval set {path} is empty", key="eval_set", fix="add one prompt a line")
    ids = [item.id for item in items]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ConfigError(
            f"eval set {path} uses id {duplicates[0]!r} twice",
            key="eval_set",
            fix="give every prompt its own id",
        )
    return EvalSet(path, tuple(items), hashlib.sha256(raw).hexdigest())


def _item(path: Path, number: int, line: str) -> EvalItem:
    where = f"{path}:{number}"

    def fail(problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{where}: {problem}", key="eval_set", fix=fix)

    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise fail(f"not JSON ({error.msg})", "write one JSON object per line") from error
    if not isinstance(entry, dict):
        raise fail("not a JSON object", 'write {"id": ..., "prompt": ..., "check": {...}}')
    identity, prompt = entry.get("id"), entry.get("prompt")
    if not isinstance(identity, str) or not identity:
        raise fail("`id` is missing", "give each prompt a short unique id")
    if not isinstance(prompt, str) or not prompt:
        raise fail("`prompt` is missing", "give the prompt text")
    max_tokens = entry.get("max_tokens", DEFAULT_MAX_TOKENS)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise fail(f"`max_tokens` {max_tokens!r} is not a count", "give an integer >= 1")
    check = entry.get("check")
    if not isinstance(check, dict) or len(check) != 1 or next(iter(check)) not in CHECK_KINDS:
        raise fail(
            f"`check` {check!r} is not one check",
            f'give exactly one of {", ".join(CHECK_KINDS)}, e.g. {{"contains": "Paris"}}',
        )
    kind, expected = next(iter(check.items()))
    _check_expected(kind, expected, fail)
    return EvalItem(identity, prompt, max_tokens, kind, expected)


def _check_expected(kind: str, expected: Any, fail: Any) -> None:
    if kind == "json_schema":
        try:
            jsonschema.Draft202012Validator.check_schema(expected)
        except jsonschema.SchemaError as error:
            raise fail(f"the JSON schema is invalid: {error.message}", "fix the schema") from error
        return
    if not isinstance(expected, str):
        raise fail(f"the {kind} check needs a string, not {expected!r}", "give a string")
    if kind == "regex":
        try:
            re.compile(expected)
        except re.error as error:
            problem = f"regex {expected!r} does not compile: {error}"
            raise fail(problem, "fix the pattern") from error


def passes(item: EvalItem, answer: str) -> bool:
    if item.kind == "exact":
        return answer.strip() == str(item.expected).strip()
    if item.kind == "contains":
        return str(item.expected) in answer
    if item.kind == "regex":
        return re.search(str(item.expected), answer) is not None
    try:
        jsonschema.validate(json.loads(answer), item.expected)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def score(eval_set: EvalSet, answers: dict[str, str]) -> tuple[float, list[dict[str, Any]]]:
    """The share of checks passed, and each item's answer and verdict."""
    results = [
        {
            "id": item.id,
            "check": item.kind,
            "passed": passes(item, answers.get(item.id, "")),
            "answer": answers.get(item.id),
        }
        for item in eval_set.items
    ]
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

"""The eval checks: one implementation for the gate and for production (standard library only).

The gate scores a staged release's answers on the control machine; the eval-drift timer
scores the active colour's answers on the host, hourly. Both call ``check_answer`` from
here, so a release that scored 0.9 at its gate scores 0.9 in production for the same
answers: a lower score is a change in the answers, never in the judging.

Check kinds: ``exact`` (the whole answer, stripped), ``contains``, ``regex`` (searched
with a time limit) and ``json_schema`` (the answer parses as JSON and validates).

JSON Schema is validated by a small validator of a well-defined subset of draft 2020-12
(``SUPPORTED_KEYWORDS``) with the semantics of the `jsonschema` package (a differential
test compares the two over a corpus of schemas and answers): hosts have no third-party
packages. ``unsupported_keyword`` names the first keyword of a schema outside the subset;
the control side keeps `jsonschema` for those, and refuses them for hosts that run the
production eval (``llmhost check``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

CHECK_KINDS = ("exact", "regex", "contains", "json_schema")
# A regex search gets this long to search one answer. Python's `re` cannot be interrupted,
# so the search runs in a child interpreter that is killed when its time is up: a
# catastrophic pattern (`^(a+)+$` on "aaa...b") fails its check instead of hanging the
# gate or the production eval.
REGEX_TIMEOUT_S = 2.0
_SEARCH = (
    "import json, re, sys\n"
    "pattern, text = json.load(sys.stdin)\n"
    "sys.stdout.write('1' if re.search(pattern, text) else '0')\n"
)

DRAFT_2020_12 = (
    "https://json-schema.org/draft/2020-12/schema",
    "https://json-schema.org/draft/2020-12/schema#",
)
# Keywords that only annotate (jsonschema asserts none of them; `format` neither, without a
# format checker, which the gate never gave it).
ANNOTATIONS = frozenset(
    ("$schema", "$comment", "title", "description", "default", "examples", "deprecated",
     "readOnly", "writeOnly", "format")
)  # fmt: skip
# Keywords whose value is one schema, a map of names to schemas, or a list of schemas.
_ONE_SCHEMA = ("additionalProperties", "items", "not")
_SCHEMA_MAPS = ("properties", "patternProperties")
_SCHEMA_LISTS = ("prefixItems", "allOf", "anyOf", "oneOf")
SUPPORTED_KEYWORDS = ANNOTATIONS | frozenset(
    ("type", "enum", "const",
     "properties", "patternProperties", "additionalProperties", "required",
     "minProperties", "maxProperties",
     "items", "prefixItems", "minItems", "maxItems", "uniqueItems",
     "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
     "minLength", "maxLength", "pattern",
     "allOf", "anyOf", "oneOf", "not")
)  # fmt: skip


class RegexSearchError(Exception):
    """A regex search that gave no answer: it ran past its time limit, or its child failed."""


def regex_search(pattern: str, text: str, timeout_s: float) -> bool:
    """``re.search(pattern, text)`` with a time limit: the very `re` of this interpreter,
    run in a child so that it can be killed when the limit passes (RegexSearchError)."""
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _SEARCH],
            input=json.dumps([pattern, text]),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise RegexSearchError(f"regex search timed out after {timeout_s:g} s") from error
    except OSError as error:
        raise RegexSearchError(f"regex search could not start: {error}") from error
    if done.returncode != 0 or done.stdout not in ("0", "1"):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RegexSearchError(f"regex search failed: {last}")
    return done.stdout == "1"


def check_answer(
    kind: str, expected: Any, answer: str, regex_timeout_s: float | None = None
) -> str | None:
    """None when ``answer`` passes the check ``{kind: expected}``, else why it fails.

    A json_schema outside the subset is judged as not applicable here (the control side
    judges those with `jsonschema`; hosts that run the production eval never get one).
    """
    timeout = regex_timeout_s or REGEX_TIMEOUT_S
    if kind == "exact":
        ok = answer.strip() == str(expected).strip()
        return None if ok else "the answer is not the expected text"
    if kind == "contains":
        return None if str(expected) in answer else "the answer does not contain the text"
    if kind == "regex":
        try:
            found = regex_search(str(expected), answer, timeout)
        except RegexSearchError as error:
            return str(error)
        return None if found else "the pattern is not found in the answer"
    if kind == "json_schema":
        unsupported = unsupported_keyword(expected)
        if unsupported is not None:
            return f"the schema uses `{unsupported[0]}`, which this validator does not check"
        try:
            instance = json.loads(answer)
        except (ValueError, RecursionError):
            return "the answer is not JSON"
        try:
            problem = schema_problem(expected, instance, timeout)
        except RegexSearchError as error:
            return str(error)
        return None if problem is None else f"the answer does not match the schema: {problem}"
    return f"{kind!r} is not a check kind"


# -- the JSON Schema subset ------------------------------------------------------------------


def unsupported_keyword(schema: Any, pointer: str = "") -> tuple[str, str] | None:
    """(keyword, JSON pointer to the schema holding it) of the first keyword outside the
    subset, else None. A ``$schema`` other than draft 2020-12 is outside it too (other
    drafts give some keywords other meanings)."""
    if isinstance(schema, bool):
        return None
    if not isinstance(schema, dict):
        return ("(a schema that is not an object)", pointer)
    for keyword, value in schema.items():
        here = f"{pointer}/{_escape(keyword)}"
        if keyword not in SUPPORTED_KEYWORDS:
            return (keyword, pointer)
        if keyword == "$schema" and value not in DRAFT_2020_12:
            return (f"$schema {value!r}", pointer)
        found = None
        if keyword in _ONE_SCHEMA:
            found = unsupported_keyword(value, here)
        elif keyword in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                found = found or unsupported_keyword(sub, f"{here}/{_escape(name)}")
        elif keyword in _SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                found = found or unsupported_keyword(sub, f"{here}/{index}")
        if found:
            return found
    return None


def _escape(token: str) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _is_type(instance: Any, name: str) -> bool:
    """Draft 2020-12's types: booleans are not numbers; 1.0 is an integer."""
    if name == "null":
        return instance is None
    if name == "boolean":
        return isinstance(instance, bool)
    if name == "object":
        return isinstance(instance, dict)
    if name == "array":
        return isinstance(instance, list)
    if name == "string":
        return isinstance(instance, str)
    if isinstance(instance, bool):
        return False
    if name == "number":
        return isinstance(instance, int | float)
    if name == "integer":
        return isinstance(instance, int) or (isinstance(instance, float) and instance.is_integer())
    return False


_TRUE, _FALSE = object(), object()


def _unbool(value: Any) -> Any:
    return _TRUE if value is True else _FALSE if value is False else value


def equal(one: Any, two: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` is ``1.0``, arrays and objects deeply."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, Sequence) and isinstance(two, Sequence):
        return len(one) == len(two) and all(equal(a, b) for a, b in zip(one, two, strict=True))
    if isinstance(one, Mapping) and isinstance(two, Mapping):
        return len(one) == len(two) and all(
            key in two and equal(value, two[key]) for key, value in one.items()
        )
    return bool(_unbool(one) == _unbool(two))


def _where(path: str) -> str:
    return f" (at {path})" if path else ""


def schema_problem(
    schema: Any, instance: Any, regex_timeout_s: float = REGEX_TIMEOUT_S, path: str = ""
) -> str | None:
    """Why ``instance`` does not validate against ``schema`` (a schema of the subset), or
    None. Regex keywords search with a time limit (RegexSearchError past it)."""
    if schema is True:
        return None
    if schema is False:
        return f"no value is allowed here{_where(path)}"
    if not isinstance(schema, dict):
        return f"the schema is not an object{_where(path)}"
    for check in _KEYWORD_CHECKS:
        problem = check(schema, instance, regex_timeout_s, path)
        if problem is not None:
            return problem
    return None


def _type(schema: dict[str, Any], instance: Any, timeout: float, path: str) -> str | None:
    if "type" not in schema:
        return None
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    if any(_is_type(instance, name) for name in types):
        return None
    return f"{instance!r} is not of type {' or '.join(map(repr, types))}{_where(path)}"


def _values(schema: dict[str, Any], instance: Any, timeout: float, path: str) -> str | None:
    if "enum" in schema and not any(equal(each, instance) for each in schema["enum"]):
        return f"{instance!r} is not one of {schema['enum']!r}{_where(path)}"
    if "const" in schema and not equal(instance, schema["const"]):
        return f"{schema['const']!r} was expected{_where(path)}"
    return None


def _numbers(schema: dict[str, Any], instance: Any, timeout: float, path: str) -> str | None:
    if not _is_type(instance, "number"):
        return None
    bounds = (
        ("minimum", lambda limit: instance < limit, "less than the minimum of"),
        ("maximum", lambda limit: instance > limit, "greater than the maximum of"),
        ("exclusiveMinimum", lambda limit: instance <= limit, "less than or equal to"),
        ("exclusiveMaximum", lambda limit: instance >= limit, "greater than or equal to"),
    )
    for keyword, fails, words in bounds:
        if keyword in schema and fails(schema[keyword]):
            return f"{instance!r} is {words} {schema[keyword]!r}{_where(path)}"
    return None


def _strings(schema: dict[str, Any], instance: Any, timeout: float, path: str) -> str | None:
    if not isinstance(instance, str):
        return None
    if "minLength" in schema and len(instance) < schema["minLength"]:
        return f"{instance!r} is shorter than {schema['minLength']!r}{_where(path)}"
    if "maxLength" in schema and len(instance) > schema["maxLength"]:
        return f"{instance!r} is longer than {schema['maxLength']!r}{_where(path)}"
    if "pattern" in schema and not regex_search(schema["pattern"], instance, timeout):
        return f"{instance!r} does not match {schema['pattern']!r}{_where(path)}"
    return None


def _arrays(schema: dict[str, Any], instance: Any, timeout: float, path: str) -> str | None:
    if not isinstance(instance, list):
        return None
    if "minItems" in schema and len(instance) < schema["minItems"]:
        return f"{len(instance)} items are fewer than {schema['minItems']!r}{_where(path)}"
    if "maxItems" in schema and len(instance) > schema["maxItems"]:
        return f"{len(instance)} items are more than {schema['maxItems']!r}{_where(path)}"
    if schema.get("uniqueItems") is True:
        for index, item in enumerate(instance):
            if any(equal(item, other) for other in instance[index + 1 :]):
                return f"{instance!r} has non-unique elements{_where(path)}"
    prefix = schema.get("prefixItems", [])
    for index, (item, sub) in enumerate(zip(instance, prefix, strict=False)):
        problem = schema_problem(sub, item, timeout, f"{path}/{index}")
        if problem:
            return problem
    if "items" in schema and len(instance) > len(prefix):
        if schema["items"] is False:
            extra = len(instance) - len(prefix)
            return f"expected at most {len(prefix)} items but found {extra} extra{_where(path)}"
        for index in range(len(prefix), len(instance)):
            problem = schema_problem(schema["items"], instance[index], timeout, f"{path}/{index}")
            if problem:
                return problem
    return None


def _objects(schema: dict[str, Any], instance: Any, timeout: float, path: str) -> str | None:
    if not isinstance(instance, dict):
        return None
    if "minProperties" in schema and len(instance) < schema["minProperties"]:
        return f"{len(instance)} properties are fewer than {schema['minProperties']!r}" + (
            _where(path)
        )
    if "maxProperties" in schema and len(instance) > schema["maxProperties"]:
        return f"{len(instance)} properties are more than {schema['maxProperties']!r}" + (
            _where(path)
        )
    for name in schema.get("required", []):
        if name not in instance:
            return f"{name!r} is a required property{_where(path)}"
    properties = schema.get("properties", {})
    for name, sub in properties.items():
        if name in instance:
            problem = schema_problem(sub, instance[name], timeout, f"{path}/{_escape(name)}")
            if problem:
                return problem
    patterns = schema.get("patternProperties", {})
    for pattern, sub in patterns.items():
        for name, value in instance.items():
            if regex_search(pattern, name, timeout):
                problem = schema_problem(sub, value, timeout, f"{path}/{_escape(name)}")
                if problem:
                    return problem
    if "additionalProperties" in schema:
        # As jsonschema finds them: one search of the patterns joined with "|".
        joined = "|".join(patterns)
        extras = [
            name
            for name in instance
            if name not in properties and not (joined and regex_search(joined, name, timeout))
        ]
        additional = schema["additionalProperties"]
        if isinstance(additional, dict):
            for name in extras:
                where = f"{path}/{_escape(name)}"
                problem = schema_problem(additional, instance[name], timeout, where)
                if problem:
                    return problem
        elif not additional and extras:
            unexpected = ", ".join(repr(name) for name in sorted(extras))
            return f"additional properties are not allowed ({unexpected}){_where(path)}"
    return None


def _combinations(schema: dict[str, Any], instance: Any, timeout: float, path: str) -> str | None:
    for sub in schema.get("allOf", []):
        problem = schema_problem(sub, instance, timeout, path)
        if problem:
            return problem
    if "anyOf" in schema and not any(
        schema_problem(sub, instance, timeout, path) is None for sub in schema["anyOf"]
    ):
        return f"{instance!r} is not valid under any of the given schemas{_where(path)}"
    if "oneOf" in schema:
        valid = sum(schema_problem(sub, instance, timeout, path) is None for sub in schema["oneOf"])
        if valid != 1:
            how = "any" if valid == 0 else "more than one"
            return f"{instance!r} is valid under {how} of the oneOf schemas{_where(path)}"
    if "not" in schema and schema_problem(schema["not"], instance, timeout, path) is None:
        return f"{instance!r} should not be valid under {schema['not']!r}{_where(path)}"
    return None


_KEYWORD_CHECKS = (_type, _values, _numbers, _strings, _arrays, _objects, _combinations)

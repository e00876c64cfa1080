"""The eval checks the gate and the production eval share, and their JSON Schema subset.

The host-side validator must say what `jsonschema` says for every schema of its subset:
a differential test over a written corpus (the edge cases of each keyword) and a seeded
random one (keywords combined and nested) compares the two answer by answer.
"""

from __future__ import annotations

import json
import random
from typing import Any

import jsonschema
import pytest

from llmhost import evalset
from llmhost.onhost import evalcheck
from llmhost.onhost.evalcheck import check_answer, schema_problem, unsupported_keyword

# Answers as the engine would give them: JSON text, each parsed before validation.
INSTANCES: list[Any] = [
    None, True, False, 0, 1, -1, 1.0, 2.5, -0.5, 3, 10, 1e308, 0.0,
    "", "a", "ab", "abc", "hello", "é", "日本", "12", "a1", "Z",
    [], [1], [1, 2], [1, 1.0], [1, True], [0, False], [True, False], ["a", "a"],
    [[1], [True]], [{"a": 1}, {"a": 1.0}], [1, "1"], [None, None], [1, 2, 3, 4],
    ["x", 1, None], [{"a": 1}, {"b": 2}],
    {}, {"a": 1}, {"a": True}, {"a": "x"}, {"b": 2}, {"a": 1, "b": 2}, {"a": None},
    {"a": [1, 2]}, {"a": {"b": None}}, {"x-1": 1, "y": "z"}, {"name": "Ann", "age": 31},
    {"name": "Ann", "age": 31.5}, {"name": 3}, {"name": "Ann", "extra": True},
    {"A": 1, "a1": 2}, {"ids": [1, 2, 2]},
]  # fmt: skip

# (schema, what it exercises); every one is in the subset.
CORPUS: list[dict[str, Any] | bool] = [
    True, False, {},
    {"type": "object"}, {"type": "array"}, {"type": "string"}, {"type": "null"},
    {"type": "boolean"}, {"type": "number"}, {"type": "integer"},
    {"type": ["string", "null"]}, {"type": ["integer", "boolean"]},
    {"enum": [1, "a", None]}, {"enum": [True]}, {"enum": [1.0]}, {"enum": [[1], {"a": 1}]},
    {"enum": [0]}, {"const": 1}, {"const": True}, {"const": False}, {"const": [1, True]},
    {"const": {"a": 1}}, {"const": None}, {"const": "a"},
    {"minimum": 1}, {"maximum": 1}, {"exclusiveMinimum": 1}, {"exclusiveMaximum": 1},
    {"minimum": 0.5, "maximum": 2.5}, {"exclusiveMinimum": -1, "exclusiveMaximum": 3},
    {"minLength": 1}, {"maxLength": 1}, {"minLength": 2, "maxLength": 2},
    {"pattern": "^a"}, {"pattern": "\\d"}, {"pattern": "(?i)^h"}, {"pattern": "^$"},
    {"minItems": 1}, {"maxItems": 1}, {"uniqueItems": True}, {"uniqueItems": False},
    {"items": {"type": "integer"}}, {"items": False}, {"items": True},
    {"prefixItems": [{"type": "integer"}, {"type": "string"}]},
    {"prefixItems": [{"type": "integer"}], "items": False},
    {"prefixItems": [{"const": 1}], "items": {"type": "integer"}},
    {"required": ["a"]}, {"required": ["a", "b"]}, {"minProperties": 1}, {"maxProperties": 1},
    {"properties": {"a": {"type": "integer"}}},
    {"properties": {"a": {"type": "integer"}}, "additionalProperties": False},
    {"properties": {"a": {}}, "additionalProperties": {"type": "integer"}},
    {"patternProperties": {"^x-": {"type": "integer"}}},
    {"patternProperties": {"^[a-z]+$": {"type": "integer"}}, "additionalProperties": False},
    {"patternProperties": {"^x": {}, "^y": {"type": "string"}}, "additionalProperties": False},
    {"type": "object", "required": ["name", "age"],
     "properties": {"name": {"type": "string", "minLength": 1}, "age": {"type": "integer"}},
     "additionalProperties": False},
    {"properties": {"ids": {"type": "array", "uniqueItems": True, "items": {"type": "integer"}}}},
    {"allOf": [{"type": "number"}, {"minimum": 1}]}, {"anyOf": [{"type": "string"}, {"const": 1}]},
    {"oneOf": [{"type": "integer"}, {"type": "number"}]}, {"oneOf": [{"minimum": 2}, {"const": 1}]},
    {"not": {"type": "null"}}, {"not": {}}, {"not": False},
    {"properties": {"a": {"properties": {"b": {"type": "null"}}, "required": ["b"]}}},
    {"type": "string", "format": "email", "title": "t", "description": "d", "default": "x"},
    {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"},
    {"items": {"properties": {"a": {"const": 1}}}, "uniqueItems": True},
]  # fmt: skip


def jsonschema_says(schema: Any, instance: Any) -> bool:
    return jsonschema.Draft202012Validator(schema).is_valid(instance)


@pytest.mark.parametrize("schema", CORPUS, ids=lambda s: json.dumps(s)[:60])
def test_the_host_side_validator_agrees_with_jsonschema_on_the_corpus(schema):
    jsonschema.Draft202012Validator.check_schema(schema)
    assert unsupported_keyword(schema) is None
    disagreements = [
        (instance, jsonschema_says(schema, instance), schema_problem(schema, instance))
        for instance in INSTANCES
        if jsonschema_says(schema, instance) is not (schema_problem(schema, instance) is None)
    ]
    assert not disagreements, disagreements


# -- random schemas of the subset, nested and combined ---------------------------------------

SCALAR_TYPES = ["null", "boolean", "integer", "number", "string", "array", "object"]
VALUES: list[Any] = [None, True, False, 0, 1, 1.0, 2.5, "a", "", [1], {"a": 1}]


def random_schema(rng: random.Random, depth: int) -> Any:
    if depth <= 0 or rng.random() < 0.15:
        return rng.choice([True, False, {}, {"type": rng.choice(SCALAR_TYPES)}])
    schema: dict[str, Any] = {}
    for _ in range(rng.randint(1, 3)):
        keyword = rng.choice(KEYWORDS)
        schema[keyword] = MAKERS[keyword](rng, depth - 1)
    return schema


def names(rng: random.Random) -> list[str]:
    return rng.sample(["a", "b", "name", "x-1"], rng.randint(1, 2))


MAKERS: dict[str, Any] = {
    "type": lambda r, d: r.choice([r.choice(SCALAR_TYPES), r.sample(SCALAR_TYPES, 2)]),
    "enum": lambda r, d: r.sample(VALUES, r.randint(1, 3)),
    "const": lambda r, d: r.choice(VALUES),
    "minimum": lambda r, d: r.choice([0, 1, 1.5, -1]),
    "maximum": lambda r, d: r.choice([0, 1, 2.5, 10]),
    "exclusiveMinimum": lambda r, d: r.choice([0, 1, -0.5]),
    "exclusiveMaximum": lambda r, d: r.choice([1, 3, 10]),
    "minLength": lambda r, d: r.randint(0, 3),
    "maxLength": lambda r, d: r.randint(0, 3),
    "minItems": lambda r, d: r.randint(0, 3),
    "maxItems": lambda r, d: r.randint(0, 3),
    "uniqueItems": lambda r, d: r.choice([True, False]),
    "minProperties": lambda r, d: r.randint(0, 2),
    "maxProperties": lambda r, d: r.randint(0, 2),
    "required": lambda r, d: names(r),
    "properties": lambda r, d: {n: random_schema(r, d) for n in names(r)},
    "additionalProperties": lambda r, d: random_schema(r, d),
    "items": lambda r, d: random_schema(r, d),
    "prefixItems": lambda r, d: [random_schema(r, d) for _ in range(r.randint(1, 2))],
    "allOf": lambda r, d: [random_schema(r, d) for _ in range(r.randint(1, 2))],
    "anyOf": lambda r, d: [random_schema(r, d) for _ in range(r.randint(1, 2))],
    "oneOf": lambda r, d: [random_schema(r, d) for _ in range(r.randint(1, 3))],
    "not": lambda r, d: random_schema(r, d),
}
KEYWORDS = sorted(MAKERS)


def test_the_host_side_validator_agrees_with_jsonschema_on_random_schemas():
    rng = random.Random(20260514)
    compared = 0
    for _ in range(400):
        schema = random_schema(rng, 3)
        jsonschema.Draft202012Validator.check_schema(schema)
        assert unsupported_keyword(schema) is None
        for instance in INSTANCES:
            expected = jsonschema_says(schema, instance)
            assert expected is (schema_problem(schema, instance) is None), (schema, instance)
            compared += 1
    assert compared == 400 * len(INSTANCES)


def test_every_keyword_of_the_subset_is_in_the_random_corpus_or_the_written_one():
    written = {k for s in CORPUS if isinstance(s, dict) for k in s}
    assert set(KEYWORDS) | written >= evalcheck.SUPPORTED_KEYWORDS - evalcheck.ANNOTATIONS


# -- outside the subset ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "found"),
    [
        ({"$ref": "#/$defs/a", "$defs": {"a": {}}}, ("$ref", "")),
        ({"properties": {"a": {"multipleOf": 2}}}, ("multipleOf", "/properties/a")),
        ({"items": {"anyOf": [{}, {"if": {}}]}}, ("if", "/items/anyOf/1")),
        ({"patternProperties": {"^a/b": {"contains": {}}}},
         ("contains", "/patternProperties/^a~1b")),
        ({"$schema": "http://json-schema.org/draft-07/schema#"},
         ("$schema 'http://json-schema.org/draft-07/schema#'", "")),
        ({"type": "object", "unevaluatedProperties": False}, ("unevaluatedProperties", "")),
        ({"requried": ["a"]}, ("requried", "")),
    ],
)  # fmt: skip
def test_a_keyword_outside_the_subset_is_named_with_where_it_is(schema, found):
    assert unsupported_keyword(schema) == found


def test_property_names_that_look_like_keywords_are_names_not_keywords():
    assert unsupported_keyword({"properties": {"$ref": {}, "if": {"type": "string"}}}) is None
    assert unsupported_keyword({"required": ["$ref"], "enum": [{"$ref": "x"}]}) is None


def test_a_schema_outside_the_subset_is_not_judged_on_the_host_but_by_jsonschema_here():
    schema = {"type": "integer", "multipleOf": 2}
    assert "uses `multipleOf`" in check_answer("json_schema", schema, "4")
    item = evalset.EvalItem("j", "p", 4, "json_schema", schema)
    assert evalset.passes(item, "4") and not evalset.passes(item, "3")


# -- the checks -------------------------------------------------------------------------------


def test_each_check_kind_passes_and_fails_with_its_reason():
    assert check_answer("exact", "hi", " hi\n") is None
    assert check_answer("exact", "hi", "hi!") == "the answer is not the expected text"
    assert check_answer("contains", "Paris", "It is Paris.") is None
    assert check_answer("contains", "Paris", "paris") == "the answer does not contain the text"
    assert check_answer("regex", r"^\s*\d+", " 42") is None
    assert check_answer("regex", r"^\d+$", "4 2") == "the pattern is not found in the answer"
    assert check_answer("json_schema", {"required": ["a"]}, '{"a": 1}') is None
    assert check_answer("json_schema", {"type": "object"}, "{") == "the answer is not JSON"
    reason = check_answer("json_schema", {"required": ["a"]}, '{"b": 1}')
    assert reason == "the answer does not match the schema: 'a' is a required property"
    nested = check_answer("json_schema", {"items": {"type": "string"}}, '["a", 2]')
    assert nested == "the answer does not match the schema: 2 is not of type 'string' (at /1)"


def test_a_catastrophic_pattern_in_a_schema_fails_its_check_instead_of_hanging():
    reason = check_answer("json_schema", {"pattern": "^(a+)+$"}, json.dumps("a" * 40 + "b"), 0.5)
    assert reason == "regex search timed out after 0.5 s"


def test_the_control_side_checks_are_the_host_side_ones():
    """Same verdict and same reason, kind by kind, for the gate's evalset.check_answer."""
    cases = [
        ("exact", "hi", "hi there"), ("contains", "x", "y"), ("regex", "^a", "ba"),
        ("json_schema", {"type": "object", "required": ["a"]}, '{"b": 1}'),
        ("json_schema", {"type": "object"}, "[]"),
    ]  # fmt: skip
    for kind, expected, answer in cases:
        item = evalset.EvalItem("i", "p", 4, kind, expected)
        assert evalset.check_answer(item, answer) == check_answer(kind, expected, answer)

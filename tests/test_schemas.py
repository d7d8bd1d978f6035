"""Schemas written by members and admins: nothing fetched, no regex that runs for hours, no crash on
deep JSON; the same rules for a reply's schema and a tool's parameters."""

import time

import pytest

from conversations import json_replies, parameters, schemas, tools


def schema_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"$ref": "http://169.254.169.254/latest/meta-data"}, "own parts"),
        ({"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}}, "own parts"),
        ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties"),
        ({"type": "string", "pattern": "(a)\\1"}, "not supported"),
        ({"type": "nonsense"}, "not a valid JSON schema"),
    ],
)
def test_a_schema_that_reaches_out_or_cannot_be_run_safely_is_refused(schema, words):
    assert words in schemas.problem(schema)
    with pytest.raises(parameters.ParameterError):
        parameters.validate({"response_format": schema_format(schema)})
    assert words in tools.schema_problem({"type": "object", "properties": {"x": schema}})


def test_refs_inside_the_schema_still_work():
    schema = {
        "$defs": {"n": {"type": "integer"}},
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/n"}},
    }
    assert schemas.problem(schema) is None
    assert json_replies.check('{"a": "x"}', schema_format(schema))["errors"][0]["path"] == "/a"


def test_a_remote_ref_saved_earlier_is_not_fetched_when_a_reply_is_checked(monkeypatch):
    import urllib.request

    def no_network(*args, **kwargs):
        raise AssertionError("the check tried to fetch a $ref")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    schema = {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/x.json"}}}
    result = json_replies.check('{"a": 1}', schema_format(schema))
    assert result["schema_error"] and result["valid"] is False


def test_a_catastrophic_pattern_runs_in_linear_time():
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
    started = time.monotonic()
    result = json_replies.check('{"s": "' + "a" * 5000 + '!"}', schema_format(schema))
    assert time.monotonic() - started < 1
    assert result["errors"][0]["path"] == "/s"
    assert json_replies.check('{"s": "aaaa"}', schema_format(schema))["valid"] is True


def test_deep_json_is_reported_not_raised():
    deep = "[" * 100_000 + "]" * 100_000
    result = json_replies.check(deep, {"type": "json_object"})
    assert result["parsed"] is False and result["errors"][0]["code"] == "not_json"


def test_a_long_reply_of_spaces_is_unfenced_quickly():
    started = time.monotonic()
    assert json_replies.unfenced("```" + " " * 200_000) == "```" + " " * 200_000
    assert json_replies.unfenced('```json\n{"a": 1}\n```') == '{"a": 1}'
    # As the regex before it: spaces before the closing line break stay.
    assert json_replies.unfenced("  ```\n[1]  \n```  ") == "[1]  "
    assert time.monotonic() - started < 0.5


def test_a_tools_arguments_are_matched_with_the_same_safe_validator():
    schema = {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}
    errors = list(schemas.validator(schema).iter_errors({"s": "a" * 5000 + "!"}))
    assert len(errors) == 1

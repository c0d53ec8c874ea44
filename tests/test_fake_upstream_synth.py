"""providers/fake_upstream/synth.py: what the fake model answers, the same in every wire
format (tool arguments, the JSON answer tool's input)."""

from __future__ import annotations

import pytest

from providers.fake_upstream import synth

PROMPT = "Weather in Paris?"
JSON_MODE_OBJECT = {"reply": f"Echo: {PROMPT}"}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.mark.parametrize(
    "schema",
    [
        None,
        {},
        {"type": "object"},
        {"type": "object", "properties": {}},
        {"type": "object", "additionalProperties": False},
    ],
)
def test_tool_arguments_are_empty_for_a_tool_without_parameters(schema):
    assert synth.tool_arguments(schema, PROMPT) == {}


def test_tool_arguments_fill_the_schemas_properties():
    assert synth.tool_arguments(WEATHER, PROMPT) == {"city": PROMPT}


@pytest.mark.parametrize("schema", [{"type": "object"}, {}, {"type": "object", "additionalProperties": True}])
def test_an_open_object_is_the_json_answer_tool(schema):
    assert synth.is_open_object(schema)
    assert synth.json_tool_input(schema, PROMPT) == JSON_MODE_OBJECT


@pytest.mark.parametrize(
    "schema",
    [
        None,
        {"type": "object", "properties": {}},
        {"type": "object", "additionalProperties": False},
        {"type": "array", "items": {"type": "string"}},
        WEATHER,
    ],
)
def test_any_other_schema_gets_the_tools_arguments(schema):
    assert not synth.is_open_object(schema)
    assert synth.json_tool_input(schema, PROMPT) == synth.tool_arguments(schema, PROMPT)


def test_a_json_schema_tool_gets_an_object_of_that_schema():
    assert synth.json_tool_input(WEATHER, PROMPT) == {"city": PROMPT}

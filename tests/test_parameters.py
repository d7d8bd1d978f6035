"""Request parameters: the rules (conversations/parameters.py), what each model is sent, the PATCH and
assistant APIs, and a send whose request reaches the offline upstream with exactly what the model takes."""

import json

import pytest
from channels.db import database_sync_to_async

from conversations import parameters
from conversations.models import Assistant, ChatModel, Conversation, UsageRecord
from tests.fixtures.chat import session_cookie
from tests.websocket_client import Socket, offline

# --- The rules ------------------------------------------------------------------------------------

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


@pytest.mark.parametrize(
    ("given", "parameter", "words"),
    [
        ({"temperature": 2.5}, "temperature", "temperature must be between 0 and 2"),
        ({"temperature": "hot"}, "temperature", "temperature must be a number"),
        ({"temperature": True}, "temperature", "must be a number"),
        ({"top_p": -0.1}, "top_p", "top_p must be between 0 and 1"),
        ({"max_tokens": 0}, "max_tokens", "max_tokens must be between 1 and"),
        ({"max_completion_tokens": 1.5}, "max_completion_tokens", "must be a whole number"),
        ({"presence_penalty": 3}, "presence_penalty", "between -2 and 2"),
        ({"frequency_penalty": -2.01}, "frequency_penalty", "between -2 and 2"),
        ({"seed": 2**64}, "seed", "seed must be between"),
        ({"n": 9}, "n", "n must be between 1 and 8"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4 sequences"),
        ({"stop": [""]}, "stop", "non-empty"),
        ({"logit_bias": {"abc": 1}}, "logit_bias", "token ids"),
        ({"logit_bias": {"50256": -101}}, "logit_bias", "between -100 and 100"),
        ({"user": "x" * 300}, "user", "longer than 256"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort", "minimal, low, medium, high"),
        ({"tool_choice": "sometimes"}, "tool_choice", "tool_choice must be"),
        ({"response_format": {"type": "xml"}}, "response_format", "JSON mode"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": SCHEMA}}},
            "response_format",
            "name",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "answer", "schema": {"type": "banana"}},
                }
            },
            "response_format",
            "The schema is not a valid JSON schema",
        ),
        ({"temprature": 1}, "temprature", "Unknown parameter: temprature"),
    ],
)
def test_it_names_the_parameter_and_the_rule(given, parameter, words):
    with pytest.raises(parameters.ParameterError) as refused:
        parameters.validate(given, tools=[])
    assert refused.value.parameter == parameter
    assert words in refused.value.detail


def test_it_keeps_valid_parameters_and_drops_nulls():
    given = {
        "temperature": 0.7,
        "top_p": 1,
        "max_tokens": 500,
        "max_completion_tokens": 4000,
        "stop": ["END"],
        "presence_penalty": -1,
        "frequency_penalty": 0.5,
        "seed": 42,
        "n": 1,
        "logit_bias": {"50256": -100},
        "user": "bob",
        "tool_choice": {"type": "function", "function": {"name": "calculator"}},
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
        },
        "max_tokens_unset": None,
    }
    given.pop("max_tokens_unset")
    assert parameters.validate({**given, "seed": None}, tools=["calculator"]) == {
        k: v for k, v in given.items() if k != "seed"
    }


def test_tool_choice_may_name_only_a_tool_that_is_on():
    choice = {"tool_choice": {"type": "function", "function": {"name": "calculator"}}}
    with pytest.raises(parameters.ParameterError, match="not one of this conversation's tools"):
        parameters.validate(choice, tools=["current_time"])


def test_tools_must_be_known_names(db):
    assert parameters.validate_tools(["calculator", "calculator"]) == ["calculator"]
    with pytest.raises(parameters.ParameterError, match="Unknown tool: rm_rf"):
        parameters.validate_tools(["rm_rf"])
    with pytest.raises(parameters.ParameterError):
        parameters.validate_tools("calculator")


# --- What each model is sent ----------------------------------------------------------------------

EVERYTHING = {
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 300,
    "stop": ["END"],
    "presence_penalty": 0.1,
    "frequency_penalty": 0.2,
    "seed": 7,
    "n": 2,
    "logit_bias": {"1": 5},
    "user": "bob",
    "tool_choice": "auto",
    "reasoning_effort": "high",
    "response_format": {"type": "json_object"},
}


def model(**fields) -> ChatModel:
    return ChatModel(upstream_id="m", display_name="m", **fields)


def test_a_plain_model_gets_the_common_parameters_only():
    sent = parameters.request_parameters(EVERYTHING, model(), tools_on=True)
    assert sent == {
        k: EVERYTHING[k]
        for k in (
            "temperature",
            "top_p",
            "max_tokens",
            "stop",
            "presence_penalty",
            "frequency_penalty",
            "seed",
        )
    } | {"user": "bob"}


def test_json_and_tools_follow_the_capabilities():
    capable = model(supports_json=True, supports_tools=True)
    assert parameters.request_parameters(EVERYTHING, capable, tools_on=True)["tool_choice"] == "auto"
    sent = parameters.request_parameters(EVERYTHING, capable, tools_on=False)
    assert "tool_choice" not in sent and sent["response_format"] == {"type": "json_object"}
    assert "reasoning_effort" not in sent


def test_a_reasoning_model_gets_max_completion_tokens_and_no_sampling():
    reasoner = model(supports_reasoning=True)
    sent = parameters.request_parameters(EVERYTHING, reasoner, tools_on=False)
    assert sent == {"max_completion_tokens": 300, "seed": 7, "user": "bob", "reasoning_effort": "high"}
    both = {"max_tokens": 300, "max_completion_tokens": 5000}
    assert parameters.request_parameters(both, reasoner, tools_on=False) == {"max_completion_tokens": 5000}
    assert parameters.request_parameters(both, model(), tools_on=False) == {"max_tokens": 300}


def test_an_admins_list_decides_but_never_past_a_capability():
    listed = model(supported_parameters=["temperature", "n", "logit_bias", "response_format"])
    sent = parameters.request_parameters(EVERYTHING, listed, tools_on=True)
    assert sent == {"temperature": 0.2, "n": 2, "logit_bias": {"1": 5}}  # no JSON capability


# --- The conversation API -------------------------------------------------------------------------


def patch(client, conversation, body):
    return client.patch(
        f"/api/conversations/{conversation.public_id}/", json.dumps(body), content_type="application/json"
    )


def test_patch_saves_parameters_and_tools_and_get_reads_them(client_bob, bob_conversation):
    body = {
        "system_prompt": "Answer in French.",
        "parameters": {"temperature": 0.3, "seed": None},
        "tools": ["calculator"],
    }
    response = patch(client_bob, bob_conversation, body)
    assert response.status_code == 200
    bob_conversation.refresh_from_db()
    assert bob_conversation.parameters == {"temperature": 0.3}
    assert bob_conversation.tools == ["calculator"]
    read = client_bob.get(f"/api/conversations/{bob_conversation.public_id}/").json()["conversation"]
    assert read["parameters"] == {"temperature": 0.3} and read["system_prompt"] == "Answer in French."


@pytest.mark.parametrize(
    ("body", "code", "parameter"),
    [
        ({"parameters": {"temperature": 3}}, "bad_parameter", "temperature"),
        ({"parameters": [1]}, "bad_parameter", "parameters"),
        ({"tools": ["nope"]}, "bad_parameter", "tools"),
        (
            {"parameters": {"tool_choice": {"type": "function", "function": {"name": "calculator"}}}},
            "bad_parameter",
            "tool_choice",
        ),
    ],
)
def test_patch_refuses_bad_parameters_with_a_typed_error(client_bob, bob_conversation, body, code, parameter):
    response = patch(client_bob, bob_conversation, body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code and error["parameter"] == parameter and error["detail"]
    bob_conversation.refresh_from_db()
    assert bob_conversation.parameters == {} and bob_conversation.tools == []


def test_another_member_cannot_read_or_patch(client_charlie, bob_conversation):
    assert patch(client_charlie, bob_conversation, {"parameters": {"temperature": 1}}).status_code == 404
    assert client_charlie.get(f"/api/conversations/{bob_conversation.public_id}/").status_code == 404
    bob_conversation.refresh_from_db()
    assert bob_conversation.parameters == {}


# --- Assistants -----------------------------------------------------------------------------------


def post_assistant(client, body):
    return client.post("/api/assistants/", json.dumps(body), content_type="application/json")


def test_members_share_assistants_and_only_the_creator_or_staff_change_them(
    client_bob, client_charlie, client_alice, offline_model
):
    created = post_assistant(
        client_bob,
        {
            "name": "Translator",
            "system_prompt": "Translate to French.",
            "model": offline_model.pk,
            "parameters": {"temperature": 0.1},
            "tools": ["calculator"],
        },
    )
    assert created.status_code == 201
    assistant_id = created.json()["assistant"]["id"]
    url = f"/api/assistants/{assistant_id}/"

    listed = client_charlie.get("/api/assistants/").json()["assistants"]
    assert [a["name"] for a in listed] == ["Translator"]
    assert client_charlie.patch(url, '{"name": "Mine"}', content_type="application/json").status_code == 403
    assert client_charlie.delete(url).status_code == 403
    assert client_charlie.delete("/api/assistants/999999/").status_code == 404

    renamed = client_bob.patch(url, '{"name": "French"}', content_type="application/json")
    assert renamed.status_code == 200 and renamed.json()["assistant"]["name"] == "French"
    assert client_alice.delete(url).status_code == 200  # staff
    assert not Assistant.objects.exists()


def test_an_assistant_is_checked_like_a_conversation(client_bob, offline_model):
    bad = post_assistant(client_bob, {"name": "Hot", "parameters": {"temperature": 9}})
    assert bad.status_code == 400 and bad.json()["error"]["parameter"] == "temperature"
    assert (
        post_assistant(client_bob, {"name": "X", "model": 999999}).json()["error"]["code"] == "unknown_model"
    )
    assert post_assistant(client_bob, {"name": ""}).status_code == 400
    assert post_assistant(client_bob, {"name": "Twice"}).status_code == 201
    assert post_assistant(client_bob, {"name": "Twice"}).json()["error"]["code"] == "name_taken"
    assert client_bob.get("/api/assistants/").status_code == 200


def test_anonymous_gets_a_401(client, db):
    assert client.get("/api/assistants/").status_code == 401


# --- Sends through the offline upstream -----------------------------------------------------------


@pytest.fixture
def bob_cookie(bob):
    return session_cookie(bob)


async def run_send(cookie, **frame) -> tuple[dict, int]:
    """Send one message; return the request body the offline upstream received and the reply's id."""
    socket = Socket(cookie)
    assert await socket.open()
    await socket.send(type="send", **frame)
    done = await socket.until("reply.done")
    await socket.close()
    record = await database_sync_to_async(UsageRecord.objects.get)(message_id=done["message"])
    return record, done["message"]


@pytest.mark.django_db(transaction=True)
async def test_a_send_carries_exactly_the_supported_parameters(
    bob_cookie, bob_conversation, offline_upstream
):
    bob_conversation.system_prompt = "Be brief."
    bob_conversation.parameters = EVERYTHING
    bob_conversation.tools = ["calculator"]
    await database_sync_to_async(bob_conversation.save)()
    record, _reply = await run_send(
        bob_cookie, conversation=str(bob_conversation.public_id), text=offline(reply="Short.")
    )
    body = offline_upstream.request(str(record.request_id))["body"]
    sent = {k: v for k, v in body.items() if k in parameters.PARAMETERS}
    # offline_model: tools but neither JSON nor reasoning.
    assert sent == {
        "temperature": 0.2,
        "top_p": 0.9,
        "max_tokens": 300,
        "stop": ["END"],
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "seed": 7,
        "user": "bob",
        "tool_choice": "auto",
    }
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.django_db(transaction=True)
async def test_a_conversation_with_invalid_stored_parameters_is_refused_before_upstream(
    bob_cookie, bob_conversation, offline_upstream
):
    bob_conversation.parameters = {"temperature": 7}  # as an import could have stored it
    await database_sync_to_async(bob_conversation.save)()
    before = len(offline_upstream.requests())
    socket = Socket(bob_cookie)
    assert await socket.open()
    await socket.send(type="send", conversation=str(bob_conversation.public_id), text="Hi", ref="r1")
    error = await socket.until("error")
    await socket.close()
    assert error["code"] == "bad_parameter" and error["ref"] == "r1"
    assert "temperature must be between 0 and 2" in error["detail"]
    assert len(offline_upstream.requests()) == before
    assert not await database_sync_to_async(bob_conversation.messages.exists)()  # the prompt rolled back


@pytest.mark.django_db(transaction=True)
async def test_a_new_conversation_from_an_assistant_carries_its_settings(
    bob_cookie, offline_model, offline_upstream
):
    assistant = await database_sync_to_async(Assistant.objects.create)(
        name="Poet",
        system_prompt="Write in rhyme.",
        model=offline_model,
        parameters={"temperature": 1.3, "max_tokens": 64},
        tools=["current_time"],
    )
    socket = Socket(bob_cookie)
    assert await socket.open()
    await socket.send(type="send", conversation=None, text=offline(reply="Roses."), assistant=assistant.pk)
    done = await socket.until("reply.done")
    await socket.until("conversation.updated")  # the model's title: no task left behind the test
    await socket.close()
    conversation = await database_sync_to_async(Conversation.objects.get)(public_id=done["conversation"])
    assert conversation.system_prompt == "Write in rhyme."
    assert conversation.parameters == {"temperature": 1.3, "max_tokens": 64}
    assert conversation.tools == ["current_time"] and conversation.model_id == offline_model.pk
    record = await database_sync_to_async(UsageRecord.objects.get)(message_id=done["message"], source="chat")
    body = offline_upstream.request(str(record.request_id))["body"]
    assert body["temperature"] == 1.3 and body["max_tokens"] == 64
    assert body["messages"][0] == {"role": "system", "content": "Write in rhyme."}


@pytest.mark.django_db(transaction=True)
async def test_an_unknown_assistant_is_refused(bob_cookie, offline_model):
    socket = Socket(bob_cookie)
    assert await socket.open()
    await socket.send(type="send", conversation=None, text="Hi", assistant=424242)
    error = await socket.until("error")
    await socket.close()
    assert error["code"] == "not_found"
    assert not await database_sync_to_async(Conversation.objects.exists)()


@pytest.mark.django_db(transaction=True)
async def test_settings_chosen_before_the_first_message_are_checked_and_kept(bob_cookie, offline_model):
    socket = Socket(bob_cookie)
    assert await socket.open()
    bad = {"parameters": {"top_p": 2}}
    await socket.send(type="send", conversation=None, text="Hi", settings=bad, ref="s1")
    error = await socket.until("error")
    assert error["code"] == "bad_parameter" and "top_p must be between 0 and 1" in error["detail"]
    assert not await database_sync_to_async(Conversation.objects.exists)()

    good = {"system_prompt": "Be terse.", "parameters": {"top_p": 0.5}, "tools": ["calculator"]}
    await socket.send(type="send", conversation=None, text=offline(reply="Ok."), settings=good)
    done = await socket.until("reply.done")
    await socket.until("conversation.updated")
    await socket.close()
    conversation = await database_sync_to_async(Conversation.objects.get)(public_id=done["conversation"])
    assert (conversation.system_prompt, conversation.parameters, conversation.tools) == (
        "Be terse.",
        {"top_p": 0.5},
        ["calculator"],
    )


def test_the_admin_checks_an_assistants_parameters(client_alice, alice):
    url = "/admin/conversations/assistant/add/"
    assert client_alice.get(url).status_code == 200
    form = {"name": "Hot", "description": "", "system_prompt": "", "model": "", "tools": "[]"}
    refused = client_alice.post(url, {**form, "parameters": '{"temperature": 9}', "created_by": ""})
    assert refused.status_code == 200 and "temperature must be between 0 and 2" in refused.content.decode()
    saved = client_alice.post(url, {**form, "parameters": '{"temperature": 1}', "created_by": ""})
    assert saved.status_code == 302
    assistant = Assistant.objects.get()
    assert assistant.parameters == {"temperature": 1} and assistant.created_by == alice


def test_an_imported_file_keeps_only_parameters_that_pass_the_rules():
    imported = {"temperature": 0.5, "top_p": 9, "api_base": "http://evil", "tool_choice": "auto", "seed": 7}
    assert parameters.valid_subset(imported) == {"temperature": 0.5, "seed": 7}
    assert parameters.valid_subset(["not", "a", "dict"]) == {}

"""Export and import of conversations (conversations/transfer.py, docs/transfer.md)."""

import json
from datetime import UTC, datetime

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from conversations import messaging, transfer
from conversations.models import ChatModel, Conversation, Message, Provider, UsageRecord

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_model(db) -> ChatModel:
    provider = Provider.objects.create(name="Demo", base_url="http://127.0.0.1:9/v1", is_offline=True)
    return ChatModel.objects.create(provider=provider, upstream_id="demo-chat", display_name="Demo chat")


def add(conversation: Conversation, parent: Message | None, role: str, text: str, **fields) -> Message:
    message = Message(conversation=conversation, parent=parent, role=role, **fields)
    message.set_parts([{"type": "text", "text": text}])
    message.save()
    return message


@pytest.fixture
def haiku(bob, demo_model) -> Conversation:
    """A prompt with two versions of its reply; the second continued, the first with a branch of its own.

    prompt ─┬─ old reply (stopped) ── other path
            └─ new reply ── "Shorter" ── short reply   ← selected
    """
    conversation = Conversation.objects.create(owner=bob, title="Haiku time!", model=demo_model)
    prompt = add(conversation, None, "user", "Write a haiku")
    old = add(conversation, prompt, "assistant", "Old haiku", status="cancelled", model=demo_model)
    new = Message(conversation=conversation, parent=prompt, role="assistant", model=demo_model)
    new.set_parts(
        [{"type": "reasoning", "text": "Five, seven, five."}, {"type": "text", "text": "New haiku"}]
    )
    new.save()
    add(conversation, old, "user", "Other path")
    shorter = add(conversation, new, "user", "Shorter")
    leaf = add(conversation, shorter, "assistant", "Short ```code``` reply", model=demo_model)
    conversation.current_leaf = leaf
    conversation.save()
    return conversation


def export_url(conversation: Conversation, kind: str) -> str:
    return reverse("conversation_export", args=[conversation.public_id]) + f"?format={kind}"


def upload(client, content: bytes | str, name: str = "export.json"):
    data = content.encode() if isinstance(content, str) else content
    return client.post(reverse("conversation_import"), {"file": SimpleUploadedFile(name, data)})


def shape(conversation: Conversation) -> dict:
    """The tree without database ids: each message's parent as its index in the export."""
    exported = transfer.export_json(conversation)["conversation"]
    index = {message["id"]: number for number, message in enumerate(exported["messages"])}
    return {
        "title": exported["title"],
        "model": exported["model"],
        "current_leaf": index.get(exported["current_leaf"]),
        "messages": [
            {**message, "id": index[message["id"]], "parent": index.get(message["parent"])}
            for message in exported["messages"]
        ],
    }


def selected_path(conversation: Conversation) -> list[Message]:
    messages = {message.pk: message for message in conversation.messages.all()}
    path, message = [], messages.get(conversation.current_leaf_id)
    while message is not None:
        path.append(message)
        message = messages.get(message.parent_id)
    return path[::-1]


def texts(conversation: Conversation) -> list[str]:
    """The selected path's text, as the page shows it after a snapshot."""
    return [message["parts"][-1]["text"] for message in messaging.load_snapshot(conversation)["messages"]]


# --- Export ---------------------------------------------------------------------------------------


def test_it_exports_the_selected_path_as_markdown(client_bob, haiku):
    response = client_bob.get(export_url(haiku, "md"))

    assert response.status_code == 200
    assert response["Content-Type"] == "text/markdown; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="haiku-time.md"'
    text = response.content.decode()
    assert text.startswith("# Haiku time!\n\n## You\n\nWrite a haiku\n\n## Assistant\n\n")
    assert "> **Reasoning**\n>\n> Five, seven, five.\n\nNew haiku\n\n## You\n\nShorter" in text
    assert text.endswith("## Assistant\n\nShort ```code``` reply\n")
    # Other branches are not on the selected path.
    assert "Old haiku" not in text and "Other path" not in text


def test_it_exports_the_whole_tree_as_json(client_bob, haiku, demo_model):
    response = client_bob.get(export_url(haiku, "json"))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Content-Disposition"] == 'attachment; filename="haiku-time.json"'
    data = json.loads(response.content)
    assert (data["format"], data["version"]) == ("chatsite.conversation", 1)
    conversation = data["conversation"]
    messages = {m.pk: m for m in haiku.messages.all()}
    assert conversation["title"] == "Haiku time!"
    assert conversation["model"] == "demo-chat"
    assert conversation["current_leaf"] == haiku.current_leaf_id
    assert [m["id"] for m in conversation["messages"]] == sorted(messages)
    for exported in conversation["messages"]:
        message = messages[exported["id"]]
        assert exported["parent"] == message.parent_id
        assert exported["role"] == message.role
        assert exported["status"] == message.status
        assert exported["parts"] == message.parts
        assert exported["model"] == ("demo-chat" if message.model_id else None)
        assert datetime.fromisoformat(exported["created_at"]) == message.created_at


@pytest.mark.parametrize(
    ("title", "name"),
    [
        ("Spring poem", "spring-poem.md"),
        ("", "conversation.md"),
        ("?!/\\..", "conversation.md"),
        ("春天的诗", "春天的诗.md"),
    ],
)
def test_it_names_the_file_after_the_title(bob, title, name):
    assert transfer.file_name(Conversation(owner=bob, title=title), "md") == name


def test_a_title_in_another_script_is_sent_encoded(client_bob, bob):
    conversation = Conversation.objects.create(owner=bob, title="春天的诗")

    response = client_bob.get(export_url(conversation, "md"))

    assert (
        response["Content-Disposition"]
        == "attachment; filename*=utf-8''%E6%98%A5%E5%A4%A9%E7%9A%84%E8%AF%97.md"
    )


def test_it_exports_only_to_the_owner(client, client_charlie, client_bob, haiku):
    for kind in ("md", "json"):
        response = client_charlie.get(export_url(haiku, kind))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert client.get(export_url(haiku, kind)).status_code == 401
    assert client_bob.get(export_url(haiku, "pdf")).json()["error"]["code"] == "bad_format"


# --- Import ---------------------------------------------------------------------------------------


def test_a_json_export_comes_back_with_its_branches_and_selection(client_bob, client_charlie, charlie, haiku):
    exported = client_bob.get(export_url(haiku, "json")).content

    response = upload(client_charlie, exported)

    assert response.status_code == 201
    [summary] = response.json()["conversations"]
    imported = Conversation.objects.get(public_id=summary["id"])
    assert imported.owner == charlie
    assert summary["title"] == "Haiku time!"
    assert shape(imported) == shape(haiku)
    assert texts(imported) == ["Write a haiku", "New haiku", "Shorter", "Short ```code``` reply"]
    assert UsageRecord.objects.count() == 0


def test_it_imports_openai_messages(client_bob, bob, demo_model):
    body = {
        "model": "demo-chat",
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}, {"type": "image_url"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a":2,"b":2}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "4"},
            {"role": "assistant", "content": "It is 4."},
        ],
    }

    response = upload(client_bob, json.dumps(body))

    assert response.status_code == 201
    conversation = Conversation.objects.get(public_id=response.json()["conversations"][0]["id"])
    assert conversation.title == "What is 2+2?"
    assert conversation.model == demo_model
    path = selected_path(conversation)
    assert [m.role for m in path] == ["system", "user", "assistant", "tool", "assistant"]
    assert [m.parts for m in path] == [
        [{"type": "text", "text": "Be brief."}],
        [{"type": "text", "text": "What is 2+2?"}],
        [{"type": "tool_call", "id": "call_1", "name": "add", "arguments": '{"a":2,"b":2}'}],
        [{"type": "tool_result", "tool_call_id": "call_1", "content": "4"}],
        [{"type": "text", "text": "It is 4."}],
    ]
    assert {m.status for m in path} == {"complete"}
    assert path[-1].model == demo_model
    assert conversation.messages.count() == 5


def test_it_imports_a_bare_list_of_messages(client_bob):
    body = [{"role": "user", "content": "Hello there"}, {"role": "assistant", "content": "Hi!"}]

    response = upload(client_bob, json.dumps(body))

    conversation = Conversation.objects.get(public_id=response.json()["conversations"][0]["id"])
    assert conversation.title == "Hello there"
    assert texts(conversation) == ["Hello there", "Hi!"]


def chatgpt_node(key, parent, children, role=None, text="", **message):
    """One node of a ChatGPT mapping, as conversations.json has it."""
    if role is None:
        return {"id": key, "message": None, "parent": parent, "children": children}
    content = message.pop("content", {"content_type": "text", "parts": [text]})
    return {
        "id": key,
        "message": {
            "id": key,
            "author": {"role": role, "name": None, "metadata": {}},
            "create_time": message.pop("create_time", 1714550400.5),
            "update_time": None,
            "content": content,
            "status": "finished_successfully",
            "end_turn": True,
            "weight": 1.0,
            "metadata": message.pop("metadata", {}),
            "recipient": "all",
        },
        "parent": parent,
        "children": children,
    }


# A prompt edited once: two versions of the prompt, each with its reply; the edit is selected.
CHATGPT_EXPORT = [
    {
        "title": "Trip to Lisbon",
        "create_time": 1714550000.0,
        "update_time": 1714550900.0,
        "mapping": {
            "root": chatgpt_node("root", None, ["system"]),
            "system": chatgpt_node(
                "system",
                "root",
                ["ask-1", "ask-2"],
                "system",
                "",
                metadata={"is_visually_hidden_from_conversation": True},
            ),
            "ask-1": chatgpt_node("ask-1", "system", ["reply-1"], "user", "Plan three days in Lisbon"),
            "reply-1": chatgpt_node(
                "reply-1", "ask-1", [], "assistant", "Day 1: Alfama", metadata={"model_slug": "gpt-4o"}
            ),
            "ask-2": chatgpt_node("ask-2", "system", ["think", "reply-2"], "user", "Plan two days in Lisbon"),
            "think": chatgpt_node(
                "think",
                "ask-2",
                [],
                "assistant",
                content={
                    "content_type": "thoughts",
                    "thoughts": [{"summary": "Plan", "content": "Two days."}],
                },
            ),
            "reply-2": chatgpt_node(
                "reply-2", "ask-2", [], "assistant", "Day 1: Belém", create_time=1714550900.0
            ),
        },
        "moderation_results": [],
        "current_node": "reply-2",
        "conversation_id": "6630f0a0-0000-0000-0000-000000000001",
        "default_model_slug": "gpt-4o",
        "id": "6630f0a0-0000-0000-0000-000000000001",
    },
    {
        "title": "Second",
        "create_time": 1714560000.0,
        "mapping": {
            "a": chatgpt_node("a", None, ["b"], "user", "Hi"),
            "b": chatgpt_node("b", "a", [], "assistant", "Hello"),
        },
        "current_node": "b",
    },
]


def test_it_imports_a_chatgpt_export_with_its_branches(client_bob, bob):
    response = upload(client_bob, json.dumps(CHATGPT_EXPORT), name="conversations.json")

    assert response.status_code == 201
    ids = [summary["id"] for summary in response.json()["conversations"]]
    trip, second = (Conversation.objects.get(public_id=public_id) for public_id in ids)
    assert (trip.title, second.title) == ("Trip to Lisbon", "Second")
    assert trip.owner == bob
    assert trip.created_at == datetime(2024, 5, 1, 7, 53, 20, tzinfo=UTC)
    # The message-less root and the hidden system message are left out: both prompts are first messages.
    messages = {m.text: m for m in trip.messages.all()}
    assert len(messages) == 5
    first, edit = messages["Plan three days in Lisbon"], messages["Plan two days in Lisbon"]
    assert first.parent is None and edit.parent is None
    assert messages["Day 1: Alfama"].parent == first
    assert messages["Day 1: Belém"].parent == edit
    assert messages["Plan\n\nTwo days."].parts == [{"type": "reasoning", "text": "Plan\n\nTwo days."}]
    assert messages["Day 1: Belém"].created_at == datetime(2024, 5, 1, 8, 8, 20, tzinfo=UTC)
    assert trip.current_leaf == messages["Day 1: Belém"]
    assert texts(trip) == ["Plan two days in Lisbon", "Day 1: Belém"]
    # The versions of the first prompt, as the page's "< 1/2 >" shows them.
    assert messaging.load_snapshot(trip)["messages"][0]["siblings"] == [first.pk, edit.pk]
    assert texts(second) == ["Hi", "Hello"]
    assert UsageRecord.objects.count() == 0


def test_a_file_of_thousands_of_messages_takes_a_few_statements(bob):
    def import_chain(length: int) -> int:
        body = [{"role": "user" if n % 2 == 0 else "assistant", "content": f"m{n}"} for n in range(length)]
        with CaptureQueriesContext(connection) as queries:
            [conversation] = transfer.import_file(bob, json.dumps(body).encode())
        assert conversation.messages.count() == length
        assert texts(conversation)[-1] == f"m{length - 1}"
        return len(queries)

    small, large = import_chain(10), import_chain(5000)

    # One statement per batch of rows, not per message (SQLite binds at most 999 values per statement).
    assert small <= 7
    assert large < 100


# --- Refused files --------------------------------------------------------------------------------


CYCLE = {
    "format": "chatsite.conversation",
    "version": 1,
    "conversation": {
        "title": "Loop",
        "current_leaf": 1,
        "messages": [
            {"id": 1, "parent": 2, "role": "user", "parts": []},
            {"id": 2, "parent": 1, "role": "assistant", "parts": []},
        ],
    },
}


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b'{"messages": [{"role": "user", "content": "Hi"}', "bad_json"),
        (b"\xff\xfe\x00 not text", "bad_json"),
        (json.dumps({"conversations": []}), "unknown_format"),
        (json.dumps([1, 2, 3]), "unknown_format"),
        (json.dumps({"format": "chatsite.conversation", "version": 2, "conversation": {}}), "bad_file"),
        (json.dumps(CYCLE), "bad_file"),
        (json.dumps([{"role": "wizard", "content": "Hi"}]), "bad_file"),
        (json.dumps({"messages": [{"role": "user", "content": 42}]}), "bad_file"),
        (json.dumps({"messages": []}), "empty"),
        # A good conversation and a broken one: the good one is not saved on its own.
        (
            json.dumps(
                [
                    CHATGPT_EXPORT[1],
                    {"title": "x", "mapping": {"a": chatgpt_node("a", "gone", [], "user", "Hi")}},
                ]
            ),
            "bad_file",
        ),
    ],
)
def test_it_refuses_a_file_it_cannot_read(client_bob, content, code):
    response = upload(client_bob, content)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["detail"]
    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_it_refuses_a_file_over_the_limit(client_bob, settings):
    settings.IMPORT_MAX_BYTES = 100
    body = json.dumps([{"role": "user", "content": "x" * 200}])

    response = upload(client_bob, body)

    assert response.status_code == 413
    assert response.json()["error"] == {
        "code": "too_large",
        "detail": "The file is larger than 100\xa0bytes.",
    }
    assert not Conversation.objects.exists()


def test_it_asks_for_a_file(client_bob):
    response = client_bob.post(reverse("conversation_import"), {})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_file"


def test_it_imports_for_members_only(client):
    response = upload(client, json.dumps([{"role": "user", "content": "Hi"}]))

    assert response.status_code == 401
    assert not Conversation.objects.exists()


def test_a_failure_while_saving_leaves_nothing_behind(bob, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(Message.objects, "bulk_update", fail)

    with pytest.raises(RuntimeError):
        transfer.import_file(bob, json.dumps(CHATGPT_EXPORT).encode())

    assert not Conversation.objects.exists()
    assert not Message.objects.exists()


def test_it_announces_each_new_conversation_after_commit(bob, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks() as callbacks:
        transfer.import_file(bob, json.dumps(CHATGPT_EXPORT).encode())

    assert len(callbacks) == 2

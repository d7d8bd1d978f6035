"""Changes to the message tree and what a client reads of it: queries per send, the snapshot's newest
page of the path and the older pages of `history`."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from conversations import budgets, catalog, messaging
from conversations.models import Message

pytestmark = pytest.mark.django_db


def long_conversation(conversation, count: int) -> list[Message]:
    """A linear path of `count` finished messages, user and assistant in turn, and a side branch."""
    path: list[Message] = []
    parent = None
    for index in range(count):
        role = Message.Role.USER if index % 2 == 0 else Message.Role.ASSISTANT
        message = Message(conversation=conversation, parent=parent, role=role, status=Message.Status.COMPLETE)
        message.set_parts([{"type": "text", "text": f"message {index}"}])
        message.save()
        path.append(message)
        parent = message
    branch = Message(conversation=conversation, parent=path[-3], role=Message.Role.USER)
    branch.set_parts([{"type": "text", "text": "a side branch"}])
    branch.save()
    conversation.current_leaf = path[-1]
    conversation.save()
    return path


def texts(data: dict) -> list[str]:
    return [message["parts"][0]["text"] for message in data["messages"]]


def test_a_send_takes_the_same_seven_queries_however_long_the_conversation(bob, bob_conversation):
    """Read the conversation, its tree's skeleton and the path's rows; write the prompt, the reply, the
    conversation and the usage record."""
    catalog.usable_model(bob, bob_conversation.model_id)  # the models are read once per process
    budgets.limits_for(bob.pk)  # so are the limits (there are none: no query per send)
    counts = []
    for size in (4, 120):
        bob_conversation.messages.all().delete()
        long_conversation(bob_conversation, size)
        with CaptureQueriesContext(connection) as queries:
            messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
        counts.append(len([q for q in queries if not q["sql"].startswith(("BEGIN", "SAVEPOINT", "RELEASE"))]))
    assert counts == [7, 7]


def test_the_snapshot_holds_the_newest_page_and_history_the_older_ones(bob, bob_conversation, monkeypatch):
    monkeypatch.setattr(messaging, "SNAPSHOT_MESSAGES", 4)
    monkeypatch.setattr(messaging, "HISTORY_MESSAGES", 3)
    path = long_conversation(bob_conversation, 10)

    snapshot = messaging.load_snapshot(bob_conversation)
    assert texts(snapshot) == [f"message {i}" for i in range(6, 10)]
    assert snapshot["older"] is True
    assert snapshot["messages"][2]["siblings"] == [path[8].pk, path[-1].pk + 1]  # the side branch

    older = messaging.load_history(bob_conversation, snapshot["messages"][0]["id"])
    assert texts(older) == ["message 3", "message 4", "message 5"] and older["older"] is True
    oldest = messaging.load_history(bob_conversation, older["messages"][0]["id"])
    assert texts(oldest) == ["message 0", "message 1", "message 2"] and oldest["older"] is False


def test_history_refuses_a_message_off_the_selected_path(bob, bob_conversation):
    long_conversation(bob_conversation, 6)
    branch = bob_conversation.messages.get(text="a side branch")
    for before in (branch.pk, "1", None, 10**9):
        with pytest.raises(messaging.RefusedError) as refused:
            messaging.load_history(bob_conversation, before)
        assert refused.value.code == "not_found"


def test_a_snapshot_of_a_long_conversation_reads_only_the_page_it_shows(bob, bob_conversation):
    long_conversation(bob_conversation, 300)
    with CaptureQueriesContext(connection) as queries:
        snapshot = messaging.load_snapshot(bob_conversation)
    assert len(snapshot["messages"]) == messaging.SNAPSHOT_MESSAGES
    assert len(queries) == 3  # the conversation, the skeleton, the page's rows

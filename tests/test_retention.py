"""A deleted conversation stays for Undo, then goes for good: its messages, images (and their files)
and share links; its usage records stay, unlinked. Expired sessions go, with whose they were."""

import io
import os
from datetime import timedelta

import pytest
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from PIL import Image

from conversations import images, retention, sharing
from conversations.models import (
    RESTORE_WINDOW,
    Attachment,
    Conversation,
    MemberSession,
    Message,
    ShareLink,
    UsageRecord,
)
from conversations.usage import start

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def png() -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 40, 40)).save(data, "PNG")
    return data.getvalue()


def conversation_of(
    owner, offline_model, title: str, deleted_ago: timedelta | None, status=Message.Status.COMPLETE
):
    conversation = Conversation.objects.create(owner=owner, title=title, model=offline_model)
    question = Message(conversation=conversation, role=Message.Role.USER)
    image = images.save_upload(owner, png())
    image.conversation = conversation
    image.save(update_fields=["conversation"])
    question.set_parts(
        [{"type": "image", "attachment": str(image.public_id)}, {"type": "text", "text": "Hi"}]
    )
    question.save()
    reply = Message.objects.create(
        conversation=conversation, parent=question, role=Message.Role.ASSISTANT, status=status
    )
    conversation.current_leaf = reply
    conversation.save(update_fields=["current_leaf"])
    start(user_id=owner.pk, model=offline_model, source=UsageRecord.Source.CHAT, conversation=conversation)
    sharing.create_link(conversation, ShareLink.Audience.ANYONE)
    if deleted_ago is not None:
        conversation.deleted_at = timezone.now() - deleted_ago
        conversation.save(update_fields=["deleted_at"])
    return conversation, image


def test_conversations_deleted_past_the_restore_window_go_for_good(bob, offline_model):
    gone, gone_image = conversation_of(bob, offline_model, "old", RESTORE_WINDOW + timedelta(minutes=1))
    undoable, _ = conversation_of(bob, offline_model, "recent", RESTORE_WINDOW - timedelta(minutes=5))
    kept, _ = conversation_of(bob, offline_model, "kept", None)
    file_path = gone_image.file.path

    assert retention.purge_deleted_conversations() == 1

    assert set(Conversation.objects.values_list("title", flat=True)) == {"recent", "kept"}
    assert not Message.objects.filter(conversation_id=gone.pk).exists()
    assert not Attachment.objects.filter(pk=gone_image.pk).exists()
    assert not os.path.exists(file_path)  # the file went with its row
    assert ShareLink.objects.count() == 2
    # The accounting stays as it was, without the link to the conversation.
    assert UsageRecord.objects.count() == 3
    assert UsageRecord.objects.filter(conversation__isnull=True).count() == 1
    assert retention.purge_deleted_conversations() == 0
    assert {undoable.pk, kept.pk} == set(Conversation.objects.values_list("pk", flat=True))


def test_a_conversation_with_a_reply_still_being_written_waits(bob, offline_model):
    conversation_of(bob, offline_model, "streaming", RESTORE_WINDOW * 2, status=Message.Status.STREAMING)
    assert retention.purge_deleted_conversations() == 0
    assert Conversation.objects.filter(title="streaming").exists()


def test_a_pass_removes_at_most_a_batch(bob, offline_model, monkeypatch):
    monkeypatch.setattr(retention, "PURGE_BATCH", 2)
    for number in range(3):
        conversation_of(bob, offline_model, f"old {number}", RESTORE_WINDOW * 2)
    assert retention.purge_deleted_conversations() == 2
    assert retention.purge_deleted_conversations() == 1
    assert not Conversation.objects.exists()


def test_expired_sessions_go_with_the_rows_that_say_whose_they_were(bob, alice):
    live, expired = Client(), Client()
    live.force_login(bob)
    expired.force_login(alice)
    Session.objects.filter(session_key=expired.session.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    assert MemberSession.objects.count() == 2
    assert retention.purge_ended_sessions() == 0  # too young to tell from a login in flight
    MemberSession.objects.update(created_at=timezone.now() - retention.SESSION_ROW_GRACE * 2)
    assert retention.purge_ended_sessions() == 1
    assert list(Session.objects.values_list("session_key", flat=True)) == [live.session.session_key]
    assert list(MemberSession.objects.values_list("user__username", flat=True)) == ["bob"]
    assert live.get("/").status_code == 200  # the live session still works


def test_sessions_kept_elsewhere_leave_the_member_rows_alone(bob, settings):
    Client().force_login(bob)
    MemberSession.objects.update(created_at=timezone.now() - retention.SESSION_ROW_GRACE * 2)
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.cache"  # the table says nothing then
    assert retention.purge_ended_sessions() == 0
    assert MemberSession.objects.count() == 1

"""The deletion rules of the data model, and the one access rule for conversations."""

from pathlib import Path

import pytest
from django.core.files.base import ContentFile

from conversations import messaging
from conversations.models import Attachment, Conversation, Message, UsageRecord

pytestmark = pytest.mark.django_db


def test_deleting_a_member_keeps_their_usage_rows(bob, bob_conversation):
    messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
    bob.delete()
    record = UsageRecord.objects.get()
    assert record.user_id is None and record.model_name == "offline-chat"


def test_deleting_a_conversation_removes_its_messages_and_files(bob, bob_conversation, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    messaging.do_send_message(bob, str(bob_conversation.public_id), "Hello")
    attachment = Attachment(
        owner=bob, conversation=bob_conversation, content_type="image/png", width=1, height=1, size=3
    )
    attachment.file.save("photo.png", ContentFile(b"png"), save=True)
    stored = Path(attachment.file.path)
    assert stored.exists()
    bob_conversation.delete()
    assert not Message.objects.exists() and not Attachment.objects.exists()
    assert not stored.exists()
    assert UsageRecord.objects.get().conversation_id is None  # usage outlives the conversation


def test_a_conversation_is_its_owners_only_and_gone_once_deleted(bob, charlie, bob_conversation):
    assert list(Conversation.objects.for_user(bob)) == [bob_conversation]
    assert not Conversation.objects.for_user(charlie).exists()
    assert messaging.conversation_for_user(charlie, bob_conversation.public_id) is None
    assert messaging.conversation_for_user(bob, "not-a-uuid") is None
    bob_conversation.deleted_at = bob_conversation.updated_at
    bob_conversation.save()
    assert not Conversation.objects.for_user(bob).exists()

"""What is kept, and for how long: a deleted conversation is kept for Undo (models.RESTORE_WINDOW),
then removed for good with its messages, images (their files too, signals.py), and share links. Its
usage records stay, without the link to it: the accounting must not change when a member tidies up.
"""

from django.utils import timezone

from conversations.models import RESTORE_WINDOW, Conversation, Message

# Conversations removed per pass: a member who deleted thousands at once is purged over a few passes,
# each a short transaction.
PURGE_BATCH = 100


def purge_deleted_conversations() -> int:
    """Remove conversations deleted longer ago than the restore window; return how many went. A
    conversation whose reply is still being written waits for a later pass."""
    expired = list(
        Conversation.objects.filter(deleted_at__lt=timezone.now() - RESTORE_WINDOW)
        .exclude(messages__status__in=Message.LIVE_STATUSES)
        .values_list("pk", flat=True)[:PURGE_BATCH]
    )
    if expired:
        Conversation.objects.filter(pk__in=expired).delete()
    return len(expired)

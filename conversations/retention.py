"""What is kept, and for how long: a deleted conversation is kept for Undo (models.RESTORE_WINDOW),
then removed for good with its messages, images (their files too, signals.py), and share links. Its
usage records stay, without the link to it: the accounting must not change when a member tidies up.
"""

from django.utils import timezone

from conversations.models import RESTORE_WINDOW, Conversation, Message

# Conversations removed per pass. Small: the pass runs on the process's one database thread, which
# the chat's sockets and lease renewals share, and deleting loads every message of what goes.
PURGE_BATCH = 10


def purge_deleted_conversations() -> int:
    """Remove conversations deleted longer ago than the restore window; return how many went. A
    conversation whose reply is still being written waits for a later pass."""
    cutoff = timezone.now() - RESTORE_WINDOW
    expired = list(
        Conversation.objects.filter(deleted_at__lt=cutoff)
        .exclude(messages__status__in=Message.LIVE_STATUSES)
        .values_list("pk", flat=True)[:PURGE_BATCH]
    )
    if not expired:
        return 0
    # Checked again as it is deleted: an Undo may have landed since the ids were read.
    _, by_model = Conversation.objects.filter(pk__in=expired, deleted_at__lt=cutoff).delete()
    return by_model.get(Conversation._meta.label, 0)

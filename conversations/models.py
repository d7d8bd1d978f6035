"""The data model of the whole product; docs/architecture.md explains it."""

import hashlib
import secrets
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.validators import RegexValidator
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from conversations import secretbox


class Profile(models.Model):
    """What a member chooses for themselves."""

    class Theme(models.TextChoices):
        SYSTEM = "system", _("Follow the system")
        LIGHT = "light", _("Light")
        DARK = "dark", _("Dark")

    user = models.OneToOneField(settings.AUTH_USER_MODEL, models.CASCADE, related_name="profile")
    language = models.CharField(
        max_length=16, blank=True, choices=settings.LANGUAGES
    )  # "" follows the browser
    time_zone = models.CharField(max_length=64, blank=True)  # "" is the server's TIME_ZONE
    default_model = models.ForeignKey("ChatModel", models.SET_NULL, null=True, blank=True, related_name="+")
    theme = models.CharField(max_length=8, choices=Theme, default=Theme.SYSTEM)

    def __str__(self) -> str:
        return f"profile of {self.user_id}"


class MemberSession(models.Model):
    """Which sessions belong to whom, so that deactivating a member can end all of theirs."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="member_sessions")
    session_key = models.CharField(max_length=40, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"session of {self.user_id}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountLink(models.Model):
    """A one-time link: the first admin's setup, a member's invite, or a password reset.

    Only the token's hash is stored, so a database dump holds no usable link.
    """

    class Kind(models.TextChoices):
        SETUP = "setup"
        INVITE = "invite"
        RESET = "reset"

    kind = models.CharField(max_length=8, choices=Kind)
    token_hash = models.CharField(max_length=64, unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, null=True, blank=True, related_name="+"
    )  # the member a reset is for; the member an invite created, once used
    make_staff = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.kind} link {self.pk}"

    @classmethod
    def issue(cls, kind: str, *, hours: int | None = None, **fields: Any) -> tuple["AccountLink", str]:
        """Create a link; return it and the token, which exists nowhere else after this call."""
        token = secrets.token_urlsafe(32)
        hours = hours or settings.ACCOUNT_LINK_HOURS
        link = cls.objects.create(
            kind=kind,
            token_hash=hash_token(token),
            expires_at=timezone.now() + timedelta(hours=hours),
            **fields,
        )
        return link, token

    @property
    def is_usable(self) -> bool:
        return self.used_at is None and self.expires_at > timezone.now()


class Provider(models.Model):
    """An OpenAI-compatible endpoint and its key."""

    name = models.CharField(max_length=100, unique=True)
    base_url = models.URLField(max_length=500)
    api_key_encrypted = models.TextField(blank=True, editable=False)
    is_offline = models.BooleanField(default=False, help_text="The built-in offline demo upstream.")
    is_environment = models.BooleanField(default=False, help_text="Configured by OPENAI_BASE_URL.")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    @property
    def api_key(self) -> str:
        return secretbox.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""

    def set_api_key(self, key: str) -> None:
        self.api_key_encrypted = secretbox.encrypt(key) if key else ""

    @property
    def masked_api_key(self) -> str:
        key = self.api_key
        return f"…{key[-4:]}" if len(key) > 8 else ("set" if key else "")


class ChatModelQuerySet(models.QuerySet):
    def usable_by(self, user: Any) -> "ChatModelQuerySet":
        """Enabled models of enabled providers that this user's groups may use (no groups = everyone)."""
        usable = self.filter(enabled=True, provider__enabled=True)
        return usable.filter(
            models.Q(allowed_groups__isnull=True) | models.Q(allowed_groups__user=user)
        ).distinct()


class ChatModel(models.Model):
    """One model of one provider, as the team sees it."""

    provider = models.ForeignKey(Provider, models.CASCADE, related_name="models")
    upstream_id = models.CharField(max_length=200)
    display_name = models.CharField(max_length=200)
    supports_vision = models.BooleanField(default=False)
    supports_tools = models.BooleanField(default=False)
    supports_json = models.BooleanField(default=False)
    supports_reasoning = models.BooleanField(default=False)
    context_window = models.PositiveIntegerField(default=8192)
    # Prices per million tokens, in the provider's currency.
    input_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    cached_input_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    output_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    # Request parameters this model accepts; anything else is left out of the request.
    supported_parameters = models.JSONField(default=list, blank=True)
    # Prompt tokens per character, learned from what the upstream reported (the context budget).
    tokens_per_char = models.FloatField(default=0.3)
    enabled = models.BooleanField(default=True)
    allowed_groups = models.ManyToManyField(Group, blank=True, help_text="Empty: every member.")

    objects = ChatModelQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "upstream_id"], name="unique_model_per_provider")
        ]
        ordering = ["display_name"]

    def __str__(self) -> str:
        return self.display_name


class FolderQuerySet(models.QuerySet):
    def for_user(self, user: Any) -> "FolderQuerySet":
        """The one access rule for folders: the owner's."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user)


class Folder(models.Model):
    """A member's named group of conversations in the sidebar; deleting it keeps its conversations."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="folders")
    name = models.CharField(max_length=100)
    created_at = models.DateTimeField(default=timezone.now)

    objects = FolderQuerySet.as_manager()

    class Meta:
        ordering = ["name", "pk"]

    def __str__(self) -> str:
        return self.name


# How long a deleted conversation can still be brought back (the sidebar's Undo).
RESTORE_WINDOW = timedelta(hours=1)


class ConversationQuerySet(models.QuerySet):
    def for_user(self, user: Any) -> "ConversationQuerySet":
        """The one access rule for conversations: the owner's, not deleted."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user, deleted_at__isnull=True)

    def restorable_by(self, user: Any) -> "ConversationQuerySet":
        """The owner's conversations deleted within RESTORE_WINDOW: what Undo may bring back."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(owner=user, deleted_at__gte=timezone.now() - RESTORE_WINDOW)


class Conversation(models.Model):
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    # The leaf of the selected branch: what is shown, sent upstream and resynced is its path to the root.
    current_leaf = models.ForeignKey("Message", models.SET_NULL, null=True, blank=True, related_name="+")
    model = models.ForeignKey(ChatModel, models.SET_NULL, null=True, blank=True, related_name="+")
    system_prompt = models.TextField(blank=True)
    parameters = models.JSONField(default=dict, blank=True)  # sampling parameters, sent where supported
    # Names of the tools the model may call in this conversation (conversations/tools.py).
    tools = models.JSONField(default=list, blank=True)
    pinned = models.BooleanField(default=False)
    folder = models.ForeignKey(Folder, models.SET_NULL, null=True, blank=True, related_name="conversations")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        indexes = [models.Index(fields=["owner", "deleted_at", "-updated_at"], name="conversation_sidebar")]

    def __str__(self) -> str:
        return self.title or f"conversation {self.pk}"

    def get_absolute_url(self) -> str:
        return reverse("conversation", args=[self.public_id])


class Message(models.Model):
    class Role(models.TextChoices):
        SYSTEM = "system"
        USER = "user"
        ASSISTANT = "assistant"
        TOOL = "tool"

    class Status(models.TextChoices):
        PENDING = "pending"
        STREAMING = "streaming"
        COMPLETE = "complete"
        CANCELLED = "cancelled"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    LIVE_STATUSES = (Status.PENDING, Status.STREAMING)

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="messages")
    parent = models.ForeignKey("self", models.CASCADE, null=True, blank=True, related_name="children")
    role = models.CharField(max_length=16, choices=Role)
    status = models.CharField(max_length=16, choices=Status, default=Status.COMPLETE)
    # Canonical content, a list of typed parts: {"type": "text", "text"}, {"type": "image", "attachment"},
    # {"type": "tool_call", "id", "name", "arguments"}, {"type": "tool_result", "tool_call_id", "name",
    # "content"}, {"type": "reasoning", "text"}, {"type": "refusal", "text"}; chatsite's own notes on a
    # reply: {"type": "json_check", ...} (json_replies.py), {"type": "context_note", "omitted_messages"}.
    parts = models.JSONField(default=list, blank=True)
    text = models.TextField(blank=True)  # plain-text projection of the parts, for search
    finish_reason = models.CharField(max_length=32, blank=True)
    error_code = models.CharField(max_length=64, blank=True)
    error_detail = models.TextField(blank=True)
    model = models.ForeignKey(ChatModel, models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    # How many deltas the saved text holds: a snapshot from a checkpoint resumes from here.
    stream_seq = models.PositiveIntegerField(default=0)
    # A live generation renews this; the sweeper marks the reply interrupted once it lapses.
    lease_expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["conversation", "parent"], name="message_tree"),
            models.Index(fields=["status", "lease_expires_at"], name="message_lease"),
        ]

    def __str__(self) -> str:
        return f"message {self.pk}"

    def set_parts(self, parts: list[dict[str, Any]]) -> None:
        self.parts = parts
        self.text = text_of(parts)


def text_of(parts: list[dict[str, Any]]) -> str:
    """The searchable plain text of a message's parts."""
    pieces = []
    for part in parts:
        if part.get("type") in {"text", "reasoning", "refusal"}:
            pieces.append(part.get("text", ""))
        elif part.get("type") == "tool_result":
            pieces.append(str(part.get("content", "")))
    return "\n".join(piece for piece in pieces if piece)


class Assistant(models.Model):
    """A preset shared with the team: a system prompt, a model and parameters a member starts from."""

    name = models.CharField(max_length=100, unique=True)
    description = models.CharField(max_length=300, blank=True)
    system_prompt = models.TextField(blank=True)
    model = models.ForeignKey(ChatModel, models.SET_NULL, null=True, blank=True, related_name="+")
    parameters = models.JSONField(default=dict, blank=True)
    tools = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Tool(models.Model):
    """An HTTP tool an admin defines: the model calls it by name, the server POSTs the arguments."""

    name = models.CharField(
        max_length=64,
        unique=True,
        validators=[
            RegexValidator(r"^[a-zA-Z0-9_-]{1,64}$", _("Letters, digits, _ and - only (the API's rule)."))
        ],
    )
    description = models.TextField()
    parameters_schema = models.JSONField(default=dict, help_text="JSON schema of the arguments.")
    endpoint = models.URLField(max_length=500)
    secret_header_name = models.CharField(max_length=100, blank=True)
    secret_header_value_encrypted = models.TextField(blank=True, editable=False)
    # Outgoing calls refuse private, loopback and link-local addresses unless the admin allowed the host.
    allow_private_address = models.BooleanField(default=False)
    timeout_seconds = models.FloatField(default=10.0)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def secret_header_value(self) -> str:
        encrypted = self.secret_header_value_encrypted
        return secretbox.decrypt(encrypted) if encrypted else ""

    def set_secret_header_value(self, value: str) -> None:
        self.secret_header_value_encrypted = secretbox.encrypt(value) if value else ""


def _revoked_link() -> models.Q:
    # A deactivated owner's links answer 404 like revoked ones, and are listed so.
    return models.Q(revoked_at__isnull=False) | models.Q(conversation__owner__is_active=False)


class ShareLinkQuerySet(models.QuerySet):
    """A link's state (sharing.state_of) as queries: revoked, expired, or usable."""

    def for_user(self, user: Any) -> "ShareLinkQuerySet":
        """The one access rule for a member's links: those of their own conversations (with the owner,
        whom a link's state reads)."""
        if not user.is_authenticated:
            return self.none()
        return self.filter(conversation__owner=user).select_related("conversation__owner")

    def revoked(self) -> "ShareLinkQuerySet":
        return self.filter(_revoked_link())

    def expired(self) -> "ShareLinkQuerySet":
        return self.exclude(_revoked_link()).filter(expires_at__lte=timezone.now())

    def usable(self) -> "ShareLinkQuerySet":
        return self.exclude(_revoked_link()).exclude(expires_at__lte=timezone.now())


class ShareLink(models.Model):
    """A read-only link to a snapshot of a conversation's selected path (conversations/sharing.py).

    The token is looked up by its hash, like AccountLink's, and kept encrypted (secretbox, as provider
    keys are) so that its owner can copy the address again.
    """

    class Audience(models.TextChoices):
        ANYONE = "anyone", _("Anyone with the link")
        TEAM = "team", _("Team members only")

    conversation = models.ForeignKey(Conversation, models.CASCADE, related_name="share_links")
    token_hash = models.CharField(max_length=64, unique=True)
    token_encrypted = models.TextField(editable=False)
    audience = models.CharField(max_length=8, choices=Audience, default=Audience.ANYONE)
    # The snapshot: pks of the messages of the selected path when it was taken, root first.
    message_ids = models.JSONField(default=list)
    title = models.CharField(max_length=200, blank=True)  # the conversation's title at the snapshot
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)  # when the snapshot was last taken
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ShareLinkQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return gettext("Share link %(id)s") % {"id": self.pk}

    @property
    def token(self) -> str:
        return secretbox.decrypt(self.token_encrypted)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())


def attachment_path(instance: "Attachment", filename: str) -> str:
    return f"attachments/{instance.owner_id}/{uuid.uuid4().hex}{filename[filename.rfind('.') :]}"


class Attachment(models.Model):
    """An uploaded image, re-encoded and stored under a generated name."""

    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="attachments")
    conversation = models.ForeignKey(
        Conversation, models.CASCADE, null=True, blank=True, related_name="attachments"
    )
    file = models.FileField(upload_to=attachment_path)
    content_type = models.CharField(max_length=32)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    size = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"attachment {self.pk}"


# What the statistics read of a usage record (statistics.py), kept in its time index on PostgreSQL.
STATISTICS_COLUMNS = [
    "user", "model", "provider", "source", "status", "prompt_tokens", "cached_tokens", "completion_tokens",
    "reasoning_tokens", "cost", "time_to_first_token_ms", "duration_ms",
]  # fmt: skip


class UsageRecord(models.Model):
    """One upstream request: created before the call, finished exactly once (conversations/usage.py)."""

    class Status(models.TextChoices):
        STARTED = "started"
        COMPLETE = "complete"
        CANCELLED = "cancelled"
        ERROR = "error"
        INTERRUPTED = "interrupted"

    class Source(models.TextChoices):
        CHAT = "chat"
        TITLE = "title"
        TOOL_STEP = "tool_step"
        API = "api"

    request_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.SET_NULL, null=True, related_name="usage_records"
    )
    conversation = models.ForeignKey(Conversation, models.SET_NULL, null=True, blank=True, related_name="+")
    message = models.ForeignKey(Message, models.SET_NULL, null=True, blank=True, related_name="+")
    provider = models.ForeignKey(Provider, models.SET_NULL, null=True, related_name="+")
    model = models.ForeignKey(ChatModel, models.SET_NULL, null=True, related_name="+")
    model_name = models.CharField(max_length=200)  # the upstream id at the time, kept if the model goes
    source = models.CharField(max_length=16, choices=Source, default=Source.CHAT)
    status = models.CharField(max_length=16, choices=Status, default=Status.STARTED)
    error_code = models.CharField(max_length=64, blank=True)
    prompt_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(default=False)  # the upstream reported no usage
    # Prices per million tokens at the time of the call; later price changes do not rewrite history.
    input_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    cached_input_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    output_price = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    cost = models.DecimalField(max_digits=16, decimal_places=8, default=Decimal(0))
    time_to_first_token_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Budget held for this request until it finishes: [[LimitUsage id, amount], ...] (budgets.py).
    reservations = models.JSONField(default=list, blank=True)

    class Meta:
        indexes = [
            # Covering on PostgreSQL: the statistics pages (statistics.py) read a month of rows from
            # the index alone (docs/usage.md). SQLite has no INCLUDE and gets the plain index.
            models.Index(fields=["started_at"], name="usage_by_time", include=STATISTICS_COLUMNS),
            models.Index(fields=["user", "started_at"], name="usage_by_user"),
            models.Index(fields=["model", "started_at"], name="usage_by_model"),
        ]

    def __str__(self) -> str:
        return f"usage {self.request_id}"


class Limit(models.Model):
    """A budget (tokens or cost per day or month) or a rate (requests per minute) for one member, or for
    each member of a group. Enforced by conversations/budgets.py before every upstream call."""

    class Kind(models.TextChoices):
        TOKENS = "tokens", _("tokens")
        COST = "cost", _("cost")
        REQUESTS = "requests", _("requests")

    class Period(models.TextChoices):
        MINUTE = "minute", _("per minute")
        DAY = "day", _("per day")
        MONTH = "month", _("per month")

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, models.CASCADE, null=True, blank=True, related_name="limits"
    )
    group = models.ForeignKey(
        Group, models.CASCADE, null=True, blank=True, related_name="+", help_text="Applies to each member."
    )
    kind = models.CharField(max_length=8, choices=Kind)
    period = models.CharField(max_length=8, choices=Period)
    amount = models.DecimalField(max_digits=16, decimal_places=6, help_text="Tokens, requests, or cost.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=models.Q(user__isnull=False, group__isnull=True)
                | models.Q(user__isnull=True, group__isnull=False),
                name="limit_for_a_user_or_a_group",
            )
        ]

    def __str__(self) -> str:
        who = self.user or (f"group {self.group}" if self.group_id else "?")
        return f"{self.amount.normalize():f} {self.get_kind_display()} {self.get_period_display()} ({who})"


class LimitUsage(models.Model):
    """What one member used and holds reserved against one limit in one window (a day, a month, a
    minute); admission is one conditional UPDATE of this row."""

    limit = models.ForeignKey(Limit, models.CASCADE, related_name="usage")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, models.CASCADE, related_name="+")
    window_start = models.DateTimeField()
    used = models.DecimalField(max_digits=20, decimal_places=8, default=Decimal(0))
    reserved = models.DecimalField(max_digits=20, decimal_places=8, default=Decimal(0))

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["limit", "user", "window_start"], name="one_usage_per_window")
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.limit} from {self.window_start:%Y-%m-%d %H:%M}"

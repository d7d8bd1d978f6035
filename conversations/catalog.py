"""The chat models a member may use, read from memory instead of the database on every message.

Every message needs its model, the model's provider and whether the member may use it. Those are the
same few rows for the whole team and change only when an admin edits them, yet the query that applies
the access rule (ChatModelQuerySet.usable_by: a join through the allowed groups) cost more CPU than the
rest of a send together. So each process keeps the rows in memory:

- An edit saved through Django (admin, registry, shell) sends a signal; the receiver drops this
  process's copy and writes a new version token to the cache, which with REDIS_URL every process
  reads, so all of them reload on their next use. A change made outside Django (raw SQL) is picked
  up within MAX_AGE_SECONDS.
- The member's groups are read per request, and only where a model is limited to groups: adding
  someone to a group takes effect at once.

usable_by() stays the rule in SQL for querysets (form choices); tests hold the two to the same answers.
"""

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import Group
from django.core.cache import cache

from conversations.models import ChatModel

VERSION_KEY = "chatsite:catalog-version"
MAX_AGE_SECONDS = 60.0


@dataclass(frozen=True)
class _Snapshot:
    version: str
    loaded_at: float
    models: dict[int, ChatModel]  # enabled models of enabled providers, in display order
    allowed_groups: dict[int, frozenset[int]]  # by model id; empty: every member


_snapshot: _Snapshot | None = None
_lock = threading.Lock()


def usable_models(user: Any) -> list[ChatModel]:
    """The models the member may pick, in display order (as ChatModel.objects.usable_by(user))."""
    snapshot = _current()
    limited = any(snapshot.allowed_groups.values())
    member_groups = _group_ids(user) if limited else frozenset()
    return [
        model
        for model in snapshot.models.values()
        if not snapshot.allowed_groups[model.pk] or snapshot.allowed_groups[model.pk] & member_groups
    ]


def usable_model(user: Any, model_id: Any) -> ChatModel | None:
    """One model if the member may use it, else None. Shared between requests: read it, don't change it."""
    snapshot = _current()
    model = snapshot.models.get(model_id) if isinstance(model_id, int) else None
    if model is None:
        return None
    allowed = snapshot.allowed_groups[model.pk]
    if allowed and not allowed & _group_ids(user):
        return None
    return model


def changed(**_signal_arguments: Any) -> None:
    """A model, a provider or a model's groups changed: every process reloads on its next use."""
    global _snapshot
    _snapshot = None
    cache.set(VERSION_KEY, uuid.uuid4().hex, timeout=None)


def _current() -> _Snapshot:
    global _snapshot
    version = _version()
    snapshot = _snapshot
    if _fresh(snapshot, version):
        return snapshot
    with _lock:  # one thread loads; a second one waiting here then takes its result
        snapshot = _snapshot
        if not _fresh(snapshot, version):
            snapshot = _snapshot = _load(version)
    return snapshot


def _fresh(snapshot: _Snapshot | None, version: str) -> bool:
    return (
        snapshot is not None
        and snapshot.version == version
        and time.monotonic() - snapshot.loaded_at < MAX_AGE_SECONDS
    )


def _version() -> str:
    version = cache.get(VERSION_KEY)
    if version is None:  # a cache that was emptied: agree on a new token
        cache.add(VERSION_KEY, uuid.uuid4().hex, timeout=None)
        version = cache.get(VERSION_KEY, "")
    return version


def _load(version: str) -> _Snapshot:
    models = {
        model.pk: model
        for model in ChatModel.objects.filter(enabled=True, provider__enabled=True).select_related("provider")
    }
    allowed: dict[int, set[int]] = {pk: set() for pk in models}
    links = ChatModel.allowed_groups.through.objects.filter(chatmodel_id__in=list(models))
    for model_id, group_id in links.values_list("chatmodel_id", "group_id"):
        allowed[model_id].add(group_id)
    return _Snapshot(
        version=version,
        loaded_at=time.monotonic(),
        models=models,
        allowed_groups={pk: frozenset(groups) for pk, groups in allowed.items()},
    )


def _group_ids(user: Any) -> frozenset[int]:
    return frozenset(Group.objects.filter(user=user).values_list("pk", flat=True))

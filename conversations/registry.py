"""Which upstream providers exist and which of their models the team may pick.

The run command calls register_environment_providers() at every start: OPENAI_BASE_URL configures the
"Environment" provider, otherwise the built-in offline upstream is registered as "Offline demo".
Discovery only ever adds models; an admin's edits to existing ones are kept.
"""

import asyncio
import logging
import re
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import transaction
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from conversations import catalog, offline_upstream, upstream
from conversations.models import ChatModel, Provider

logger = logging.getLogger(__name__)

ENVIRONMENT_PROVIDER = "Environment"
OFFLINE_PROVIDER = "Offline demo"
OFFLINE_LABEL = "offline demo"

# Discovery and connection tests from the admin wait at most this long for a hanging provider.
LIST_TIMEOUT = 30.0

# Substrings and id words that suggest a capability when the provider does not say.
_VISION_HINTS = ("vision", "gpt-4.1", "gemini", "claude")
_VISION_WORDS = {"4o"}
_REASONING_HINTS = ("reasoner",)
_REASONING_WORDS = {"o1", "o3", "o4", "r1"}
# Models that cannot chat: registered disabled so that the picker is not cluttered with them.
_NOT_CHAT_HINTS = ("embed", "whisper", "tts", "dall-e", "moderation", "transcribe", "image", "rerank")


def endpoint_for(provider: Provider) -> upstream.Endpoint:
    """The upstream address and key of a provider (raises InvalidToken if its key cannot be read)."""
    return upstream.Endpoint(base_url=provider.base_url, api_key=provider.api_key)


def default_provider() -> Provider | None:
    """The provider configured by the environment: OPENAI_BASE_URL's, else the offline demo."""
    providers = Provider.objects.filter(enabled=True)
    if settings.OPENAI_BASE_URL:
        return providers.filter(is_environment=True).first()
    return providers.filter(is_offline=True).first()


def guess_capabilities(upstream_id: str) -> dict[str, Any]:
    """Conservative ChatModel fields for a model its provider describes by id alone."""
    lowered = upstream_id.lower()
    words = set(re.split(r"[^a-z0-9]+", lowered))
    chat = not any(hint in lowered for hint in _NOT_CHAT_HINTS)
    return {
        "display_name": upstream_id,
        "supports_vision": chat and (any(h in lowered for h in _VISION_HINTS) or bool(words & _VISION_WORDS)),
        "supports_reasoning": chat
        and (any(h in lowered for h in _REASONING_HINTS) or bool(words & _REASONING_WORDS)),
        "supports_tools": chat,
        "supports_json": chat,
        "enabled": chat,
    }


def capabilities_of(item: dict[str, Any], *, offline: bool = False) -> dict[str, Any]:
    """ChatModel fields from one /models entry: the chatsite extension when present, else a guess."""
    upstream_id = str(item["id"])
    extension = item.get("chatsite")
    if not isinstance(extension, dict):
        fields = guess_capabilities(upstream_id)
    else:
        fields = {
            "display_name": str(extension.get("display_name") or upstream_id),
            "supports_vision": bool(extension.get("vision")),
            "supports_tools": bool(extension.get("tools")),
            "supports_json": bool(extension.get("json")),
            "supports_reasoning": bool(extension.get("reasoning")),
        }
        if isinstance(extension.get("context_window"), int) and extension["context_window"] > 0:
            fields["context_window"] = extension["context_window"]
        if isinstance(extension.get("parameters"), list):
            fields["supported_parameters"] = [str(name) for name in extension["parameters"]]
    if offline and OFFLINE_LABEL not in fields["display_name"].lower():
        fields["display_name"] = f"{fields['display_name']} ({OFFLINE_LABEL})"
    fields["display_name"] = fields["display_name"][:200]
    return fields


def register_models(provider: Provider, items: list[dict[str, Any]]) -> list[ChatModel]:
    """Create the models of a /models list that the provider lacks; existing rows stay as edited."""
    models = []
    for item in items:
        if not isinstance(item, dict) or not item.get("id"):
            continue
        # get_or_create survives a concurrent start creating the same row (unique per provider).
        model, _created = ChatModel.objects.get_or_create(
            provider=provider,
            upstream_id=str(item["id"])[:200],
            defaults=capabilities_of(item, offline=provider.is_offline),
        )
        models.append(model)
    return models


def list_models(provider: Provider) -> list[dict[str, Any]]:
    """The provider's /models list, from sync code (raises upstream.UpstreamError)."""
    endpoint = endpoint_for(provider)

    async def fetch() -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(LIST_TIMEOUT):
                return await upstream.list_models(endpoint)
        except TimeoutError:
            raise upstream.UpstreamError("total_timeout") from None
        finally:
            await upstream.close_client()

    # A loop of its own, unlike async_to_sync, which would borrow the server's loop: the pooled client
    # of a private loop can be closed here without cutting the replies streaming on the server's.
    return asyncio.run(fetch())


def discover_models(provider: Provider) -> list[ChatModel]:
    """Ask the provider for its models and register the new ones (raises upstream.UpstreamError)."""
    items = list_models(provider)
    return register_models(provider, items)


def test_connection(provider: Provider) -> tuple[bool, str]:
    """List the provider's models; say how many, or why that failed, in words for the admin."""
    try:
        items = list_models(provider)
    except upstream.UpstreamError as error:
        return False, error.user_message()
    except InvalidToken:
        return False, _(
            "The stored API key cannot be decrypted (was ENCRYPTION_KEY changed?). Enter it again."
        )
    count = len(items)
    return True, ngettext(
        "Connected: %(count)d model available.", "Connected: %(count)d models available.", count
    ) % {"count": count}


def register_environment_providers() -> None:
    """Make the provider the environment names exist, with its models; safe at every start."""
    if settings.OPENAI_BASE_URL:
        provider = _save_provider(
            ENVIRONMENT_PROVIDER,
            flag="is_environment",
            base_url=settings.OPENAI_BASE_URL,
            api_key=settings.OPENAI_API_KEY,
        )
        # The offline upstream is only served when OPENAI_BASE_URL is unset.
        Provider.objects.filter(is_offline=True).update(enabled=False)
        catalog.changed()  # update() sends no signal
        try:
            discover_models(provider)
        except (upstream.UpstreamError, InvalidToken) as error:
            logger.warning("Could not list the models of %s: %s", provider.name, _describe(error))
        return

    provider = _save_provider(OFFLINE_PROVIDER, flag="is_offline", base_url=settings.OFFLINE_UPSTREAM_URL)
    try:
        discover_models(provider)
    except upstream.UpstreamError as error:
        logger.info("Offline upstream not reachable yet (%s); registering its known models.", error.code)
        # The same list it serves: a start does not depend on the offline upstream listening already.
        register_models(provider, offline_upstream.models_list()["data"])


def _save_provider(name: str, *, flag: str, base_url: str, api_key: str | None = None) -> Provider:
    """Create or update the provider marked by flag; found by the flag, so an admin may rename it."""
    with transaction.atomic():
        # update_or_create locks the row; a concurrent first start that loses the insert race (the name
        # is unique) re-reads the winner's row.
        provider, _created = Provider.objects.update_or_create(
            **{flag: True},
            defaults={"base_url": base_url, "enabled": True},
            create_defaults={"name": name, "base_url": base_url, "enabled": True},
        )
        if api_key is not None and _stored_key(provider) != api_key:
            provider.set_api_key(api_key)
            provider.save(update_fields=["api_key_encrypted"])
    return provider


def _stored_key(provider: Provider) -> str | None:
    try:
        return provider.api_key
    except InvalidToken:
        return None


def _describe(error: Exception) -> str:
    if isinstance(error, upstream.UpstreamError):
        return f"{error.code} {error.status or ''}".strip()
    return "stored API key unreadable"

"""The only writer of usage rows: one UsageRecord per upstream request, started before the call and
finished exactly once, whatever ended the request."""

import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.utils import timezone

from conversations import budgets
from conversations.models import ChatModel, UsageRecord

MILLION = Decimal(1_000_000)


@dataclass
class Tokens:
    prompt: int = 0
    cached: int = 0
    completion: int = 0
    reasoning: int = 0
    estimated: bool = False

    @classmethod
    def from_upstream(cls, usage: dict[str, Any]) -> "Tokens":
        """Read an OpenAI usage object; providers differ in which details they send."""
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt=int(usage.get("prompt_tokens") or 0),
            cached=int(prompt_details.get("cached_tokens") or 0),
            completion=int(usage.get("completion_tokens") or 0),
            reasoning=int(completion_details.get("reasoning_tokens") or 0),
        )

    @classmethod
    def estimate(cls, model: ChatModel | None, prompt_chars: int, completion_chars: int) -> "Tokens":
        """When the upstream reported nothing: the model's calibrated characters-to-tokens ratio."""
        ratio = model.tokens_per_char if model else 0.3
        return cls(
            prompt=math.ceil(prompt_chars * ratio),
            completion=math.ceil(completion_chars * ratio),
            estimated=True,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt,
            "cached_tokens": self.cached,
            "completion_tokens": self.completion,
            "reasoning_tokens": self.reasoning,
        }


def start(*, user_id: int | None, model: ChatModel, source: str, **links: Any) -> UsageRecord:
    """Create the record before the call; its request_id goes upstream as X-Request-ID."""
    return UsageRecord.objects.create(
        user_id=user_id,
        provider_id=model.provider_id,
        model=model,
        model_name=model.upstream_id,
        source=source,
        input_price=model.input_price,
        cached_input_price=model.cached_input_price,
        output_price=model.output_price,
        **links,
    )


def cost_of(record: UsageRecord, tokens: Tokens) -> Decimal:
    uncached = max(tokens.prompt - tokens.cached, 0)
    return (
        uncached * record.input_price
        + tokens.cached * record.cached_input_price
        + tokens.completion * record.output_price
    ) / MILLION


def finish(
    record: UsageRecord,
    *,
    status: str,
    tokens: Tokens,
    time_to_first_token_ms: int | None,
    duration_ms: int,
    error_code: str = "",
) -> bool:
    """Finish the record once. A conditional UPDATE, so a second finisher (the sweeper after a crash,
    say) changes nothing; returns whether this call was the one."""
    cost = cost_of(record, tokens)
    changed = UsageRecord.objects.filter(pk=record.pk, status=UsageRecord.Status.STARTED).update(
        status=status,
        error_code=error_code,
        prompt_tokens=tokens.prompt,
        cached_tokens=tokens.cached,
        completion_tokens=tokens.completion,
        reasoning_tokens=tokens.reasoning,
        estimated=tokens.estimated,
        cost=cost,
        time_to_first_token_ms=time_to_first_token_ms,
        duration_ms=duration_ms,
        finished_at=timezone.now(),
    )
    if changed:
        budgets.settle(record, tokens.prompt + tokens.completion, cost)
    return changed == 1

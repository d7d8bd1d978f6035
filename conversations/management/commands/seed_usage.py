"""Fill the database with made-up usage records, for the statistics pages' benchmark (bench/usage.py)
and for trying those pages out. Never run it on a team's real database: the rows look real."""

import random
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from conversations.models import ChatModel, Conversation, Provider, UsageRecord

MILLION = Decimal(1_000_000)
GROUPS = 5
CONVERSATIONS_PER_USER = 5
# How often each source occurs, and each ending: mostly chats that complete.
SOURCES = (
    [UsageRecord.Source.CHAT] * 85
    + [UsageRecord.Source.TITLE] * 8
    + [UsageRecord.Source.TOOL_STEP] * 5
    + [UsageRecord.Source.API] * 2
)
STATUSES = (
    [UsageRecord.Status.COMPLETE] * 95 + [UsageRecord.Status.ERROR] * 3 + [UsageRecord.Status.CANCELLED] * 2
)


class Command(BaseCommand):
    help = "Seed N made-up usage records spread over the last D days, U members and M models."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--records", type=int, default=10_000)
        parser.add_argument("--days", type=int, default=90)
        parser.add_argument("--users", type=int, default=20)
        parser.add_argument("--models", type=int, default=5)
        parser.add_argument("--batch", type=int, default=5_000, help="rows per INSERT (default: %(default)s)")
        parser.add_argument("--seed", type=int, default=1, help="random seed, for repeatable data")

    def handle(
        self, *args: Any, records: int, days: int, users: int, models: int, batch: int, **options: Any
    ) -> None:
        rng = random.Random(options["seed"])
        members = self.members(users)
        chat_models = self.chat_models(models)
        conversations = self.conversations(members, chat_models[0])
        now = timezone.now()
        span = days * 86_400
        made = 0
        while made < records:
            size = min(batch, records - made)
            rows = [self.record(rng, now, span, members, chat_models, conversations) for _ in range(size)]
            # One transaction per batch: a long run shows progress and keeps no huge transaction open.
            with transaction.atomic():
                UsageRecord.objects.bulk_create(rows)
            made += size
            if made % (batch * 20) == 0 or made == records:
                self.stdout.write(f"{made:,} usage records")

    def members(self, count: int) -> list[Any]:
        """usage-member-001 … with unusable passwords, spread over a few groups."""
        User = get_user_model()
        groups = [Group.objects.get_or_create(name=f"Seed team {index + 1}")[0] for index in range(GROUPS)]
        members = []
        for index in range(count):
            member, created = User.objects.get_or_create(username=f"usage-member-{index + 1:03d}")
            if created:
                member.set_unusable_password()
                member.save(update_fields=["password"])
                member.groups.add(groups[index % GROUPS])
            members.append(member)
        return members

    def chat_models(self, count: int) -> list[ChatModel]:
        provider, _ = Provider.objects.get_or_create(
            name="Seed provider", defaults={"base_url": "http://127.0.0.1:9/v1"}
        )
        found = []
        for index in range(count):
            model, _ = ChatModel.objects.get_or_create(
                provider=provider,
                upstream_id=f"seed-model-{index + 1:02d}",
                defaults={
                    "display_name": f"Seed model {index + 1:02d}",
                    "input_price": Decimal(index % 5 + 1) / 2,
                    "cached_input_price": Decimal(index % 5 + 1) / 8,
                    "output_price": Decimal(index % 5 + 1) * 2,
                    "enabled": False,  # never offered in the chat: nothing answers at this provider
                },
            )
            found.append(model)
        return found

    def conversations(self, members: list[Any], model: ChatModel) -> dict[int, list[int]]:
        """A few conversations per member, so that drilling down shows titles."""
        have = {
            member.pk: list(Conversation.objects.filter(owner=member).values_list("pk", flat=True)[:5])
            for member in members
        }
        missing = [
            Conversation(
                owner=member, model=model, title=f"Seeded conversation {number + 1} of {member.username}"
            )
            for member in members
            if not have[member.pk]
            for number in range(CONVERSATIONS_PER_USER)
        ]
        if missing:
            Conversation.objects.bulk_create(missing, batch_size=1_000)
            return self.conversations(members, model)
        return have

    def record(
        self,
        rng: random.Random,
        now: Any,
        span: int,
        members: list[Any],
        chat_models: list[ChatModel],
        conversations: dict[int, list[int]],
    ) -> UsageRecord:
        member = rng.choice(members)
        model = rng.choice(chat_models)
        source = rng.choice(SOURCES)
        status = rng.choice(STATUSES)
        started = now - timedelta(seconds=rng.random() * span)
        prompt = rng.randint(50, 4_000)
        cached = rng.choice((0, 0, prompt // 2))
        completion = 0 if status == UsageRecord.Status.ERROR else rng.randint(10, 1_500)
        reasoning = completion // 3 if model.pk % 3 == 0 else 0
        ttft = None if status == UsageRecord.Status.ERROR else int(rng.lognormvariate(6.2, 0.5))
        duration = int((ttft or 100) + completion * rng.uniform(5, 25))
        cost = (
            (prompt - cached) * model.input_price
            + cached * model.cached_input_price
            + completion * model.output_price
        ) / MILLION
        return UsageRecord(
            request_id=uuid.uuid4(),
            user_id=member.pk,
            conversation_id=rng.choice(conversations[member.pk])
            if source == UsageRecord.Source.CHAT
            else None,
            provider_id=model.provider_id,
            model_id=model.pk,
            model_name=model.upstream_id,
            source=source,
            status=status,
            error_code="upstream_error" if status == UsageRecord.Status.ERROR else "",
            prompt_tokens=prompt,
            cached_tokens=cached,
            completion_tokens=completion,
            reasoning_tokens=reasoning,
            input_price=model.input_price,
            cached_input_price=model.cached_input_price,
            output_price=model.output_price,
            cost=cost.quantize(Decimal("0.00000001")),
            time_to_first_token_ms=ttft,
            duration_ms=duration,
            started_at=started,
            finished_at=started + timedelta(milliseconds=duration),
        )

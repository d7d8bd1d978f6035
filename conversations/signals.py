"""Receivers that keep derived state in step: member sessions, profiles, stored files, the model
catalog."""

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in
from django.db.models.signals import m2m_changed, post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest

from conversations import budgets, catalog
from conversations.models import Attachment, ChatModel, Limit, MemberSession, Profile, Provider

User = get_user_model()


@receiver(user_logged_in)
def remember_session(sender: Any, request: HttpRequest, user: Any, **kwargs: Any) -> None:
    if request.session.session_key:
        MemberSession.objects.update_or_create(
            session_key=request.session.session_key, defaults={"user": user}
        )


@receiver(post_save, sender=User)
def create_profile(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
    if created:
        Profile.objects.get_or_create(user=instance)


@receiver(post_save, sender=User)
def end_sessions_of_inactive_member(sender: Any, instance: Any, **kwargs: Any) -> None:
    if not instance.is_active:
        from conversations.accounts import end_sessions

        end_sessions(instance)


@receiver(post_delete, sender=Attachment)
def delete_attachment_file(sender: Any, instance: Attachment, **kwargs: Any) -> None:
    instance.file.delete(save=False)


for model in (ChatModel, Provider):
    post_save.connect(catalog.changed, sender=model, dispatch_uid=f"catalog-save-{model.__name__}")
    post_delete.connect(catalog.changed, sender=model, dispatch_uid=f"catalog-delete-{model.__name__}")
m2m_changed.connect(catalog.changed, sender=ChatModel.allowed_groups.through, dispatch_uid="catalog-groups")
post_save.connect(budgets.changed, sender=Limit, dispatch_uid="limits-save")
post_delete.connect(budgets.changed, sender=Limit, dispatch_uid="limits-delete")

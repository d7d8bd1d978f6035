"""The admin of assistants, the team's shared presets: parameters and tools are checked as in the chat."""

from typing import Any

from django import forms
from django.contrib import admin
from django.utils import timezone

from conversations import parameters
from conversations.models import Assistant


class AssistantForm(forms.ModelForm):
    class Meta:
        model = Assistant
        fields = ["name", "description", "system_prompt", "model", "parameters", "tools", "created_by"]

    def clean_tools(self) -> list[str]:
        try:
            return parameters.validate_tools(self.cleaned_data["tools"] or [])
        except parameters.ParameterError as error:
            raise forms.ValidationError(error.detail) from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if "tools" in cleaned and "parameters" in cleaned:
            try:
                cleaned["parameters"] = parameters.validate(cleaned["parameters"] or {}, cleaned["tools"])
            except parameters.ParameterError as error:
                self.add_error("parameters", error.detail)
        return cleaned


@admin.register(Assistant)
class AssistantAdmin(admin.ModelAdmin):
    form = AssistantForm
    list_display = ["name", "model", "created_by", "updated_at"]
    search_fields = ["name", "description"]
    list_select_related = ["model", "created_by"]

    def save_model(self, request: Any, obj: Assistant, form: Any, change: bool) -> None:
        if not change and obj.created_by_id is None:
            obj.created_by = request.user
        obj.updated_at = timezone.now()
        super().save_model(request, obj, form, change)

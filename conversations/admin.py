"""The admin: accounts (invites, reset links) and the provider registry live in their own modules."""

from django.contrib import admin

from conversations import (  # noqa: F401  (registers the ModelAdmins)
    admin_accounts,
    admin_assistants,
    admin_budgets,
    admin_registry,
    admin_sharing,
    admin_tools,
)

admin.site.site_header = admin.site.site_title = "chatsite"

"""The admin: accounts (invites, reset links) and the provider registry live in their own modules."""

from django.contrib import admin

from conversations import admin_accounts, admin_registry  # noqa: F401  (registers the ModelAdmins)

admin.site.site_header = admin.site.site_title = "chatsite"

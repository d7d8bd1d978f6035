from django.urls import path

from conversations import (
    account_views,
    assistant_views,
    attachment_views,
    folder_views,
    health,
    share_views,
    statistics_pages,
    transfer_views,
    views,
)

urlpatterns = [
    # The chat
    path("", views.chat, name="chat"),
    path("c/<uuid:public_id>/", views.conversation, name="conversation"),
    path("api/conversations/", views.conversation_list, name="conversation_list"),
    path("api/conversations/<uuid:public_id>/", views.conversation_detail, name="conversation_detail"),
    path(
        "api/conversations/<uuid:public_id>/restore/", views.conversation_restore, name="conversation_restore"
    ),
    path("api/assistants/", assistant_views.assistant_list, name="assistant_list"),
    path("api/assistants/<int:assistant_id>/", assistant_views.assistant_detail, name="assistant_detail"),
    path("api/folders/", folder_views.folder_list, name="folder_list"),
    path("api/folders/<int:folder_id>/", folder_views.folder_detail, name="folder_detail"),
    path("api/conversations/import/", transfer_views.import_conversations, name="conversation_import"),
    path("api/conversations/<uuid:public_id>/export/", transfer_views.export, name="conversation_export"),
    path("api/attachments/", attachment_views.upload, name="attachment_upload"),
    path("attachments/<uuid:public_id>/", attachment_views.serve, name="attachment"),
    # Share links
    path(
        "api/conversations/<uuid:public_id>/shares/",
        share_views.conversation_shares,
        name="conversation_shares",
    ),
    path("api/shares/", share_views.share_list, name="share_list"),
    path("api/shares/<int:link_id>/", share_views.share_detail, name="share_detail"),
    path("api/shares/<int:link_id>/snapshot/", share_views.share_snapshot, name="share_snapshot"),
    path("s/<str:token>/", share_views.shared_page, name="shared_page"),
    path(
        "s/<str:token>/attachments/<uuid:public_id>/",
        share_views.shared_attachment,
        name="shared_attachment",
    ),
    path("s/<str:token>/continue/", share_views.continue_shared, name="continue_shared"),
    # Accounts
    path("login/", account_views.login, name="login"),
    path("logout/", account_views.logout, name="logout"),
    path("setup/<str:token>/", account_views.setup, name="setup"),
    path("invite/<str:token>/", account_views.accept_invite, name="accept_invite"),
    path("reset/<str:token>/", account_views.reset_password, name="reset_password"),
    path("account/", account_views.account_settings, name="account_settings"),
    path("account/password/", account_views.change_password, name="change_password"),
    path("account/theme/", account_views.choose_theme, name="account_theme"),
    path("account/usage/", statistics_pages.my_usage, name="my_usage"),
    path("account/shares/", share_views.my_shares, name="my_shares"),
    path("account/shares/<int:link_id>/revoke/", share_views.revoke_mine, name="revoke_share"),
    # Operations
    path("health/", health.health, name="health"),
]

"""Trigram indexes for the sidebar search (conversations/search.py), on PostgreSQL only.

search.matching() filters with icontains, which Django writes on PostgreSQL as
UPPER(column::text) LIKE UPPER(pattern): GIN indexes over that very expression with gin_trgm_ops let
a LIKE '%...%' of three characters or more use them. They are not declared in the models' Meta, where
SQLite would have to build them too; SQLite has no trigram index, and nothing is done there.
"""

from django.db import migrations

# index name -> (model, column)
INDEXES = {
    "conversation_title_trgm": ("Conversation", "title"),
    "message_text_trgm": ("Message", "text"),
}


def create_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # pg_trgm is a trusted extension (PostgreSQL 13+): the database's owner may create it.
    schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    quote = schema_editor.quote_name
    for name, (model, column) in INDEXES.items():
        table = apps.get_model("conversations", model)._meta.db_table
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(name)} ON {quote(table)} "
            f"USING gin ((UPPER({quote(column)}::text)) gin_trgm_ops)"
        )


def drop_trigram_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    # The extension stays: something else in the database may use it.
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {schema_editor.quote_name(name)}")


class Migration(migrations.Migration):
    dependencies = [
        ("conversations", "0001_initial"),
    ]

    operations = [
        migrations.RunPython(create_trigram_indexes, drop_trigram_indexes, elidable=False),
    ]

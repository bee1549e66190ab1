"""An index for the case-insensitive username lookups every guest post makes (a guest may not
take a registered username as display name): without it PostgreSQL scans every user per post.

PostgreSQL only: Django's `iexact` there is `UPPER("username"::text) = UPPER(%s)`, which this
expression index serves. (SQLite's `LIKE` cannot use an ordinary index.)
"""
from django.db import migrations

INDEX = "accounts_user_username_upper"


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f'CREATE INDEX IF NOT EXISTS {INDEX} ON auth_user (UPPER("username"::text))')


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [("auth", "0012_alter_user_first_name_max_length")]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]

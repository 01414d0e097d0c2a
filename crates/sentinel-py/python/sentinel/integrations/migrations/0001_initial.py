"""Creates (or upgrades) Sentinel's schema with Sentinel's own migrations: idempotent, and safe
when several processes migrate at once."""

from django.db import migrations


def forward(apps, schema_editor):
    import sentinel
    from sentinel.integrations.django import database_url, schema

    sentinel.init_db(database_url(schema_editor.connection.alias), schema=schema())


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]

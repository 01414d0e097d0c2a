"""Creates (or upgrades) Sentinel's schema with Sentinel's own migrations: idempotent, and safe
when several processes migrate at once."""

from django.db import migrations


def forward(apps, schema_editor):
    import sentinel
    from django.conf import settings
    from sentinel.integrations.django import database_url, schema

    # The original package's Django app kept its records in sentinel_leases: they are not read
    # here, so their completed keys would run again. Refuse until someone has reviewed them.
    ignore = (getattr(settings, "SENTINEL", None) or {}).get("IGNORE_ORIGINAL_RECORDS", False)
    if not ignore:
        with schema_editor.connection.cursor() as cur:
            cur.execute("SELECT to_regclass('sentinel_leases') IS NOT NULL")
            if cur.fetchone()[0]:
                cur.execute("SELECT count(*) FROM sentinel_leases")
                n = cur.fetchone()[0]
                if n:
                    from sentinel._engine import original_records_found

                    raise original_records_found(
                        n, "set SENTINEL = {'IGNORE_ORIGINAL_RECORDS': True}"
                    )
    sentinel.init_db(database_url(schema_editor.connection.alias), schema=schema())


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []
    operations = [migrations.RunPython(forward, migrations.RunPython.noop)]

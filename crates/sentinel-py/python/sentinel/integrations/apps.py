"""The Django app: ``INSTALLED_APPS += ["sentinel.integrations"]``; ``manage.py migrate`` then
creates Sentinel's schema."""

from django.apps import AppConfig


class SentinelConfig(AppConfig):
    """Sentinel's app: a migration that runs Sentinel's own migrations, and ``manage.py
    sentinel``."""

    name = "sentinel.integrations"
    label = "sentinel"
    verbose_name = "Sentinel"
    default = True

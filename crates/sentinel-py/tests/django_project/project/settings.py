"""Settings of the test project: PostgreSQL from SENTINEL_TEST_DATABASE_URL's server, database
SENTINEL_DJANGO_DB (each test creates its own)."""
import os
from urllib.parse import urlparse

_url = urlparse(os.environ.get("SENTINEL_TEST_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test"))

SECRET_KEY = "test-only"
INSTALLED_APPS = ["django.contrib.contenttypes", "sentinel.integrations"]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ["SENTINEL_DJANGO_DB"],
        "USER": _url.username or "postgres",
        "PASSWORD": _url.password or "",
        # SENTINEL_DJANGO_HOST="" (a test sets it) is libpq's default: the Unix socket.
        "HOST": os.environ.get("SENTINEL_DJANGO_HOST", _url.hostname or "127.0.0.1"),
        "PORT": _url.port or 5432,
    }
}
USE_TZ = True
# The URLconf imports project.tasks, whose module-level DjangoSentinel must not touch the
# database at import (manage.py migrate imports it through the system checks).
ROOT_URLCONF = "project.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

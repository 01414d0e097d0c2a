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
        "HOST": _url.hostname or "127.0.0.1",
        "PORT": _url.port or 5432,
    }
}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

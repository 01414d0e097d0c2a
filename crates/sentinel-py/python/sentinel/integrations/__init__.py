"""Integrations: ``sentinel.integrations.django`` (and this package is the Django app to put in
``INSTALLED_APPS``)."""

"""No routes: it imports the tasks module, as a project's views would."""
from . import tasks  # noqa: F401

urlpatterns: list = []

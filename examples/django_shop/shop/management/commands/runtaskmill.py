"""``manage.py runtaskmill``: the executor, queue populator, failure watcher and
recurrence manager, as ``taskmill run`` (without its REST API); Ctrl-C or SIGTERM stops
it, running jobs get their grace period."""

from typing import Any

from django.core.management.base import BaseCommand

from shop.tasks import app


class Command(BaseCommand):
    help = "Run taskmill's executor and scheduler for this project"

    def handle(self, *args: Any, **options: Any) -> None:
        app.run()

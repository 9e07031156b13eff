"""The shop's taskmill app and its tasks. ``taskmill run --app shop.tasks:app`` (from
examples/django_shop, with ``DJANGO_SETTINGS_MODULE=shop.settings``) runs it as
``manage.py runtaskmill`` does."""

import os
from typing import Any

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
django.setup()  # the ORM, for handlers run by `taskmill run` (no-op under manage.py)

from django.conf import settings  # noqa: E402  # after setup

from taskmill import TaskContext, Taskmill  # noqa: E402

app = Taskmill(database_url=settings.TASKMILL_DATABASE_URL)


@app.task("send_receipt", max_retries=3, timeout=30)
def send_receipt(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """A sync handler (taskmill runs it in a thread): Django's ORM is synchronous."""
    from shop.models import Order

    updated = Order.objects.filter(id=payload["order_id"]).update(receipt_sent=True)
    ctx.logger.info("receipt for order %s", payload["order_id"])
    return {"order_id": payload["order_id"], "updated": updated}

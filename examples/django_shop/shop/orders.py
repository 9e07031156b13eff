"""Placing an order: the row in Django's transaction, the receipt job after its commit.

Django's ORM is not SQLAlchemy, so the job cannot be written in Django's transaction
(``schedule(connection=...)`` is for SQLAlchemy): it is scheduled from
``transaction.on_commit``, so a rolled-back order never sends a receipt. A process that
dies between the commit and the schedule loses the job: the ``unique_key`` makes a
sweep that schedules receipts for orders without one safe to run at any time.
"""

from django.db import transaction

from shop.bridge import call
from shop.models import Order
from shop.tasks import app
from taskmill import Job


def place_order(item: str, email: str) -> Order:
    with transaction.atomic():
        order = Order.objects.create(item=item, email=email)
        transaction.on_commit(lambda: schedule_receipt(order.id))
    return order


def schedule_receipt(order_id: int) -> Job:
    """Schedule the order's receipt (its unscheduled or unfinished one: the same job)."""
    job = call(
        app.schedule("send_receipt", {"order_id": order_id}, unique_key=f"receipt-{order_id}")
    )
    assert isinstance(job, Job)
    Order.objects.filter(id=order_id).update(receipt_job_id=job.id)
    return job

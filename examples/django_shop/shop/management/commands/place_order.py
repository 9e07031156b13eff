"""``manage.py place_order ITEM EMAIL [--wait N]``: place an order (its receipt job is
scheduled at the commit) and, with ``--wait``, print the receipt job once it finished."""

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from shop.bridge import call
from shop.orders import place_order
from shop.tasks import app


class Command(BaseCommand):
    help = "Place an order; its receipt is sent by the taskmill executor"

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("item")
        parser.add_argument("email")
        parser.add_argument("--wait", type=float, default=0, help="seconds, 0-300")

    def handle(self, *args: Any, **options: Any) -> None:
        if not 0 <= options["wait"] <= 300:
            raise CommandError("--wait: must be 0-300 seconds")
        order = place_order(options["item"], options["email"])
        order.refresh_from_db()
        job = call(app.get(order.receipt_job_id))
        if options["wait"]:
            try:
                job = call(app.wait(job.id, timeout=options["wait"]), options["wait"] + 10)
            except TimeoutError as exc:
                raise CommandError(f"the receipt did not finish: {exc}") from None
            order.refresh_from_db()
        out = {
            "order_id": order.id,
            "receipt_status": job.status.value,
            "receipt_result": job.result,
            "receipt_sent": order.receipt_sent,
        }
        self.stdout.write(json.dumps(out))
        call(app.stop())

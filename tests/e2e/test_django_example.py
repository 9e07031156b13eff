"""The Django example (examples/django_shop): its settings, ``manage.py runtaskmill``
running the executor, an order placed with ``manage.py place_order`` and through the
views, each receipt job run and its result read with a wait."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli import ROOT

pytestmark = pytest.mark.parallel  # no timing bounds: runs in the parallel step

SHOP = ROOT / "examples" / "django_shop"

# Run in the shop's manage.py shell: the views through Django's test client.
VIEWS = """
import json
from django.test import Client
c = Client()
placed = c.post("/orders", {"item": "pen", "email": "b@x.io"}, content_type="application/json")
order = placed.json()["order_id"]
done = c.get(f"/orders/{order}/receipt", {"wait": "30"})
print(json.dumps({
    "placed": placed.status_code,
    "receipt": done.json(),
    "bad_item": c.post("/orders", {"item": "", "email": "b@x.io"},
                       content_type="application/json").status_code,
    "long_wait": c.get(f"/orders/{order}/receipt", {"wait": "31"}).status_code,
    "missing": c.get("/orders/999/receipt").status_code,
}))
from shop.bridge import call
from shop.tasks import app
call(app.stop())
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKMILL_")}
    env.pop("DATABASE_URL", None)
    env["SHOP_DATABASE"] = str(tmp_path / "shop.db")
    env["TASKMILL_API__SECRET_KEY_FILE"] = str(tmp_path / "secret")
    env["TASKMILL_SCHEDULER__WAIT_POLL_SECONDS"] = "0.2"  # another process finishes them
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=SHOP,
        env=env,
        capture_output=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    return done.stdout.decode()


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A migrated shop database and ``manage.py runtaskmill`` running on it."""
    env = _env(tmp_path)
    _manage(env, "migrate", "-v0")
    with (tmp_path / "runtaskmill.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "runtaskmill"],
            cwd=SHOP,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield env
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0, (tmp_path / "runtaskmill.log").read_text()


def test_django_shop_sends_receipts_through_runtaskmill(executor: dict[str, str]) -> None:
    placed = json.loads(_manage(executor, "place_order", "book", "a@x.io", "--wait", "60"))
    assert placed == {
        "order_id": 1,
        "receipt_status": "succeeded",
        "receipt_result": {"order_id": 1, "updated": 1},
        "receipt_sent": True,
    }
    views = json.loads(_manage(executor, "shell", "-c", VIEWS).strip().splitlines()[-1])
    assert views == {
        "placed": 201,
        "receipt": {"status": "succeeded", "result": {"order_id": 2, "updated": 1}},
        "bad_item": 422,
        "long_wait": 422,
        "missing": 404,
    }

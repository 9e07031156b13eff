"""The FastAPI lifespan helper and the how-to's shop (examples/fastapi_orders.py): an
order row and its email job in one transaction, the job run by the executor the
lifespan started, its result read with a wait."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from examples.fastapi_orders import make_api
from fastapi import Depends, FastAPI
from sqlalchemy import text

from taskmill import Taskmill
from taskmill.integrations.fastapi import lifespan, taskmill


async def test_an_order_and_its_email_commit_together_and_the_email_is_sent(
    tmp_path: Path,
) -> None:
    api = make_api(str(tmp_path / "shop.db"))
    async with api.router.lifespan_context(api):
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            placed = await client.post("/orders", params={"item": "book", "email": "a@x.io"})
            assert placed.status_code == 201, placed.text
            order_id = placed.json()["order_id"]
            status = await client.get(f"/orders/{order_id}/email", params={"wait": 20})
            assert status.json() == {"status": "succeeded", "result": {"sent_to": "a@x.io"}}
            missing = await client.get("/orders/999/email")
            assert missing.status_code == 404
            too_long = await client.get(f"/orders/{order_id}/email", params={"wait": 31})
            assert too_long.status_code == 422


async def test_a_failed_order_transaction_leaves_no_email_job(tmp_path: Path) -> None:
    api = make_api(str(tmp_path / "shop.db"), run_services=False)
    async with api.router.lifespan_context(api):
        tm: Taskmill = api.state.taskmill
        engine = api.state.engine
        with pytest.raises(RuntimeError, match="payment declined"):
            async with engine.begin() as conn:
                await conn.execute(
                    text("INSERT INTO orders (item, email, email_job_id) VALUES ('x', 'y', '')")
                )
                await tm.schedule("send_confirmation", {"order_id": 1}, connection=conn)
                raise RuntimeError("payment declined")
        assert await tm.list() == []
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM orders"))).scalar_one() == 0


async def test_the_dependency_without_the_lifespan_says_so() -> None:
    api = FastAPI()

    @api.get("/")
    async def root(tm: Taskmill = Depends(taskmill)) -> str:  # noqa: B008
        return "unreachable"

    transport = httpx.ASGITransport(app=api, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://x") as client:
        with pytest.raises(RuntimeError, match="lifespan"):
            await client.get("/")


async def test_the_lifespan_closes_taskmill_at_shutdown(sqlite_url: str) -> None:
    tm = Taskmill(database_url=sqlite_url)
    api = FastAPI(lifespan=lifespan(tm))
    async with api.router.lifespan_context(api):
        assert api.state.taskmill is tm and tm._opened
    assert not tm._opened

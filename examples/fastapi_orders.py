"""An order and its confirmation email in one transaction (docs/howto/producers.md).

Run it embedded (the API, the executor and the scheduler in one process, one SQLite
file for the shop's rows and taskmill's)::

    uvicorn examples.fastapi_orders:api

then ``curl -X POST 'localhost:8000/orders?item=book&email=a@example.com'`` and
``curl 'localhost:8000/orders/1/email?wait=10'``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from taskmill import Job, NotFound, TaskContext, Taskmill
from taskmill.integrations.fastapi import lifespan, taskmill

metadata = MetaData()
orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("item", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("email_job_id", String(36), nullable=False),
)


def make_api(database_file: str, *, run_services: bool = True) -> FastAPI:
    """The shop: ``database_file`` holds its ``orders`` and taskmill's tables."""
    tm = Taskmill(database_url=f"sqlite:///{database_file}")
    # The shop's own engine on the same file. A 30 s busy timeout, as taskmill's: the
    # caller's transaction is the write, and writers queue on SQLite's one lock.
    engine = create_async_engine(
        f"sqlite+aiosqlite:///{database_file}", connect_args={"timeout": 30}
    )

    @tm.task("send_confirmation", max_retries=3, timeout=30)
    async def send_confirmation(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        ctx.logger.info("emailing %s about order %s", payload["email"], payload["order_id"])
        return {"sent_to": payload["email"]}

    @asynccontextmanager
    async def startup(api: FastAPI) -> AsyncIterator[None]:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.create_all)
        async with lifespan(tm, run_services=run_services)(api):
            yield
        await engine.dispose()

    api = FastAPI(lifespan=startup)
    api.state.engine = engine

    @api.post("/orders", status_code=201)
    async def place_order(
        item: Annotated[str, Query(min_length=1, max_length=200)],
        email: Annotated[str, Query(min_length=3, max_length=320)],
        tm: Annotated[Taskmill, Depends(taskmill)],
    ) -> dict[str, Any]:
        return await _place(engine, tm, item, email)

    @api.get("/orders/{order_id}/email")
    async def email_status(
        order_id: int,
        tm: Annotated[Taskmill, Depends(taskmill)],
        wait: Annotated[float, Query(ge=0, le=30)] = 0,
    ) -> dict[str, Any]:
        async with engine.connect() as conn:
            row = (await conn.execute(select(orders).where(orders.c.id == order_id))).first()
        if row is None:
            raise HTTPException(404, "no such order")
        try:
            job = await tm.wait(row.email_job_id, timeout=wait)
        except TimeoutError:
            found = await tm.get(row.email_job_id)
            assert isinstance(found, Job)
            job = found
        except NotFound:
            raise HTTPException(404, "no such email job") from None
        return {"status": job.status.value, "result": job.result}

    return api


async def _place(engine: AsyncEngine, tm: Taskmill, item: str, email: str) -> dict[str, Any]:
    """The order's row and its email job commit together, or neither does."""
    async with engine.begin() as conn:
        # Writing first takes SQLite's write lock at once (a read first could not
        # upgrade later if another writer came in between).
        inserted = await conn.execute(
            orders.insert().values(item=item, email=email, email_job_id="")
        )
        order_id = inserted.inserted_primary_key[0]  # type: ignore[index]  # one row
        job = await tm.schedule(
            "send_confirmation",
            {"order_id": order_id, "email": email},
            connection=conn,
            unique_key=f"order-{order_id}-confirmation",
        )
        assert isinstance(job, Job)
        await conn.execute(
            orders.update().where(orders.c.id == order_id).values(email_job_id=job.id)
        )
    return {"order_id": order_id, "email_job_id": job.id}


api = make_api(os.environ.get("SHOP_DATABASE", "shop.db"))

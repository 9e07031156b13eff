"""The monitoring UI in a real browser (Debian's Chromium, driven by Playwright) against a
real ``taskmill run``: every page with data, filters, a job's timeline, a template
switch, a cancel, and a bad key. Screenshots go to ``test-artifacts/ui/``."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Route,
    ViewportSize,
    expect,
    sync_playwright,
)

from taskmill.store.database import Database
from taskmill.store.jobs import NewJob, create_job
from tests import backends
from tests.e2e.test_cli import ROOT, _env, _taskmill, free_port, running

# No timing bounds: scripts/test.sh runs this module in a process of its own beside the
# parallel step; the assertions wait up to 15 s, as a loaded machine may need.
pytestmark = pytest.mark.parallel
expect.set_options(timeout=15_000)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = ROOT / "test-artifacts" / "ui"
FAILURES = SHOTS / "failures"
QUICK_JOBS = 30  # more than one 25-row page


@dataclass
class Server:
    """A running ``taskmill run`` with seeded data, and its admin key."""

    url: str
    key: str
    log: Path
    effects: Path
    database_url: str = ""
    ids: dict[str, str] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"x-api-key": self.key}, timeout=10)

    def job(self, body: dict[str, Any]) -> str:
        with self.client() as client:
            response = client.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        ident: str = response.json()["id"]
        return ident

    def get(self, path: str) -> Any:
        with self.client() as client:
            response = client.get(path)
        assert response.status_code == 200, response.text
        return response.json()


def poll(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait until ``predicate`` holds (STYLE.md habit 11: conditions, not sleeps)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.1)


def _status(server: Server, job_id: str) -> str:
    status: str = server.get(f"/jobs/{job_id}")["status"]
    return status


def _seed(server: Server) -> None:
    effects = str(server.effects)
    quick = [server.job({"task_type": "sleepy", "payload": {"effects": effects}})]
    quick += [
        server.job({"task_type": "sleepy", "payload": {"effects": effects}})
        for _ in range(QUICK_JOBS - 1)
    ]
    server.ids["succeeded"] = quick[0]
    server.ids["failed"] = server.job({"task_type": "declined", "payload": {"card": "4242"}})
    server.ids["running"] = server.job(
        {"task_type": "sleepy", "payload": {"effects": effects, "seconds": 600}}
    )
    with server.client() as client:
        schedules: dict[str, dict[str, Any]] = {
            "nightly-report": {"cron": "30 2 * * *", "timezone": "Europe/Berlin"},
            "hourly-sync": {"interval_seconds": 3600},
        }
        for name, schedule in schedules.items():
            body = {"name": name, "task_type": "sleepy", "payload": {"effects": effects}}
            response = client.post("/templates", json=body | schedule)
            assert response.status_code == 201, response.text
            server.ids[name] = response.json()["id"]
    poll(lambda: all(_status(server, j) == "succeeded" for j in quick))
    # An interval template fires at once: its first job is part of the seeded data.
    hourly = f"/jobs?template_id={server.ids['hourly-sync']}&status=succeeded"
    poll(lambda: len(server.get(hourly)["items"]) == 1)
    poll(lambda: _status(server, server.ids["failed"]) == "failed")
    poll(lambda: _status(server, server.ids["running"]) == "running")


@pytest.fixture(scope="module")
def server(migrated_sqlite: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("ui")
    sqlite_url = backends.clone_sqlite(migrated_sqlite, workdir / "taskmill.db")
    port = free_port()
    created = subprocess.run(
        _taskmill("api-keys", "create", "--admin", "--name", "ui-test"),
        cwd=ROOT,
        env=_env(sqlite_url, port),
        capture_output=True,
        check=True,
        timeout=60,
    )
    with running(sqlite_url, port) as proc:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert proc.poll() is None, "taskmill run exited; see taskmill.log"
            try:
                return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        poll(up)
        key = created.stdout.decode().strip()
        found = Server(url, key, workdir / "taskmill.log", workdir / "effects.log", sqlite_url)
        _seed(found)
        yield found


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        # CI installs it (.ci/run) and fails here without it; a laptop skips with the fix.
        backends.unavailable(
            f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`"
        )
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


def _tab(
    browser: Browser, server: Server, viewport: ViewportSize, request: pytest.FixtureRequest
) -> Iterator[Page]:
    """A fresh tab (its own sessionStorage) at ``viewport``; fails the test on any script
    error, and on a failure leaves a screenshot in ``test-artifacts/ui/failures/``, its
    path in the test's output."""
    context = browser.new_context(viewport=viewport, base_url=server.url)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def on_console(message: ConsoleMessage) -> None:
        # Bad keys, missing scopes and invalid schedules typed into the editor are provoked
        # on purpose, and the browser logs each such response; the page explains them
        # (asserted by the tests).
        expected = any(f"status of {code} " in message.text for code in (401, 403, 422))
        if message.type == "error" and not expected:
            problems.append(f"console: {message.text}")

    tab.on("console", on_console)
    yield tab
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        FAILURES.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)
        path = FAILURES / f"{name}-{viewport['width']}.png"
        tab.screenshot(path=str(path), full_page=True)
        request.node.add_report_section("teardown", "screenshot of the failure", str(path))
    context.close()
    assert problems == []


@pytest.fixture
def page(browser: Browser, server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A tab at 1440x900 (see ``_tab``)."""
    yield from _tab(browser, server, {"width": 1440, "height": 900}, request)


def sign_in(page: Page, key: str) -> None:
    page.goto("/ui")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Open dashboard").click()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def card(page: Page, name: str) -> Any:
    return page.locator(f'[data-card="{name}"] .value')


def test_ui_sign_in_rejects_bad_key_then_shows_overview(page: Page, server: Server) -> None:
    sign_in(page, "tm_notakey")
    expect(page.locator("#signin-error")).to_contain_text("not accepted")
    shot(page, "sign-in-error")

    sign_in(page, server.key)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(card(page, "succeeded")).to_have_text(str(QUICK_JOBS + 1))  # + the template's
    expect(card(page, "failed")).to_have_text("1")
    expect(card(page, "running")).to_have_text("1")
    expect(card(page, "workers")).to_have_text("1")
    expect(page.locator("svg rect.fill-succeeded").first).to_be_visible()
    expect(page.locator("svg circle.point").first).to_be_attached()
    shot(page, "overview")
    page.emulate_media(color_scheme="dark")
    shot(page, "overview-dark")

    # A key that stops working (revoked, expired) sends the user back to sign in.
    page.evaluate("sessionStorage.setItem('taskmill.apiKey', 'tm_revoked')")
    page.reload()
    expect(page.locator("#signin-error")).to_contain_text("not accepted")


def test_ui_key_without_scope_says_so(page: Page, server: Server) -> None:
    with server.client() as client:
        created = client.post(
            "/api-keys",
            json={
                "merchant_id": "00000000-0000-0000-0000-000000000000",
                "name": "templates only",
                "scopes": ["templates:read"],
            },
        )
    sign_in(page, created.json()["secret"])
    expect(page.locator("#alert")).to_contain_text("not allowed")
    page.goto("/ui#/templates")
    expect(page.locator("tr[data-template-id]")).to_have_count(2)


def test_ui_jobs_filter_and_pages(page: Page, server: Server) -> None:
    sign_in(page, server.key)
    page.get_by_role("link", name="Jobs", exact=True).click()
    rows = page.locator("tr[data-job-id]")
    total = len(server.get("/jobs?limit=500")["items"])
    assert QUICK_JOBS < total < 50
    expect(rows).to_have_count(total)  # one page at the default 50 per page

    page.locator("#page-size").select_option("25")
    expect(rows).to_have_count(25)
    expect(page.locator("#page-number")).to_have_text("Page 1")
    page.locator("#next-page").click()
    expect(page.locator("#page-number")).to_have_text("Page 2")
    expect(rows).to_have_count(total - 25)
    page.locator("#prev-page").click()
    expect(rows).to_have_count(25)

    page.locator('.status-filter button[data-status="failed"]').click()
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".pill")).to_have_text("failed")
    expect(rows.first).to_contain_text("card declined")
    assert "status=failed" in page.url  # shareable

    page.locator('.status-filter button[data-status="failed"]').click()
    page.locator("#filter-task-type").fill("declined")
    page.locator("#filter-task-type").press("Enter")
    expect(rows).to_have_count(1)
    page.locator("#filter-task-type").fill("no-such-task")
    page.locator("#filter-task-type").press("Enter")
    expect(page.get_by_text("No jobs match these filters")).to_be_visible()
    page.locator("#filter-task-type").fill("")
    page.locator("#filter-task-type").press("Enter")
    page.locator("#filter-template").select_option(label="hourly-sync")
    expect(rows).to_have_count(1)
    page.locator("#filter-template").select_option("")
    page.locator('.status-filter button[data-status="succeeded"]').click()
    page.locator('.status-filter button[data-status="running"]').click()
    expect(rows).to_have_count(25)
    shot(page, "jobs")


def test_ui_job_detail_shows_timeline_and_runs(page: Page, server: Server) -> None:
    sign_in(page, server.key)
    page.goto("/ui#/jobs?status=failed")
    page.locator(f'tr[data-job-id="{server.ids["failed"]}"]').click()
    expect(page.locator("#job-id")).to_have_text(server.ids["failed"])
    timeline = page.locator("#timeline li")
    expect(timeline).to_have_count(4)
    events = [timeline.nth(i).get_attribute("data-event") for i in range(4)]
    assert events == ["job.created", "job.queued", "job.started", "job.failed"]
    expect(timeline.last).to_contain_text("card declined")
    expect(page.locator("#runs tbody tr")).to_have_count(1)
    expect(page.locator("#runs")).to_contain_text("RuntimeError: card declined")
    expect(page.locator("pre.error")).to_contain_text("card declined")
    expect(page.locator("#retry-job")).to_be_visible()
    shot(page, "job-failed")


def test_ui_cancel_running_job(page: Page, server: Server) -> None:
    effects = str(server.effects)
    victim = server.job({"task_type": "sleepy", "payload": {"effects": effects, "seconds": 600}})
    poll(lambda: _status(server, victim) == "running")
    sign_in(page, server.key)
    page.goto(f"/ui#/jobs/{victim}")
    expect(page.locator(".page-head .pill")).to_have_text("running")
    page.locator("#cancel-job").click()
    page.locator("#confirm-cancel").click()
    expect(page.locator(".page-head .pill")).to_have_text("cancelled")
    expect(page.locator("#timeline li").last).to_have_attribute("data-event", "job.cancelled")
    expect(page.locator("#toast")).to_have_text("Job cancelled")
    assert _status(server, victim) == "cancelled"
    shot(page, "job-cancelled")


def test_ui_template_switch_and_next_fires(page: Page, server: Server) -> None:
    template_id = server.ids["nightly-report"]
    sign_in(page, server.key)
    page.get_by_role("link", name="Templates", exact=True).click()
    row = page.locator(f'tr[data-template-id="{template_id}"]')
    expect(row.locator(".fires li")).to_have_count(3)
    switch = row.get_by_role("switch")
    expect(switch).to_have_attribute("aria-checked", "true")
    shot(page, "templates")

    switch.click()
    expect(switch).to_have_attribute("aria-checked", "false")
    expect(row.locator(".fires")).to_have_text("paused")
    assert server.get(f"/templates/{template_id}")["active"] is False
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "true")
    assert server.get(f"/templates/{template_id}")["active"] is True


def test_ui_workers_show_heartbeats(page: Page, server: Server) -> None:
    sign_in(page, server.key)
    page.get_by_role("link", name="Workers", exact=True).click()
    rows = page.locator("tr[data-worker-id]")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".pill").first).to_have_text("alive")
    expect(rows.first).to_contain_text("ago")
    shot(page, "workers")


def test_run_logs_carry_service_and_job_context(server: Server) -> None:
    failed = server.ids["failed"]
    lines = [line for line in server.log.read_text().splitlines() if "charging 4242" in line]
    assert len(lines) == 1, lines
    assert "service=executor" in lines[0]
    assert f"job_id={failed}" in lines[0] and "attempt=1" in lines[0]
    assert "merchant_id=00000000-0000-0000-0000-000000000000" in lines[0]


def test_api_explorer_works_without_internet(page: Page, server: Server) -> None:
    """/docs renders the API (every operation listed) with every request that is not to
    taskmill itself refused, as on a machine with no internet: its files are taskmill's."""
    outside: list[str] = []

    def only_local(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort("internetdisconnected")

    page.route("**/*", only_local)
    page.goto("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("taskmill", timeout=15_000)
    expect(page.locator(".opblock-summary-path", has_text="/jobs/{job_id}").first).to_be_visible()
    shot(page, "api-explorer-offline")
    assert outside == []


async def _insert_queued(database_url: str, task_type: str) -> str:
    """A queued job of a type the running app does not know (as one created by an app of
    another version): the API refuses to create it, so it goes in through the store."""
    db = Database.from_url(database_url)
    try:
        now = datetime.now(UTC)
        created = await create_job(
            db, NewJob(task_type, now), actor="test", now=now, queue_if_due=True
        )
        return created.job.id
    finally:
        await db.close()


def test_ui_warns_of_jobs_no_worker_runs(page: Page, server: Server) -> None:
    # Playwright's loop runs in this thread: the store's coroutine gets a thread of its own.
    with ThreadPoolExecutor(1) as thread:
        job_id = thread.submit(
            asyncio.run, _insert_queued(server.database_url, "nobody-runs-this")
        ).result()
    try:
        sign_in(page, server.key)
        expect(page.get_by_text("of task type “nobody-runs-this” wait")).to_be_visible()
        shot(page, "overview-unserved-task-type")
        page.goto(f"/ui#/jobs/{job_id}")
        expect(page.get_by_text("Waiting: no live worker runs task type")).to_be_visible()
    finally:
        with server.client() as client:
            assert client.post(f"/jobs/{job_id}/cancel").status_code == 200


# -- the jobs list's order, search and bulk actions, and the failed view (issue 23) -----
# They act on a merchant of their own, so the default merchant's counts, which the tests
# above assert, never move.

TIMEOUTS = (31, 32, 7)  # seconds in errors that group as one: "timeout after <n>s"
VICTIMS = 5  # scheduled jobs the bulk cancel takes


@dataclass
class Shop:
    """A second merchant, its jobs:read+write key and its seeded jobs' ids."""

    key: str
    server: Server
    ids: dict[str, list[str]] = field(default_factory=dict)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, headers={"x-api-key": self.key}, timeout=10)

    def job(self, body: dict[str, Any]) -> str:
        with self.client() as client:
            response = client.post("/jobs", json=body)
        assert response.status_code == 201, response.text
        ident: str = response.json()["id"]
        return ident

    def get(self, path: str) -> Any:
        with self.client() as client:
            response = client.get(path)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def shop(server: Server) -> Shop:
    with server.client() as admin:
        merchant = admin.post("/merchants", json={"name": "second shop"})
        assert merchant.status_code == 201, merchant.text
        body = {
            "merchant_id": merchant.json()["id"],
            "name": "second shop ui",
            "scopes": ["jobs:read", "jobs:write"],
        }
        key = admin.post("/api-keys", json=body)
        assert key.status_code == 201, key.text
    found = Shop(key.json()["secret"], server)
    effects = str(server.effects)
    found.ids["failed"] = [
        found.job({"task_type": "declined", "payload": {"reason": f"timeout after {n}s"}})
        for n in TIMEOUTS
    ]
    found.ids["card"] = [found.job({"task_type": "declined", "payload": {}})]
    found.ids["quick"] = [
        found.job({"task_type": "sleepy", "payload": {"effects": effects, "order": "ORD-77-XYZ"}})
    ]
    found.ids["victims"] = [
        found.job({"task_type": "sleepy", "payload": {"effects": effects}, "delay_seconds": 3600})
        for _ in range(VICTIMS)
    ]
    done = [*found.ids["failed"], *found.ids["card"], *found.ids["quick"]]
    poll(lambda: all(found.get(f"/jobs/{j}")["status"] in ("failed", "succeeded") for j in done))
    return found


def test_ui_jobs_newest_first_toggle_and_pages(page: Page, server: Server) -> None:
    sign_in(page, server.key)
    page.goto("/ui#/jobs?limit=25")
    rows = page.locator("tr[data-job-id]")
    total = len(server.get("/jobs?limit=500")["items"])
    newest = server.get("/jobs?limit=1")["items"][0]["id"]
    oldest = server.get("/jobs?limit=1&order=asc")["items"][0]["id"]
    expect(page.locator("#order-toggle")).to_have_text("Newest first ↓")
    expect(rows.first).to_have_attribute("data-job-id", newest)
    expect(page.locator("th", has_text="Waited")).to_be_visible()

    page.locator("#order-toggle").click()
    expect(page.locator("#order-toggle")).to_have_text("Oldest first ↑")
    expect(rows.first).to_have_attribute("data-job-id", oldest)
    assert "order=asc" in page.url  # shareable
    page.locator("#next-page").click()
    expect(page.locator("#page-number")).to_have_text("Page 2")
    expect(rows).to_have_count(total - 25)
    expect(rows.last).to_have_attribute("data-job-id", newest)
    shot(page, "jobs-oldest-first")

    page.reload()  # the URL alone brings the order back
    expect(page.locator("#order-toggle")).to_have_text("Oldest first ↑")
    expect(rows.first).to_have_attribute("data-job-id", oldest)


def test_ui_jobs_search(page: Page, shop: Shop) -> None:
    sign_in(page, shop.key)
    page.goto("/ui#/jobs")
    rows = page.locator("tr[data-job-id]")
    expect(rows).to_have_count(len(shop.get("/jobs?limit=500")["items"]))
    search = page.get_by_label("Search jobs")
    search.fill("ord-77")
    search.press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", shop.ids["quick"][0])
    expect(rows.first.locator('[data-col="waited"]')).not_to_have_text("—")
    assert "q=ord-77" in page.url
    search.fill(shop.ids["card"][0])
    search.press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-job-id", shop.ids["card"][0])
    search.fill("100%_nothing")
    search.press("Enter")
    expect(page.get_by_text("No jobs match these filters")).to_be_visible()
    shot(page, "jobs-search")


def test_ui_bulk_cancel_matching_with_keyboard(page: Page, shop: Shop) -> None:
    sign_in(page, shop.key)
    page.goto("/ui#/jobs?status=scheduled")
    rows = page.locator("tr[data-job-id]")
    expect(rows).to_have_count(VICTIMS)
    expect(page.locator("#bulk-retry")).to_be_hidden()  # scheduled jobs cannot be retried
    cancel = page.locator("#bulk-cancel")
    expect(cancel).to_be_visible()
    # Keyboard only: Tab to the action, Enter, Enter on the focused confirmation.
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "bulk-cancel":
            break
    assert page.evaluate("document.activeElement.id") == "bulk-cancel"
    page.keyboard.press("Enter")
    dialog = page.locator("#bulk-dialog")
    expect(dialog.locator("#bulk-count")).to_have_text(
        f"{VICTIMS} jobs matching these filters will be cancelled."
    )
    shot(page, "jobs-bulk-confirm")
    expect(dialog.locator("#bulk-confirm")).to_be_focused()
    page.keyboard.press("Enter")
    progress = dialog.locator("#bulk-progress")
    expect(progress).to_have_attribute("max", str(VICTIMS))
    poll(lambda: progress.evaluate("bar => bar.value") == VICTIMS)
    expect(dialog.locator("#bulk-summary")).to_have_text(f"{VICTIMS} cancelled, 0 skipped.")
    shot(page, "jobs-bulk-done")
    expect(dialog.locator("#bulk-close")).to_be_focused()
    page.keyboard.press("Enter")
    expect(dialog).to_have_count(0)
    expect(page.get_by_text("No jobs match these filters")).to_be_visible()
    assert {shop.get(f"/jobs/{j}")["status"] for j in shop.ids["victims"]} == {"cancelled"}


def test_ui_bulk_actions_hidden_without_jobs_write(page: Page, server: Server) -> None:
    with server.client() as client:
        created = client.post(
            "/api-keys",
            json={
                "merchant_id": "00000000-0000-0000-0000-000000000000",
                "name": "read only",
                "scopes": ["jobs:read"],
            },
        )
    sign_in(page, created.json()["secret"])
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    # The UI asks whether the key may write by cancelling an id that cannot exist.
    with page.expect_response(lambda r: r.url.endswith("/jobs/bulk/cancel")) as probe:
        page.goto("/ui#/jobs")
    assert probe.value.status == 403
    expect(page.locator("tr[data-job-id]").first).to_be_visible()
    expect(page.locator("#bulk-cancel")).to_be_hidden()
    expect(page.locator("#bulk-retry")).to_be_hidden()


def test_ui_failed_view_groups_and_retries(page: Page, shop: Shop) -> None:
    sign_in(page, shop.key)
    page.get_by_role("link", name="Failed", exact=True).click()
    groups = page.locator("tr[data-group]")
    expect(groups).to_have_count(2)
    timeouts = page.locator('tr[data-group="RuntimeError: timeout after <n>s"]')
    expect(timeouts.locator("td.num")).to_have_text(str(len(TIMEOUTS)))
    expect(timeouts.locator(".chip")).to_have_text("declined")
    expect(timeouts.locator("time")).to_be_visible()
    link = timeouts.get_by_role("link", name="View jobs")
    assert link.get_attribute("href") == "#/jobs?status=failed&task_type=declined"
    shot(page, "failed")

    timeouts.get_by_role("button", name="Retry group").click()
    dialog = page.locator("#bulk-dialog")
    expect(dialog.locator("#bulk-count")).to_contain_text(f"{len(TIMEOUTS)} jobs in the group")
    dialog.locator("#bulk-confirm").click()
    expect(dialog.locator("#bulk-summary")).to_have_text(f"{len(TIMEOUTS)} retried, 0 skipped.")
    assert dialog.locator("#bulk-progress").evaluate("bar => bar.value") == len(TIMEOUTS)
    dialog.locator("#bulk-close").click()
    retried = shop.ids["failed"]
    # They ran again (and failed again: the task always refuses).
    poll(
        lambda: all(
            (job := shop.get(f"/jobs/{j}"))["attempt"] == 2 and job["status"] == "failed"
            for j in retried
        )
    )
    link.click()
    expect(page.locator("tr[data-job-id]")).to_have_count(len(TIMEOUTS) + 1)


def test_ui_jobs_list_fits_a_phone(browser: Browser, shop: Shop) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, base_url=shop.server.url)
    try:
        tab = context.new_page()
        sign_in(tab, shop.key)
        tab.goto("/ui#/jobs")
        expect(tab.locator("tr[data-job-id]").first).to_be_visible()
        expect(tab.locator("#bulk-cancel")).to_be_attached()
        width = tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert width, "the jobs page scrolls sideways on a phone"
        shot(tab, "jobs-phone")
        tab.goto("/ui#/failed")
        expect(tab.locator("tr[data-group]").first).to_be_visible()
        assert tab.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        shot(tab, "failed-phone")
    finally:
        context.close()


# -- operator actions and views (issue 23: run now, schedule editor, queues, running now) --
# They come last in the module: they add jobs and a template that the counts above do not
# expect.

PHONE: ViewportSize = {"width": 390, "height": 844}


def _no_horizontal_overflow(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    inner = page.evaluate("window.innerWidth")
    assert width <= inner, f"page is {width}px wide in a {inner}px window"


@pytest.fixture
def phone(browser: Browser, server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A tab at phone width (see ``_tab``)."""
    yield from _tab(browser, server, PHONE, request)


def test_ui_run_now_with_confirmation(page: Page, server: Server) -> None:
    effects = str(server.effects)
    later = server.job(
        {"task_type": "sleepy", "payload": {"effects": effects}, "delay_seconds": 3600}
    )
    sign_in(page, server.key)
    page.goto(f"/ui#/jobs/{later}")
    expect(page.locator(".page-head .pill")).to_have_text("scheduled")
    page.locator("#run-now").click()
    expect(page.locator("#job-actions")).to_contain_text("Run this job now")
    assert _status(server, later) == "scheduled"  # nothing happens before the confirmation
    shot(page, "job-run-now-confirm")
    page.locator("#confirm-run-now").click()
    expect(page.locator("#toast")).to_have_text("Job queued to run now")
    expect(page.locator(".page-head .pill")).to_have_text("succeeded")
    queued = page.locator('#timeline li[data-event="job.queued"]')
    expect(queued).to_contain_text("api_key:")
    expect(queued).to_contain_text("run now, before its due time")
    expect(page.locator("#job-waited")).to_be_visible()
    assert _status(server, later) == "succeeded"
    shot(page, "job-run-now-done")


def _editor_row(page: Page, template_id: str) -> Any:
    return page.locator(f'tr[data-template-id="{template_id}"]')


def _make_template(server: Server, name: str) -> str:
    with server.client() as client:
        body = {"name": name, "task_type": "sleepy", "cron": "0 9 * * *", "timezone": "UTC"}
        response = client.post("/templates", json=body)
    assert response.status_code == 201, response.text
    ident: str = response.json()["id"]
    return ident


def test_ui_edit_schedule_live_preview_inline_error_and_save(page: Page, server: Server) -> None:
    template_id = _make_template(server, "edit-me")
    sign_in(page, server.key)
    page.goto("/ui#/templates")
    _editor_row(page, template_id).locator(".edit-schedule").click()
    cron = page.locator("#edit-cron")
    expect(cron).to_be_focused()
    fires = page.locator("#edit-preview li")
    expect(fires).to_have_count(10)
    expect(fires.first).to_contain_text("09:00")

    cron.fill("15 7 * * *")  # the preview follows the typing
    expect(fires.first).to_contain_text("07:15")

    cron.fill("61 * * * *")
    expect(page.locator("#edit-cron-error")).to_be_visible()
    expect(page.locator("#edit-cron-error")).to_contain_text("61")
    expect(cron).to_have_attribute("aria-invalid", "true")
    shot(page, "template-edit-error")

    # 02:30 on 28 March: in Berlin, 2027's falls in the spring-forward gap (flagged).
    cron.fill("30 2 28 3 *")
    page.locator("#edit-timezone").fill("Europe/Berlin")
    expect(page.locator("#edit-cron-error")).to_be_hidden()
    expect(fires.first).to_have_attribute("data-dst", "true")
    expect(fires.first).to_contain_text("DST")
    expect(fires.nth(1)).to_have_attribute("data-dst", "false")
    shot(page, "template-edit-preview")

    page.locator("#edit-save").click()
    assert server.get(f"/templates/{template_id}")["cron_expression"] == "0 9 * * *"
    page.locator("#edit-confirm").click()
    expect(page.locator("#toast")).to_have_text("Schedule of edit-me saved")
    expect(_editor_row(page, template_id)).to_contain_text("30 2 28 3 *")
    saved = server.get(f"/templates/{template_id}")
    assert (saved["cron_expression"], saved["timezone"]) == ("30 2 28 3 *", "Europe/Berlin")


def test_ui_edit_schedule_cancel_changes_nothing(page: Page, server: Server) -> None:
    template_id = _make_template(server, "keep-me")
    sign_in(page, server.key)
    page.goto("/ui#/templates")
    _editor_row(page, template_id).locator(".edit-schedule").click()
    page.locator("#edit-cron").fill("5 5 * * *")
    page.locator("#edit-cancel").click()
    expect(page.locator("form.editor")).to_have_count(0)
    assert server.get(f"/templates/{template_id}")["cron_expression"] == "0 9 * * *"


def test_ui_edit_schedule_with_the_keyboard_only(page: Page, server: Server) -> None:
    template_id = _make_template(server, "keyboard")
    sign_in(page, server.key)
    page.goto("/ui#/templates")
    button = _editor_row(page, template_id).locator(".edit-schedule")
    expect(button).to_be_visible()
    for _ in range(80):  # Tab through the page until the button has the focus
        page.keyboard.press("Tab")
        if button.evaluate("b => b === document.activeElement"):
            break
    else:
        raise AssertionError("the Edit schedule button is not reachable with Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#edit-cron")).to_be_focused()
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type("45 6 * * 1")
    expect(page.locator("#edit-preview li").first).to_contain_text("06:45")
    page.keyboard.press("Enter")  # submits the form: the confirmation takes the focus
    expect(page.locator("#edit-confirm")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("#toast")).to_have_text("Schedule of keyboard saved")
    assert server.get(f"/templates/{template_id}")["cron_expression"] == "45 6 * * 1"


def _check_queues(page: Page, server: Server) -> None:
    page.get_by_role("link", name="Queues", exact=True).click()
    expect(page.get_by_role("heading", name="Queues")).to_be_visible()
    reports = page.locator('tr[data-queue="reports"]')
    expect(reports.locator('[data-count="scheduled"]')).to_have_text("1")
    expect(reports.locator('[data-count="queued"]')).to_have_text("0")
    expect(reports.locator(".queue-state .pill")).to_have_text("active")
    default = page.locator('tr[data-queue="default"]')
    expect(default).to_be_visible()
    api = {q["queue"]: q for q in server.get("/queues")["items"]}
    assert api["default"]["succeeded_60m"] > QUICK_JOBS
    expect(default.locator("td").nth(8)).to_contain_text(str(api["default"]["succeeded_60m"]))


def test_ui_queues_page(page: Page, phone: Page, server: Server) -> None:
    if not any(q["queue"] == "reports" for q in server.get("/queues")["items"]):
        server.job({"task_type": "sleepy", "queue": "reports", "delay_seconds": 3600})
    sign_in(page, server.key)
    _check_queues(page, server)
    shot(page, "queues")
    sign_in(phone, server.key)
    _check_queues(phone, server)
    _no_horizontal_overflow(phone)
    shot(phone, "queues-phone")


def _check_running_now(page: Page, server: Server) -> None:
    running = server.ids["running"]
    page.get_by_role("link", name="Workers", exact=True).click()
    cell = page.locator("tr[data-worker-id] .running-cell").first
    item = cell.locator(f'li[data-job-id="{running}"]')
    expect(item).to_contain_text("sleepy")
    expect(item).to_contain_text("for ")


def test_ui_workers_show_running_jobs(page: Page, phone: Page, server: Server) -> None:
    assert _status(server, server.ids["running"]) == "running"
    sign_in(page, server.key)
    _check_running_now(page, server)
    shot(page, "workers-running")
    page.locator(f'li[data-job-id="{server.ids["running"]}"] a').click()
    expect(page.locator("#job-id")).to_have_text(server.ids["running"])
    expect(page.locator("#job-waited")).to_be_visible()
    sign_in(phone, server.key)
    _check_running_now(phone, server)
    _no_horizontal_overflow(phone)
    shot(phone, "workers-phone")


def test_ui_pause_and_resume_a_queue(page: Page, server: Server) -> None:
    """An admin pauses a queue from the queues page (after a confirmation): its new job
    stays queued; resumed, the job runs. Keyboard only."""
    sign_in(page, server.key)
    page.get_by_role("link", name="Queues", exact=True).click()
    row = page.locator('tr[data-queue="default"]')
    pause = row.locator('button[data-action="pause"]')
    expect(pause).to_be_visible()
    pause.focus()
    page.keyboard.press("Enter")
    # The confirmation takes the focus (a keyboard user answers it at once); wait for it
    # rather than press into the page before it is there (a loaded CI machine did).
    expect(row.locator('button[data-confirm="pause"]')).to_be_focused()
    page.keyboard.press("Enter")
    expect(row).to_have_attribute("data-state", "paused")
    expect(row.locator(".queue-state")).to_contain_text("since")
    assert [q["name"] for q in server.get("/queues/paused")] == ["default"]
    time.sleep(1.5)  # executors honour a pause within a second
    waiting = server.job({"task_type": "sleepy", "payload": {"effects": str(server.effects)}})
    try:
        time.sleep(1.5)  # an executor would have claimed it by now
        assert _status(server, waiting) == "queued"
        shot(page, "queue-paused")
    finally:
        row.locator('button[data-action="resume"]').click()
        row.locator('button[data-confirm="resume"]').click()
    expect(row).to_have_attribute("data-state", "active")
    poll(lambda: _status(server, waiting) == "succeeded")


def test_ui_job_page_shows_progress(page: Page, server: Server) -> None:
    effects = str(server.effects)
    body = {"effects": effects, "seconds": 600, "progress": 0.4, "message": "step 2 of 5"}
    working = server.job({"task_type": "sleepy", "payload": body})
    poll(lambda: server.get(f"/jobs/{working}").get("progress") is not None)
    try:
        sign_in(page, server.key)
        page.goto(f"/ui#/jobs/{working}")
        shown = page.locator("#job-progress")
        expect(shown).to_contain_text("40% · step 2 of 5")
        expect(shown.locator("progress")).to_have_attribute("value", "0.4")
        shot(page, "job-progress")
    finally:
        with server.client() as client:
            assert client.post(f"/jobs/{working}/cancel").status_code == 200


PAGES = {  # every page of the UI, and the heading it shows
    "#/": "Overview",
    "#/jobs": "Jobs",
    "#/failed": "Failed jobs",
    "#/queues": "Queues",
    "#/templates": "Templates",
    "#/workers": "Workers",
}
DESKTOP: ViewportSize = {"width": 1280, "height": 800}
SECTIONS = ["Overview", "Jobs", "Failed", "Queues", "Templates", "Workers"]


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "phone"])
def test_ui_every_page_fits_and_renders(
    browser: Browser, server: Server, request: pytest.FixtureRequest, viewport: ViewportSize
) -> None:
    """Every page, and a job's, at 1280x800 and at phone width: its heading shows, its
    content loads, nothing scrolls sideways, no script error (``_tab``)."""
    for tab in _tab(browser, server, viewport, request):
        sign_in(tab, server.key)
        expect(tab.get_by_role("heading", name="Overview")).to_be_visible()
        # Every section's link and the session's controls are on screen, none cut off.
        controls = [tab.get_by_role("link", name=name, exact=True) for name in SECTIONS]
        controls += [tab.get_by_role("button", name="Sign out")]
        for control in controls:
            box = control.bounding_box()
            assert box is not None and box["x"] >= 0, control
            assert box["x"] + box["width"] <= viewport["width"], control
        pages = {**PAGES, f"#/jobs/{server.ids['failed']}": "Job"}
        for hash_, heading in pages.items():
            tab.goto(f"/ui{hash_}")
            if heading == "Job":
                expect(tab.locator("#job-id")).to_have_text(server.ids["failed"])
            else:
                expect(tab.get_by_role("heading", name=heading, exact=True)).to_be_visible()
            expect(tab.locator(".loading")).to_have_count(0)
            _no_horizontal_overflow(tab)
            name = hash_.strip("#/").replace("/", "-") or "overview"
            shot(tab, f"every-page-{viewport['width']}-{name[:20]}")


def test_ui_is_keyboard_reachable(page: Page, server: Server) -> None:
    """From the top of the page, Tab reaches every section's link, and Enter opens it."""
    sign_in(page, server.key)
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    page.locator("body").focus()
    reached: set[str] = set()
    for _ in range(25):
        page.keyboard.press("Tab")
        reached.add(page.evaluate("document.activeElement.textContent.trim()"))
    assert set(SECTIONS) <= reached, f"not reached by Tab: {set(SECTIONS) - reached}"
    for section in SECTIONS[1:]:
        page.get_by_role("link", name=section, exact=True).focus()
        page.keyboard.press("Enter")
        heading = PAGES[f"#/{section.lower()}"]
        expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
        # the page's own controls follow in the tab order
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement !== document.body")


def test_ui_templates_say_why_one_is_off(page: Page, server: Server) -> None:
    body = {
        "name": "fragile",
        "task_type": "sleepy",
        "cron": "0 0 1 1 *",
        "on_job_failure": "disable",
        "payload": {"effects": str(server.effects)},
    }
    with server.client() as client:
        created = client.post("/templates", json=body)
        assert created.status_code == 201, created.text
        template_id = created.json()["id"]
        assert client.post(f"/admin/templates/{template_id}/pause").status_code == 200
    try:
        sign_in(page, server.key)
        page.get_by_role("link", name="Templates", exact=True).click()
        row = page.locator(f'tr[data-template-id="{template_id}"]')
        expect(row.locator(".tag")).to_have_text("stops on failure")
        expect(row.locator(".template-error")).to_contain_text("administrator")
        shot(page, "templates-traits")
    finally:
        with server.client() as client:
            assert client.delete(f"/templates/{template_id}").status_code == 204

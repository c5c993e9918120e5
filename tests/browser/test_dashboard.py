"""The dashboard in a real browser: Playwright driving Debian's Chromium against the real
server (uvicorn on a free loopback port) with real agents, git and signed webhooks.

Chromium comes from apt (`apt-get install chromium`; browsers cannot be downloaded
here), launched through `executable_path`. Without it these tests skip with the reason,
except in CI (`CONVEYOR_BROWSER_TESTS=required`, set by `.ci/run`), where they fail.
Screenshots go under the test's tmp dir; with `CONVEYOR_SCREENSHOTS_DIR` set they are
copied there too (that is how README's `docs/img/*.png` are made).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bot.serve import serving_in_thread
from bot.settings import settings_from_dict
from bot.stopplane.reset import STEPS
from tests.acceptance.test_events import plane_state
from tests.gitrepo import make_repo
from tests.harness import base_settings, write_agent

ADMIN = "admin-token-0123456789"  # base_settings' admin token (tests/harness.py)
READ = "read-token-for-the-dashboard"
CHROMIUM = (
    os.environ.get("CONVEYOR_CHROMIUM")
    or shutil.which("chromium")
    or shutil.which("chromium-browser")
)
REQUIRED = os.environ.get("CONVEYOR_BROWSER_TESTS") == "required"

# Says what it does every 0.2 s until SIGTERM, then says goodbye and exits (graceful).
CHATTY_AGENT = """\
import signal, sys, time
def stop(*_):
    print("got SIGTERM, leaving", flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
step = 0
while True:
    step += 1
    print(f"working step {step}", flush=True)
    time.sleep(0.2)
"""

sync_api = pytest.importorskip("playwright.sync_api")
expect = sync_api.expect
# Generous waits: these run on a busy two-core machine; a wait returns as soon as it holds.
expect.set_options(timeout=20_000)

RESET_STEPS = [name for name, _ in STEPS]  # in the order the reset runs them


def _browser_or_skip() -> str:
    if CHROMIUM:
        return CHROMIUM
    why = "no chromium on PATH (apt-get install chromium)"
    if REQUIRED:
        pytest.fail(f"CI needs the browser tests: {why}")
    pytest.skip(why)


@dataclass
class Server:
    url: str
    tmp_path: Path
    shots: list[Path] = field(default_factory=list)

    def shot(self, page: Any, name: str) -> None:
        path = self.tmp_path / "screenshots" / f"{name}.png"
        path.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(path), full_page=True)
        self.shots.append(path)
        target = os.environ.get("CONVEYOR_SCREENSHOTS_DIR")
        if target:
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(target) / path.name)


def start_server(tmp_path: Path, **overrides: Any) -> Iterator[Server]:
    repo, _ = make_repo(tmp_path)
    impl = write_agent(tmp_path / "agents", "impl.py", CHATTY_AGENT)
    doc = base_settings(tmp_path, repo, **{"agents.implementation": impl, **overrides})
    with serving_in_thread(settings_from_dict(doc)) as url:
        yield Server(url, tmp_path)


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The server (in this process) logged no error while the browser used it."""
    yield
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []


@pytest.fixture(autouse=True)
def short_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams end every 2 s (15 s in production): every test also proves the pages
    reconnect and miss nothing, without a console error."""
    import bot.ui.streams

    monkeypatch.setattr(bot.ui.streams, "STREAM_SECONDS", 2.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[Server]:
    yield from start_server(tmp_path, **{"server.read_token": READ})


@pytest.fixture
def browser() -> Iterator[Any]:
    executable = _browser_or_skip()
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Console:
    errors: list[str] = field(default_factory=list)

    def watch(self, page: Any) -> None:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))


def new_page(browser: Any, console: Console, **kw: Any) -> Any:
    context = browser.new_context(**kw)
    context.set_default_timeout(30_000)
    page = context.new_page()
    console.watch(page)
    return page


def mark(page: Any) -> None:
    """Something only this document holds: it is still there if the page never reloaded."""
    page.evaluate("window.__not_reloaded = true")


def not_reloaded(page: Any) -> bool:
    return bool(page.evaluate("window.__not_reloaded === true"))


@pytest.mark.timeout(300)
def test_queue_task_page_log_and_stop_live(server: Server, browser: Any) -> None:
    console = Console()
    page = new_page(browser, console, viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/")
    expect(page).to_have_url(f"{server.url}/ui")
    expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
    expect(page.locator("#no-tasks")).to_be_visible()
    expect(page.locator("#live-state")).to_have_text("Live", timeout=20_000)
    mark(page)

    # A signed start webhook: the task appears, its implementation job runs; no reload.
    assert plane_state(server.url, "To Analyse", 1).json()["outcome"] == "started"
    expect(page.locator('table.tasks tr[data-task="PROJ-42"]')).to_be_visible(timeout=20_000)
    running = page.locator("#running tbody tr")
    expect(running).to_have_count(1, timeout=30_000)
    expect(running.first).to_contain_text("implementation")
    expect(running.first.locator(".elapsed")).to_have_text(
        __import__("re").compile(r"^\d+ s$|^\d+m \d\ds$")
    )
    assert page.locator('[data-count="implementation"]').inner_text() == "1"
    assert not_reloaded(page)
    # Times are shown in the viewer's zone with UTC on hover.
    first_time = page.locator("#running time").first
    assert first_time.get_attribute("title", timeout=5_000).endswith("UTC")
    server.shot(page, "queue")

    # The task page: the agent's log lines arrive while it runs.
    page.locator("#running tbody tr a").first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("PROJ-42")
    log = page.locator("#log")
    expect(log).to_contain_text("working step 2", timeout=20_000)
    expect(log).to_contain_text("working step 8", timeout=20_000)
    expect(page.locator("#jobs tr[data-status='running']")).to_have_count(1)
    mark(page)
    server.shot(page, "task")

    # Stop with a wrong token: the error is shown, nothing stops.
    assert console.errors == []
    page.get_by_role("button", name="Stop task").click()
    token = page.get_by_label("Admin token")
    expect(token).to_be_visible()
    token.fill("not-the-admin-token")
    page.get_by_role("button", name="Send").click()
    answer = page.locator("#action-answer")
    expect(answer).to_contain_text("Refused (HTTP 401)")
    expect(answer).to_contain_text("admin token")  # the server's own words follow
    expect(page.locator("#stage")).to_contain_text("implementation")
    # The browser itself logs the refused request; that one line is all.
    assert console.errors == [
        "Failed to load resource: the server responded with a status of 401 (Unauthorized)"
    ]
    console.errors.clear()

    # Stop with the right one: the answer, then the reset steps, then cancelled_graceful.
    page.get_by_role("button", name="Stop task").click()
    token.fill(ADMIN)
    page.get_by_role("button", name="Send").click()
    expect(answer).to_contain_text("STOP_REQUESTED")
    steps = page.locator("table.steps tr[data-step]")
    expect(page.locator("tr[data-step='processes']")).to_be_visible(timeout=30_000)
    expect(page.locator("tr[data-step='notify']")).to_be_visible(timeout=30_000)
    assert [
        s.get_attribute("data-step") for s in steps.all()
    ] == RESET_STEPS  # in the order they ran, each with the time it was done
    for row in steps.all():
        assert row.locator("time").count() == 1
    expect(page.locator("#outcome")).to_have_text("cancelled_graceful", timeout=30_000)
    expect(page.locator("#stage")).to_contain_text("cancelled")
    expect(log).to_contain_text("got SIGTERM, leaving", timeout=20_000)
    expect(page.locator("#log-state")).to_contain_text("has finished", timeout=20_000)
    # Across the streams' reconnections every line came once, in order.
    lines = log.inner_text().splitlines()
    work = [line for line in lines if line.startswith("working step")]
    assert work == [f"working step {n}" for n in range(1, len(work) + 1)]
    assert lines[-1] == "got SIGTERM, leaving"
    expect(page.locator("#stop-button")).to_be_disabled()
    assert not_reloaded(page)
    server.shot(page, "task-stopped")

    # The queue lists the stop; a phone-width view of it.
    page.goto(f"{server.url}/ui")
    expect(page.locator("#recent-stops")).to_contain_text("cancelled_graceful")
    expect(page.locator("#recent-stops")).to_contain_text("admin")
    phone = new_page(browser, console, viewport={"width": 390, "height": 844}, is_mobile=True)
    phone.goto(f"{server.url}/ui")
    expect(phone.locator("#recent-stops")).to_be_visible()
    expect(phone.locator("#live-state")).to_have_text("Live", timeout=20_000)
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px screen"
    server.shot(phone, "queue-phone")
    assert console.errors == []


@pytest.mark.timeout(300)
def test_read_token_refuses_then_page_keeps_working(guarded: Server, browser: Any) -> None:
    console = Console()
    page = new_page(browser, console)
    refused = page.goto(f"{guarded.url}/ui")
    assert refused is not None and refused.status == 401
    expect(page.get_by_role("heading", level=1)).to_have_text("This dashboard needs its read token")
    assert READ not in page.content()
    guarded.shot(page, "refused")
    # Only the refused document itself may be logged as an error.
    assert all("401" in e for e in console.errors), console.errors
    console.errors.clear()

    page.goto(f"{guarded.url}/ui?token={READ}")
    expect(page.get_by_role("heading", name="Queue", exact=True)).to_be_visible()
    expect(page).to_have_url(f"{guarded.url}/ui")  # the token left the address bar
    expect(page.locator("#live-state")).to_have_text("Live", timeout=20_000)
    assert READ not in page.content()
    mark(page)

    assert plane_state(guarded.url, "To Analyse", 1).json()["outcome"] == "started"
    expect(page.locator('table.tasks tr[data-task="PROJ-42"]')).to_be_visible(timeout=20_000)
    expect(page.locator("#running tbody tr")).to_have_count(1, timeout=30_000)
    assert not_reloaded(page)

    # A link within the dashboard, and a reload: both still work in this tab.
    page.locator('table.tasks tr[data-task="PROJ-42"] a').first.click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("PROJ-42")
    expect(page.locator("#log")).to_contain_text("working step 3", timeout=20_000)
    expect(page.locator("#live-state")).to_have_text("Live", timeout=20_000)
    page.reload()
    expect(page.get_by_role("heading", level=1)).to_contain_text("PROJ-42", timeout=20_000)
    expect(page.locator("#log")).to_contain_text("working step", timeout=20_000)
    assert READ not in page.content()
    assert [e for e in console.errors if "401" not in e] == []

    # A wrong token is refused as well.
    other = new_page(browser, Console())
    wrong = other.goto(f"{guarded.url}/ui?token=nope")
    assert wrong is not None and wrong.status == 401


@pytest.mark.timeout(300)
def test_without_javascript_the_page_reloads_itself(server: Server) -> None:
    # Scripting off in Blink itself (not only script execution, as `java_script_enabled`
    # does), so that the parser reads <noscript> the way a browser with JS off does.
    executable = _browser_or_skip()
    with sync_api.sync_playwright() as p:
        off = p.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--blink-settings=scriptEnabled=false"],
        )
        try:
            console = Console()
            page = new_page(off, console)
            page.goto(f"{server.url}/ui")
            expect(page.locator("#no-tasks")).to_be_visible()
            assert plane_state(server.url, "To Analyse", 1).json()["outcome"] == "started"
            # No script runs: the row can only come from the page reloading itself.
            row = page.locator('table.tasks tr[data-task="PROJ-42"]')
            expect(row).to_be_visible(timeout=30_000)
            # The server's UTC text is still there: no script localised it.
            assert row.locator("time").inner_text().endswith(" UTC")
            assert console.errors == []
        finally:
            off.close()


@pytest.mark.timeout(300)
def test_a_blocked_task_offers_retry_when_the_server_has_it(tmp_path: Path, browser: Any) -> None:
    from bot.app import all_routes

    has_retry = any(getattr(r, "path", "") == "/tasks/{ref}/retry" for r in all_routes())
    repo, _ = make_repo(tmp_path)
    failing = write_agent(
        tmp_path / "agents", "fail.sh", "#!/bin/sh\necho 'cannot do it' >&2\nexit 3\n"
    )
    doc = base_settings(tmp_path, repo, **{"agents.analysis": failing, "workers.retries": 0})
    with serving_in_thread(settings_from_dict(doc)) as url:
        console = Console()
        page = new_page(browser, console)
        try:
            check_retry(page, url, tmp_path, has_retry, console)
        finally:
            page.context.close()  # before the server stops: no stream left open


def check_retry(page: Any, url: str, tmp_path: Path, has_retry: bool, console: Console) -> None:
    assert plane_state(url, "To Analyse", 1).json()["outcome"] == "started"
    page.goto(f"{url}/ui/tasks/PROJ-42")
    expect(page.locator("#stage")).to_contain_text("blocked", timeout=30_000)
    expect(page.locator("#jobs tr[data-status='failed']")).to_have_count(1)
    expect(page.locator("#log")).to_contain_text("cannot do it", timeout=20_000)
    page.reload()  # the buttons are drawn with the page
    retry = page.get_by_role("button", name="Retry blocked stage")
    if not has_retry:
        expect(retry).to_have_count(0)
        return
    retry.click()
    page.get_by_label("Admin token").fill(ADMIN)
    page.get_by_role("button", name="Send").click()
    expect(page.locator("#action-answer")).to_contain_text("RETRY_QUEUED")
    # The retried stage runs (and fails) again: a second failed job, live.
    expect(page.locator("#jobs tr[data-status='failed']")).to_have_count(2, timeout=30_000)
    server = Server(url, tmp_path)
    server.shot(page, "task-blocked")
    assert console.errors == []

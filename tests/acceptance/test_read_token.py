"""`server.read_token` through the real app: every read endpoint (JSON, HTML, SSE) wants
it, as a bearer token or `?token=`; health, readiness, metrics, static files, webhooks
and the admin-token endpoints are unchanged; no secret ever appears on a page."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import SECRET, running, wait_until

READ = "read-token-0123456789"
ADMIN = "adm-7f3c9a2e-secret"


@pytest.mark.timeout(120)
async def test_read_endpoints_need_the_read_token(tmp_path: Path) -> None:
    async with running(tmp_path, **{"server.read_token": READ, "server.admin_token": ADMIN}) as h:
        assert (await h.send("To Analyse")).status_code == 202  # webhooks: their own auth
        await wait_until(lambda: h.client.get("/tasks/PROJ-42", params={"token": READ}))
        guarded = (
            "/queue",
            "/tasks",
            "/tasks/PROJ-42",
            "/tasks/PROJ-42/logs",
            "/servers",
            "/ui",
            "/events",
        )
        for path in (*guarded, "/ui/tasks/PROJ-42", "/ui/tasks/PROJ-42/log"):
            refused = await h.client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "read token" in refused.json()["error"]
            wrong = await h.client.get(path, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401, path
            assert (await h.client.get(path, params={"token": "nope"})).status_code == 401
        for path in ("/queue", "/tasks", "/tasks/PROJ-42", "/servers", "/ui", "/ui/tasks/PROJ-42"):
            bearer = await h.client.get(path, headers={"Authorization": f"Bearer {READ}"})
            assert bearer.status_code == 200, path
            assert (await h.client.get(path, params={"token": READ})).status_code == 200, path
        # A browser asking for a page gets a page that says what to do (and holds no token).
        page = await h.client.get("/ui", headers={"Accept": "text/html"})
        assert page.status_code == 401 and page.headers["content-type"].startswith("text/html")
        assert "?token=" in page.text and READ not in page.text
        # Open: liveness, readiness, metrics, the API description, static files; `/`.
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/static/dashboard.js"):
            assert (await h.client.get(path)).status_code == 200, path
        assert (await h.client.get("/")).status_code == 307
        # The admin endpoint keeps its own token and does not want the read token.
        stop = await h.client.post("/tasks/PROJ-42/stop", headers={"X-Admin-Token": ADMIN})
        assert stop.status_code == 202 and stop.json()["status"] == "STOP_REQUESTED"


@pytest.mark.timeout(120)
async def test_without_a_read_token_reads_are_open_and_pages_hold_no_secret(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, **{"server.admin_token": ADMIN}) as h:
        assert (await h.send("To Analyse")).status_code == 202
        task = await wait_until(lambda: h.client.get("/tasks/PROJ-42"))
        assert task.status_code == 200
        await h.client.post("/tasks/PROJ-42/stop", headers={"X-Admin-Token": ADMIN})

        async def cancelled() -> bool:
            doc = (await h.client.get("/tasks/PROJ-42")).json()
            return doc["task"]["stage"] == "cancelled" and doc["stops"][0]["status"] == "done"

        await wait_until(cancelled, timeout=30)
        for path in ("/queue", "/ui", "/ui/tasks/PROJ-42", "/ui?part=live"):
            answer = await h.client.get(path)
            assert answer.status_code == 200, path
            for secret in (ADMIN, SECRET):
                assert secret not in answer.text, (path, secret)
        page = await h.client.get("/ui/tasks/PROJ-42")
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "cancelled_graceful" in page.text
        missing = await h.client.get("/ui/tasks/NOPE-1")
        assert missing.status_code == 404 and "No such task" in missing.text
        bad_job = await h.client.get("/ui/tasks/PROJ-42/log", params={"job": "x"})
        assert bad_job.status_code == 400


@pytest.mark.timeout(120)
def test_the_cli_reads_through_the_read_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`conveyor queue` / `tasks` send `CONVEYOR_READ_TOKEN` as a bearer token; without
    it they say what the server refused, in one line."""
    from bot.cli.main import main
    from bot.serve import serving_in_thread
    from bot.settings import settings_from_dict
    from tests.gitrepo import make_repo
    from tests.harness import base_settings

    repo, _ = make_repo(tmp_path)
    doc = base_settings(tmp_path, repo, **{"server.read_token": READ})
    cwd = tmp_path / "cwd"  # no conveyor.toml there: the CLI reads env only
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for var in ("CONVEYOR_CONFIG", "CONVEYOR_READ_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    with serving_in_thread(settings_from_dict(doc)) as url:
        monkeypatch.setenv("CONVEYOR_URL", url)
        assert main(["queue", "--json"]) == 1
        _, err = capsys.readouterr()
        assert "needs the read token" in err and len(err.strip().splitlines()) == 1
        monkeypatch.setenv("CONVEYOR_READ_TOKEN", READ)
        assert main(["queue", "--json"]) == 0
        out, _ = capsys.readouterr()
        assert '"tasks"' in out
        assert main(["tasks"]) == 0

"""``has_comment`` (the CommentLookup port that makes the stop's one comment idempotent)
for GitHub, Gitea, Linear and Jira, against each API's own list shape and paging (respx),
with a real client: the marker on a later page is found, no marker is False, and what
``comment`` posts is what the lookup finds."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from integrations.trackers.base import Notice, TicketRef, TrackerError
from integrations.trackers.gitea import GiteaSettings
from integrations.trackers.gitea import build as build_gitea
from integrations.trackers.github import GitHubSettings
from integrations.trackers.github import build as build_github
from integrations.trackers.jira import JiraSettings, JiraTracker
from integrations.trackers.linear import LinearSettings, LinearTracker

NOTICE = Notice("conveyor stopped app#42.", ("jobs cancelled: 1",), "", "conveyor:stop:s-1")
PERSON = {"id": 1, "body": "a person's comment <!-- conveyor:stop:s-0 -->"}


async def _noop(_: float) -> None:
    return None


async def test_github_follows_link_to_the_marker_on_page_two() -> None:
    ref = TicketRef("github", "acme/web-app", "acme/web-app#42", "app#42")
    path = "https://api.github.com/repos/acme/web-app/issues/42/comments"
    async with httpx.AsyncClient() as http:
        github = build_github(
            GitHubSettings(webhook_secret="s", token="t"), http, {"acme/web-app": "app"}
        )
        with respx.mock(assert_all_called=True) as router:
            post = router.post(path).respond(201, json={"id": 9})
            await github.comment(ref, NOTICE)
            posted = json.loads(post.calls.last.request.content)["body"]
            link = f'<{path}?per_page=100&page=2>; rel="next", <{path}?per_page=100&page=2>; rel="last"'
            pages = router.get(path).mock(
                side_effect=[
                    httpx.Response(200, json=[PERSON], headers={"Link": link}),
                    httpx.Response(200, json=[{"id": 9, "body": posted}]),
                ]
            )
            assert await github.has_comment(ref, NOTICE.marker) is True
            assert pages.calls[0].request.url.params["per_page"] == "100"
            assert pages.calls[1].request.url.params["page"] == "2"
            pages.side_effect = [httpx.Response(200, json=[PERSON])]
            assert await github.has_comment(ref, NOTICE.marker) is False
            pages.side_effect = [httpx.Response(200, json={"message": "no"})]
            with pytest.raises(TrackerError, match="not a list"):
                await github.has_comment(ref, NOTICE.marker)


async def test_gitea_reads_the_whole_list_in_one_request() -> None:
    ref = TicketRef("gitea", "acme/web-app", "acme/web-app#42", "app#42")
    path = "https://git.example.test/api/v1/repos/acme/web-app/issues/42/comments"
    settings = GiteaSettings(webhook_secret="s", token="t", base_url="https://git.example.test")
    async with httpx.AsyncClient() as http:
        gitea = build_gitea(settings, http, {"acme/web-app": "app"})
        with respx.mock() as router:
            post = router.post(path).respond(201, json={"id": 9})
            await gitea.comment(ref, NOTICE)
            posted = json.loads(post.calls.last.request.content)["body"]
            listed = router.get(path).respond(
                200, json=[PERSON, {"id": 9, "body": posted}], headers={"X-Total-Count": "2"}
            )
            assert await gitea.has_comment(ref, NOTICE.marker) is True
            assert listed.call_count == 1
            listed.respond(200, json=[PERSON], headers={"X-Total-Count": "1"})
            assert await gitea.has_comment(ref, NOTICE.marker) is False


def _linear_page(bodies: list[str], cursor: str | None) -> dict[str, Any]:
    info = {"hasNextPage": cursor is not None, "endCursor": cursor}
    nodes = [{"body": b} for b in bodies]
    return {"data": {"issue": {"comments": {"nodes": nodes, "pageInfo": info}}}}


async def test_linear_follows_the_comments_cursor_to_the_marker() -> None:
    ref = TicketRef("linear", "ENG", "b2e4f6a8-0c1d-4e3f-9a5b-7c9d1e3f5a7b", "ENG-123")
    url = "https://linear.example.test/graphql"
    settings = LinearSettings(api_key="k", api_url=url, webhook_secret="s")
    async with httpx.AsyncClient() as http:
        linear = LinearTracker(settings, http, {"ENG": "app"}, sleep=_noop)
        with respx.mock() as router:
            route = router.post(url).respond(
                200, json={"data": {"commentCreate": {"success": True, "comment": {"id": "c"}}}}
            )
            await linear.comment(ref, NOTICE)
            posted = json.loads(route.calls.last.request.content)["variables"]["input"]["body"]
            assert "<!--" not in posted and posted.endswith("`conveyor:stop:s-1`")
            route.side_effect = [
                httpx.Response(200, json=_linear_page(["hello"], "cursor-1")),
                httpx.Response(200, json=_linear_page([posted], None)),
            ]
            assert await linear.has_comment(ref, NOTICE.marker) is True
            asked = [json.loads(c.request.content) for c in route.calls[-2:]]
            assert [a["operationName"] for a in asked] == ["ConveyorComments"] * 2
            assert [a["variables"]["after"] for a in asked] == [None, "cursor-1"]
            assert asked[0]["variables"] == {"id": ref.issue_id, "first": 100, "after": None}
            route.side_effect = [httpx.Response(200, json=_linear_page(["hello"], None))]
            assert await linear.has_comment(ref, NOTICE.marker) is False
            route.side_effect = [httpx.Response(200, json=_linear_page([], "same"))] * 2
            with pytest.raises(TrackerError, match="did not advance"):
                await linear.has_comment(ref, NOTICE.marker)


def _jira_page(start: int, total: int, bodies: list[Any]) -> dict[str, Any]:
    comments = [{"id": str(10000 + start + i), "body": b} for i, b in enumerate(bodies)]
    return {"startAt": start, "maxResults": 100, "total": total, "comments": comments}


async def test_jira_pages_by_start_at_and_finds_the_marker_in_the_adf_body() -> None:
    ref = TicketRef("jira", "PROJ", "10042", "PROJ-42")
    path = "https://acme.atlassian.net/rest/api/3/issue/10042/comment"
    settings = JiraSettings(
        base_url="https://acme.atlassian.net",
        email="b@acme.test",
        api_token="t",
        webhook_secret="s",
    )
    person = {"type": "doc", "version": 1, "content": [{"type": "paragraph"}]}
    async with httpx.AsyncClient() as http:
        jira = JiraTracker(settings, http, {"PROJ": "app"}, sleep=_noop)
        with respx.mock() as router:
            post = router.post(path).respond(201, json={"id": "10031"})
            await jira.comment(ref, NOTICE)
            posted = json.loads(post.calls.last.request.content)["body"]
            pages = router.get(path).mock(
                side_effect=[
                    httpx.Response(200, json=_jira_page(0, 101, [person] * 100)),
                    httpx.Response(200, json=_jira_page(100, 101, [posted])),
                ]
            )
            assert await jira.has_comment(ref, NOTICE.marker) is True
            params = [dict(c.request.url.params) for c in pages.calls]
            assert params == [
                {"startAt": "0", "maxResults": "100", "orderBy": "-created"},
                {"startAt": "100", "maxResults": "100", "orderBy": "-created"},
            ]
            pages.side_effect = [httpx.Response(200, json=_jira_page(0, 1, [person]))]
            assert await jira.has_comment(ref, NOTICE.marker) is False
            pages.side_effect = [httpx.Response(200, json={"errorMessages": []})]
            with pytest.raises(TrackerError, match="no comments list"):
                await jira.has_comment(ref, NOTICE.marker)

"""The Plane adapter's `changed_since` (what a reconciliation pass lists) against a respx
stand-in that pages the way Plane's own API does.

Read from makeplane/plane (`apps/api/plane/utils/paginator.py`, `BasePaginator.paginate`
and `OffsetPaginator`): the cursor is `"<per_page>:<page>:<is_prev>"` (default
`"<per_page>:0:0"`); every answer carries `next_cursor` and `prev_cursor` as strings —
on the last page too, where `next_cursor` points past the end — and the booleans
`next_page_results` / `prev_page_results` say whether they lead anywhere; beside
`results` come `grouped_by`, `sub_grouped_by`, `total_count`, `count`, `total_pages`,
`total_results` and `extra_stats`. So a client must stop on `next_page_results`, never
on a missing cursor.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import respx

from integrations.trackers.base import TrackerError
from integrations.trackers.plane.settings import PlaneSettings
from integrations.trackers.plane.tracker import PlaneTracker

BASE_URL = "https://plane.example.test"
API_KEY = "plane_api_3b9f0c2e7a4d4b6e8f1a2c3d4e5f6a7b"
PROJECT = "5c7db7b1-1256-4e76-bfdc-fb3b34bf0180"
LIST_PATH = f"/api/v1/workspaces/acme/projects/{PROJECT}/work-items/"
NEWEST = datetime(2026, 12, 2, 10, 0, tzinfo=UTC)
IST = timezone(timedelta(hours=5, minutes=30))  # Plane writes the API user's offset
STATES = {
    "STOP": ("e14a6af2-d4b4-42dc-8e20-d57645086590", "cancelled"),
    "In Progress": ("5e2d6691-2878-4fe7-b8e1-d2ccb149c5cd", "started"),
}


def work_item(n: int, updated: datetime, state: str = "In Progress") -> dict[str, Any]:
    """A work item as the list renders it with ``expand=state``."""
    state_id, group = STATES[state]
    return {
        "id": f"00000000-0000-4000-8000-{n:012d}",
        "name": f"Ticket {n}",
        "sequence_id": n,
        "project": PROJECT,
        "state": {"id": state_id, "name": state, "color": "#f59e0b", "group": group},
        "labels": [],
        "assignees": [],
        "description_html": f"<p>Work item {n}</p>",
        "priority": "none",
        "created_at": "2026-11-01T09:00:00.000000Z",
        "updated_at": updated.astimezone(IST).isoformat(timespec="microseconds"),
        "deleted_at": None,
        "archived_at": None,
        "is_draft": False,
    }


class PlaneList:
    """Plane's work-item list: newest change first, paged like OffsetPaginator."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = sorted(
            items, key=lambda item: datetime.fromisoformat(item["updated_at"]), reverse=True
        )
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        per_page = int(request.url.params.get("per_page", "1000"))
        value, page, _ = request.url.params.get("cursor", f"{per_page}:0:0").split(":")
        assert int(value) == per_page  # the cursor Plane handed out is sent back as it was
        start = int(page) * per_page
        results = self.items[start : start + per_page]
        total = len(self.items)
        has_next = start + per_page < total
        return httpx.Response(
            200,
            json={
                "grouped_by": None,
                "sub_grouped_by": None,
                "total_count": total,
                "next_cursor": f"{per_page}:{int(page) + 1}:0",
                "prev_cursor": f"{per_page}:{int(page) - 1}:1",
                "next_page_results": has_next,
                "prev_page_results": int(page) > 0,
                "count": len(results),
                "total_pages": math.ceil(total / per_page) if total else 0,
                "total_results": total,
                "extra_stats": None,
                "results": results,
            },
        )


@pytest.fixture
def plane() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def tracker() -> AsyncIterator[PlaneTracker]:
    settings = PlaneSettings(
        webhook_secret="plane_wh_secret",
        base_url=BASE_URL,
        api_key=API_KEY,
        workspace="acme",
        project_identifiers={PROJECT: "PROJ"},
    )
    async with httpx.AsyncClient() as http:
        yield PlaneTracker(settings, http, {PROJECT: "app"})


def items_a_minute_apart(count: int) -> list[dict[str, Any]]:
    return [work_item(n, NEWEST - timedelta(minutes=n)) for n in range(1, count + 1)]


async def test_pages_by_cursor_until_the_items_are_older_than_the_watermark(
    plane: respx.MockRouter, tracker: PlaneTracker
) -> None:
    listing = PlaneList(items_a_minute_apart(250))
    plane.get(LIST_PATH).mock(side_effect=listing)

    since = NEWEST - timedelta(minutes=150)  # item 150 is on the second page
    changed = await tracker.changed_since(PROJECT, since)

    assert [t.ref.key for t in changed] == [f"PROJ-{n}" for n in range(1, 151)]
    assert all(t.updated_at is not None and t.updated_at >= since for t in changed)
    assert len(listing.requests) == 2  # the third page is never asked for
    first, second = (request.url.params for request in listing.requests)
    assert dict(first) == {"order_by": "-updated_at", "per_page": "100", "expand": "state"}
    assert second["cursor"] == "100:1:0"  # Plane's own next_cursor, sent back
    assert {r.headers["X-API-Key"] for r in listing.requests} == {API_KEY}


async def test_stops_on_next_page_results_not_on_a_missing_cursor(
    plane: respx.MockRouter, tracker: PlaneTracker
) -> None:
    listing = PlaneList(items_a_minute_apart(250))
    plane.get(LIST_PATH).mock(side_effect=listing)

    changed = await tracker.changed_since(PROJECT, NEWEST - timedelta(days=1))

    assert len(changed) == 250
    # The last answer still carries next_cursor "100:3:0"; following it would loop.
    assert [r.url.params.get("cursor") for r in listing.requests] == [None, "100:1:0", "100:2:0"]


async def test_offsets_are_compared_as_instants_and_states_come_expanded(
    plane: respx.MockRouter, tracker: PlaneTracker
) -> None:
    # 15:30+05:30 is 10:00Z: at the watermark exactly, so it is listed; a second older is not.
    items = [
        work_item(7, NEWEST, "STOP"),
        work_item(8, NEWEST - timedelta(seconds=1)),
    ]
    assert items[0]["updated_at"] == "2026-12-02T15:30:00.000000+05:30"
    plane.get(LIST_PATH).mock(side_effect=PlaneList(items))

    changed = await tracker.changed_since(PROJECT, NEWEST)

    assert [(t.ref.key, t.state, t.signal) for t in changed] == [("PROJ-7", "STOP", "stop")]
    assert changed[0].updated_at == NEWEST and changed[0].ref.issue_id == items[0]["id"]
    assert changed[0].description == "Work item 7"


async def test_an_empty_project_is_one_request(
    plane: respx.MockRouter, tracker: PlaneTracker
) -> None:
    listing = PlaneList([])
    plane.get(LIST_PATH).mock(side_effect=listing)
    assert await tracker.changed_since(PROJECT, NEWEST) == []
    assert len(listing.requests) == 1


async def test_a_rate_limit_on_a_later_page_is_an_error_never_a_short_list(
    plane: respx.MockRouter, tracker: PlaneTracker
) -> None:
    listing = PlaneList(items_a_minute_apart(250))
    limited = httpx.Response(429, headers={"Retry-After": "120"}, json={"error": "throttled"})
    plane.get(LIST_PATH).mock(side_effect=lambda r: listing(r) if not listing.requests else limited)
    with pytest.raises(TrackerError) as raised:
        await tracker.changed_since(PROJECT, NEWEST - timedelta(days=1))
    assert raised.value.status == 429 and raised.value.retry_after == 120.0

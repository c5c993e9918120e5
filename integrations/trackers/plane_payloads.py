"""Plane v1 webhook bodies as Plane's open-source sender makes them: for `conveyor send
plane`, the demo, tests and benchmarks. The counterpart of `plane.parse_event`."""

from __future__ import annotations

import uuid
from typing import Any

# The workspace `build_v1_payload` puts events in unless told otherwise (demo, CLI).
DEMO_WORKSPACE_ID = "10c432d6-07c8-43c2-babc-92fdaed0485b"

_STATE_COLORS = {
    "backlog": "#60646c",
    "unstarted": "#60646c",
    "started": "#f59e0b",
    "completed": "#46a758",
    "cancelled": "#ef4444",
    "triage": "#4e5355",
}


def build_v1_payload(
    *,
    issue_id: str,
    project_id: str,
    sequence_id: int,
    title: str,
    state_id: str,
    state_name: str,
    state_group: str,
    old_state_id: str | None,
    actor_id: str,
    actor_name: str,
    updated_at: str,
    workspace_id: str = DEMO_WORKSPACE_ID,
    field: str = "state_id",
) -> dict[str, Any]:
    """A state-change delivery shaped like Plane's open-source sender (``webhook_send_task``).

    Plane signs and sends ``json.dumps(payload).encode()``; do the same to mimic it.
    """
    actor = {
        "id": actor_id,
        "first_name": actor_name,
        "last_name": "",
        "email": f"{actor_name}@example.com",
        "avatar": "",
        "avatar_url": None,
        "display_name": actor_name,
    }
    return {
        "event": "issue",
        "action": "updated",
        "webhook_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:plane:{workspace_id}")),
        "workspace_id": workspace_id,
        "data": _v1_issue_data(
            issue_id=issue_id,
            project_id=project_id,
            workspace_id=workspace_id,
            sequence_id=sequence_id,
            title=title,
            state={
                "id": state_id,
                "name": state_name,
                "color": _STATE_COLORS.get(state_group, "#60646c"),
                "group": state_group,
            },
            actor_id=actor_id,
            updated_at=updated_at,
        ),
        "activity": {
            "field": field,
            "new_value": state_id,
            "old_value": old_state_id,
            "actor": actor,
            "old_identifier": None,
            "new_identifier": None,
        },
    }


def _v1_issue_data(
    *,
    issue_id: str,
    project_id: str,
    workspace_id: str,
    sequence_id: int,
    title: str,
    state: dict[str, str],
    actor_id: str,
    updated_at: str,
) -> dict[str, Any]:
    """``data`` as Plane's IssueExpandSerializer renders a work item."""
    return {
        "id": issue_id,
        "cycle": None,
        "module": None,
        "labels": [],
        "assignees": [],
        "state": state,
        "description": {},
        "created_at": updated_at,
        "updated_at": updated_at,
        "deleted_at": None,
        "point": None,
        "name": title,
        "description_html": "<p></p>",
        "priority": "none",
        "start_date": None,
        "target_date": None,
        "sequence_id": sequence_id,
        "sort_order": 65535.0,
        "completed_at": None,
        "archived_at": None,
        "is_draft": False,
        "external_source": None,
        "external_id": None,
        "created_by": actor_id,
        "updated_by": actor_id,
        "project": project_id,
        "workspace": workspace_id,
        "parent": None,
        "estimate_point": None,
        "type": None,
    }

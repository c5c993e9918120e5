"""Fixtures of the integration tests that need more than a store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.services import Services
from tests.integration import stopplane


@pytest.fixture
async def svc(tmp_path: Path, db_url: str) -> AsyncIterator[Services]:
    """The stop plane's services by hand (tests/integration/stopplane.py), on both databases."""
    async for services in stopplane.services(tmp_path, db_url):
        yield services

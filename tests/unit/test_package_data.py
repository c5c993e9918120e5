"""The dashboard's templates and static files are package data, so that a non-editable
install (a wheel) serves the same pages as a checkout."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_template_and_static_file_is_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["bot"]
    files = [
        path.relative_to(ROOT / "bot").as_posix()
        for folder in ("ui/templates", "ui/static")
        for path in (ROOT / "bot" / folder).rglob("*")
        if path.is_file()
    ]
    assert any(name.endswith(".html") for name in files)
    assert any(name.endswith(".js") for name in files)
    missing = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert missing == []
    assert all("/" not in f.removeprefix("ui/templates/").removeprefix("ui/static/") for f in files)

"""Settings: defaults, file, env overrides, secrets, and one readable line per bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bot.cli.main import main
from bot.errors import ConfigError
from bot.settings import ENV_OVERRIDES, load_settings

ROOT = Path(__file__).resolve().parents[2]


def empty_config(tmp_path: Path) -> Path:
    """A config file with nothing in it: the defaults, whatever ./conveyor.toml says."""
    path = tmp_path / "empty.toml"
    path.write_text("")
    return path


def test_defaults_match_the_design(tmp_path: Path) -> None:
    s = load_settings(env={}, path=empty_config(tmp_path))
    assert (s.server.host, s.server.port) == ("127.0.0.1", 8080)
    assert s.server.database_url == "sqlite:///.conveyor/conveyor.db"
    assert (s.workers.concurrency, s.workers.max_runtime_seconds, s.workers.retries) == (2, 3600, 2)
    assert (s.stop.enabled, s.stop.repos, s.stop.grace_seconds) == (True, [], 10)
    assert s.stop.finalizer_interval_seconds == 5
    assert s.trackers.plane.start_states == ["To Analyse"]
    assert s.trackers.plane.stop_states == ["STOP"]
    assert s.trackers.plane.confirm_deploy_states == ["Confirm Deploy"]


def test_file_then_env_override(tmp_path: Path) -> None:
    cfg = tmp_path / "conveyor.toml"
    cfg.write_text(
        '[stop]\ngrace_seconds = 3\nrepos = ["app"]\n'
        '[[repos]]\nname = "app"\npath = "/srv/app"\nprotected_branches = ["release/*"]\n'
    )
    env = {
        "CONVEYOR_CONFIG": str(cfg),
        "CONVEYOR_STOP_GRACE_SECONDS": "7",
        "CONVEYOR_STOP_STATUS_ENABLED": "false",
        "CONVEYOR_STOP_STATUS_REPOS": "app, web",
    }
    s = load_settings(env=env)
    assert s.stop.grace_seconds == 7 and s.stop.enabled is False
    assert s.stop.repos == ["app", "web"]
    assert s.repos[0].protected_branches == ["release/*"]


def test_every_env_var_is_documented_in_env_example() -> None:
    example = (ROOT / ".env.example").read_text()
    for var in [*ENV_OVERRIDES, "CONVEYOR_CONFIG"]:
        assert var in example, var


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    env = {
        "CONVEYOR_ADMIN_TOKEN": "tok-123-0123456789",
        "CONVEYOR_PLANE_WEBHOOK_SECRET": "plane_wh_abc0123456789",
        "CONVEYOR_PLANE_API_KEY": "key-xyz",
        "CONVEYOR_DATABASE_URL": "postgresql://u:pw-secret@h/db",
    }
    text = repr(load_settings(env=env, path=empty_config(tmp_path)))
    for secret in ("tok-123", "plane_wh_abc", "key-xyz", "pw-secret"):  # nor a part of one
        assert secret not in text


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CONVEYOR_STOP_GRACE_SECONDS": "ten"},
            "stop.grace_seconds must be a number from 1 to 600, got 'ten'",
        ),
        (
            {"CONVEYOR_STOP_GRACE_SECONDS": "0"},
            "stop.grace_seconds must be a number from 1 to 600, got '0'",
        ),
        (
            {"CONVEYOR_WORKERS_CONCURRENCY": "many"},
            "workers.concurrency must be an integer from 1 to 64, got 'many'",
        ),
        (
            {"CONVEYOR_STOP_STATUS_ENABLED": "perhaps"},
            "stop.enabled must be true or false, got 'perhaps'",
        ),
        ({"CONVEYOR_LOG_FORMAT": "xml"}, "server.log_format must be one of 'text' or 'json'"),
    ],
)
def test_bad_setting_is_one_readable_line(
    env: dict[str, str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env, path=empty_config(tmp_path))
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_unknown_key_and_bad_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[stop]\ngrace = 3\n")
    with pytest.raises(ConfigError, match="stop.grace is not a known setting"):
        load_settings(env={}, path=cfg)
    cfg.write_text("[stop\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(env={}, path=cfg)


def test_missing_config_named_by_env_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(env={"CONVEYOR_CONFIG": str(tmp_path / "nope.toml")})


def test_missing_config_named_by_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, path=tmp_path / "nope.toml")
    assert (
        str(info.value)
        == f"{tmp_path / 'nope.toml'} does not exist (named by --config); check the path"
    )


def test_cli_bad_setting_exits_2_with_one_line(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "CONVEYOR_STOP_GRACE_SECONDS": "ten", "HOME": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "bot.cli.main", "serve"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "conveyor: stop.grace_seconds must be a number from 1 to 600, got 'ten'"
    )
    assert "Traceback" not in proc.stderr


def test_cli_main_returns_2(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVEYOR_PORT", "99999")
    assert main(["db", "upgrade"]) == 2
    assert "server.port must be an integer from 1 to 65535, got '99999'" in capsys.readouterr().err

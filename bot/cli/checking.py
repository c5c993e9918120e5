"""`conveyor check [--online]`: the findings, one line each (or JSON); exit 2 on a problem."""

from __future__ import annotations

from bot import check
from bot.cli.output import print_json
from bot.settings import Settings

EXIT_PROBLEM = 2
ALL_GOOD = "ok: configuration, data directory, database and {repos} checked{online}"


def run(settings: Settings, *, online: bool, as_json: bool) -> int:
    findings = check.offline(settings)
    if (db := check.database_finding(settings.server.database_url)) is not None:
        findings.append(db)
    if online:
        findings += check.online(settings)
    findings = check.dedupe(findings)
    bad = bool(check.problems(findings))
    if as_json:
        print_json({"ok": not bad, "findings": [f.as_json() for f in findings]})
    else:
        for finding in findings:
            print(finding.line())
        if not bad:
            repos = f"{len(settings.repos)} repo{'s' if len(settings.repos) != 1 else ''}"
            print(ALL_GOOD.format(repos=repos, online=" (online too)" if online else ""))
    return EXIT_PROBLEM if bad else 0

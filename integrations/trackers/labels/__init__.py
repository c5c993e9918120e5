"""What GitHub and Gitea/Forgejo share: issues whose "state" is their labels.

Both forges send an issue in nearly the same JSON shape (``number``, ``title``, ``body``,
``html_url``, ``labels[].name``, ``state``, ``updated_at``, ``pull_request``), both name
the repository ``owner/name`` and both sign with HMAC-SHA256 over the raw body. These
modules read those shared parts without I/O: ``rules`` (settings and what labels mean),
``delivery`` (headers, body, signature), ``fields`` (bounded, checked values) and
``issues`` (identity and the ticket). ``github/`` and ``gitea/`` decide what each forge's
actions mean. Facts: TRACKERS.md (GitHub, Gitea / Forgejo).
"""

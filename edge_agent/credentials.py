"""Credential files as systemd hands them over: one rule for every secret of the config.

A relative path is taken inside `$CREDENTIALS_DIRECTORY` (systemd's `LoadCredential=`),
an absolute one as is, so the MQTT password and an OPC UA user's password mean the
same thing wherever they are configured.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from edge_agent.errors import AgentError


class CredentialFileError(AgentError):
    """A credential file cannot be found, read or is empty: an operator must fix it."""


def resolve_path(configured: str, environ: Mapping[str, str] = os.environ) -> Path:
    """An absolute path as is; a relative one inside systemd's $CREDENTIALS_DIRECTORY."""
    path = Path(configured)
    if path.is_absolute():
        return path
    directory = environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        raise CredentialFileError(
            f"{configured!r} is a relative path, taken inside $CREDENTIALS_DIRECTORY, which is "
            "not set: give an absolute path, or start the agent from systemd with LoadCredential="
        )
    return Path(directory) / path


def read_secret(configured: str) -> str:
    """The first line of a credential file (a user name or a password), without its newline."""
    path = resolve_path(configured)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialFileError(f"cannot read the credential file {path}: {exc}") from None
    if not lines or not lines[0]:
        raise CredentialFileError(f"the credential file {path} is empty")
    return lines[0]

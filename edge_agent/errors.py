"""The agent's error tree: every error says what went wrong and how to recover."""

from __future__ import annotations


class AgentError(Exception):
    """Base of the errors the agent raises on purpose."""


class ConfigError(AgentError):
    """A config file was refused; `problems` has one line per error, with file:line:column."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ConfigFileMissing(AgentError):
    """A config file named on the command line does not exist or cannot be read."""


class StoreError(AgentError):
    """The local store cannot be used; the message says why and what to do."""

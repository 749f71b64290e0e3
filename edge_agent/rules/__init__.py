"""The rules stage: samples in, readings and alarm events out. Pure: no I/O, no asyncio."""

from edge_agent.rules.judge import TagRules
from edge_agent.rules.limits import LimitJudge

__all__ = ["LimitJudge", "TagRules"]

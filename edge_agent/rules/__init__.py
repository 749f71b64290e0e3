"""The rules stage: samples in, readings, alarm events and statistics out. Pure: no I/O.

docs/alarms.md tells what each rule does, with its inputs and defaults.
"""

from edge_agent.rules.alarms import AlarmBook
from edge_agent.rules.comm import CommJudge
from edge_agent.rules.judge import TagRules

__all__ = ["AlarmBook", "CommJudge", "TagRules"]

"""The rules stage: samples in, readings, alarm events and statistics out. Pure: no I/O.

docs/alarms.md tells what each rule does, with its inputs and defaults.
"""

from edge_agent.rules.alarms import AlarmBook, new_alarm_id
from edge_agent.rules.comm import CommJudge
from edge_agent.rules.judge import TagRules
from edge_agent.rules.limits import LimitJudge

__all__ = ["AlarmBook", "CommJudge", "LimitJudge", "TagRules", "new_alarm_id"]

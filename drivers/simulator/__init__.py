"""A simulated plant for tests and the demo: scenario files served as Modbus TCP devices.

`load_scenario` reads a scenario file (see `scenario`), `start_simulator` serves
one in the running event loop, `run_simulator` serves a file until cancelled.
"""

from edge_agent.drivers.simulator.modbus_server import Simulator, run_simulator, start_simulator
from edge_agent.drivers.simulator.scenario import Scenario, load_scenario

__all__ = ["Scenario", "Simulator", "load_scenario", "run_simulator", "start_simulator"]

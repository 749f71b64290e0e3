"""Serve a scenario as Modbus devices, one pymodbus server per device.

- Transports: `tcp` and `rtu-over-tcp` listen on 127.0.0.1; `rtu` serves RTU
  frames on a pseudo-terminal: two pty pairs joined by a relay in the event
  loop, the server on one end and the agent's path (`Simulator.serial_port`)
  on the other. A pty carries frames, not baud rate, parity or inter-frame
  timing: those only a real line shows.
- A silent unit (`silent: true`), and on `rtu` any unknown unit id, never
  answers; a unit with `delay` answers that much later (keep it below the
  agent's timeout: pymodbus' server answers an overtaken request with the
  newer request's transaction id); `drop_every: N` closes every connection
  upon each N-th request, before answering it.

- Values are computed when a request is served, from the scenario's functions
  of t (seconds since the simulator started): no update task, nothing drifts.
- An address that no point covers, or that the scenario lists in
  `exception_addresses`, makes the whole request answer exception 2; a count
  over 125 registers or 2000 bits answers exception 3; an unknown unit id 0x0B.
  Writes answer exception 1: the simulated plant is read-only.
- Every request's function code is logged per device (`function_codes`) from
  pymodbus' trace_pdu hook, before the request is handled, so a test can prove
  what an agent sent. Codes pymodbus cannot decode never reach that hook (the
  server answers them with exception 1).
- A device maps unit ids to address spaces: a gateway or a serial bus of
  several units is one device with `units`.

pymodbus 3.16 has no public hook for values computed per request (its
SimDevice `action` sees register counts, not bit counts, for coils), so
`_PlantCore` replaces the server's datastore object after construction: the one
place this module reaches into pymodbus internals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
import tty
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.simulator.simcore import SimCore

from drivers.modbus.codec import BIT_AREAS, Area, parse_address
from drivers.simulator.scenario import Device, Scenario, Unit, load_scenario

HOST = "127.0.0.1"

_AREA_BY_CODE: dict[int, Area] = {1: "co", 2: "di", 3: "hr", 4: "ir"}
_MAX_COUNT = {"co": 2000, "di": 2000, "hr": 125, "ir": 125}

__all__ = ["HOST", "Simulator", "load_scenario", "run_simulator", "start_simulator"]


class _UnitSpace:
    """One unit id's address space: which point word sits at each address."""

    def __init__(self, spec: Unit) -> None:
        points, exception_addresses = spec.points, spec.exception_addresses
        self.delay = spec.delay
        self.silent = spec.silent
        self._points = points
        self._cells: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
        for index, point in enumerate(points):
            address = point.parsed_address
            for word in range(point.width):
                self._cells[address.area][address.offset + word] = (index, word)
        self._refused: dict[str, set[int]] = defaultdict(set)
        for text in exception_addresses:
            refused = parse_address(text)
            self._refused[refused.area].add(refused.offset)
        self._ignored: dict[str, set[int]] = defaultdict(set)
        for text in spec.silent_addresses:
            ignored = parse_address(text)
            self._ignored[ignored.area].add(ignored.offset)

    def ignores(self, area: Area, address: int, count: int) -> bool:
        """True when the read touches a silent address: it gets no answer."""
        ignored = self._ignored[area]
        return bool(ignored) and any(a in ignored for a in range(address, address + count))

    def read(
        self, area: Area, address: int, count: int, t: float
    ) -> list[int] | list[bool] | ExcCodes:
        cells, refused = self._cells[area], self._refused[area]
        words: dict[int, list[int] | list[bool]] = {}
        out: list[int | bool] = []
        for offset in range(address, address + count):
            cell = cells.get(offset)
            if cell is None or offset in refused:
                return ExcCodes.ILLEGAL_ADDRESS
            index, word = cell
            if index not in words:
                words[index] = self._points[index].words(t)
            out.append(words[index][word])
        if area in BIT_AREAS:
            return [bool(v) for v in out]
        return [int(v) for v in out]


class _PlantCore(SimCore):
    """The datastore pymodbus' request handler calls; see the module docstring."""

    def __init__(
        self, units: Mapping[int, _UnitSpace], clock: Callable[[], float], serial: bool
    ) -> None:
        # SimCore.__init__ builds pymodbus' own register memory, which this class replaces.
        self._units = dict(units)
        self._clock = clock
        self._serial = serial
        self.answering = asyncio.Event()
        self.answering.set()

    def device_ids(self) -> list[int]:
        return list(self._units)

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        await self.answering.wait()
        unit = self._units.get(device_id)
        if unit is None and not self._serial:
            return ExcCodes.GATEWAY_NO_RESPONSE
        if unit is None or unit.silent:
            # The server (ignore_missing_devices) then sends nothing at all.
            raise NoSuchIdException(f"unit {device_id} is silent")
        if unit.delay:
            await asyncio.sleep(unit.delay)
        area = _AREA_BY_CODE.get(func_code)
        if area is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if not 1 <= count <= _MAX_COUNT[area]:
            return ExcCodes.ILLEGAL_VALUE
        if unit.ignores(area, address, count):
            raise NoSuchIdException(f"unit {device_id} ignores {area}:{address}+{count}")
        return unit.read(area, address, count, self._clock())

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION


class _PtyBridge:
    """Two pseudo-terminal pairs joined in the event loop: a null-modem cable.

    The server opens `server_path`, the agent `client_path`; the slave ends are
    held open here too, so either side may close and reopen its end.
    """

    def __init__(self) -> None:
        self._fds: list[int] = []
        (m1, s1), (m2, s2) = os.openpty(), os.openpty()
        self._fds = [m1, s1, m2, s2]
        for fd in (s1, s2):
            tty.setraw(fd)
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        self.client_path, self.server_path = os.ttyname(s1), os.ttyname(s2)
        loop = asyncio.get_running_loop()
        loop.add_reader(m1, self._copy, m1, m2)
        loop.add_reader(m2, self._copy, m2, m1)
        self._masters = (m1, m2)

    @staticmethod
    def _copy(source: int, target: int) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            data = os.read(source, 4096)
            if data:
                os.write(target, data)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._masters:
            loop.remove_reader(fd)
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


class _DeviceServer:
    """One simulated device: its address spaces, its log, and its (restartable) server."""

    def __init__(self, spec: Device, port: int, clock: Callable[[], float]) -> None:
        self.spec = spec
        self.port = port
        self.function_codes: list[int] = []
        self.requests: dict[int, int] = defaultdict(int)
        self.unit_sequence: list[int] = []
        self.connections = 0
        serial = spec.transport == "rtu"
        self.core = _PlantCore({u.unit: _UnitSpace(u) for u in spec.all_units}, clock, serial)
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._bridge: _PtyBridge | None = _PtyBridge() if serial else None
        self._seen = 0

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def serial_port(self) -> str | None:
        return None if self._bridge is None else self._bridge.client_path

    async def start(self) -> None:
        # pymodbus insists on a SimDevice here; _PlantCore replaces it below.
        placeholder = SimDevice(0, simdata=SimData(0, datatype=DataType.REGISTERS))
        server: ModbusTcpServer | ModbusSerialServer
        if self._bridge is not None:
            server = ModbusSerialServer(
                placeholder,
                framer=FramerType.RTU,
                port=self._bridge.server_path,
                ignore_missing_devices=True,
                trace_pdu=self._trace_pdu,
                trace_connect=self._trace_connect,
            )
        else:
            framer = FramerType.RTU if self.spec.transport == "rtu-over-tcp" else FramerType.SOCKET
            server = ModbusTcpServer(
                placeholder,
                framer=framer,
                address=(HOST, self.port),
                ignore_missing_devices=True,
                trace_pdu=self._trace_pdu,
                trace_connect=self._trace_connect,
            )
        server.context = self.core
        try:
            await server.serve_forever(background=True)
        except RuntimeError:
            raise OSError(
                f"simulated device {self.spec.name}: cannot listen on {HOST}:{self.port}"
            ) from None
        if self._bridge is None:
            self.port = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]  # a listener's transport is an asyncio.Server
        self._server = server

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated

    def close_bridge(self) -> None:
        if self._bridge is not None:
            self._bridge.close()
            self._bridge = None

    def drop_connections(self) -> None:
        """Close every open connection (TCP only), as a device that resets its sockets."""
        server = self._server
        if server is None:
            return
        for connection in list(server.active_connections.values()):
            connection.close()

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.function_codes.append(pdu.function_code)
            self.requests[pdu.dev_id] += 1
            self.unit_sequence.append(pdu.dev_id)
            self._seen += 1
            every = self.spec.drop_every
            if every and self._seen % every == 0:
                asyncio.get_running_loop().call_soon(self.drop_connections)
        return pdu

    def _trace_connect(self, connected: bool) -> None:
        if connected:
            self.connections += 1


class Simulator:
    """A running scenario. Build it with `start_simulator`; `close()` it when done."""

    def __init__(self, devices: dict[str, _DeviceServer]) -> None:
        self._devices = devices

    @property
    def ports(self) -> dict[str, int]:
        """The bound port of each device, by name."""
        return {name: device.port for name, device in self._devices.items()}

    def function_codes(self, device: str) -> list[int]:
        """Every function code the device received, in order (a copy)."""
        return list(self._devices[device].function_codes)

    def serial_port(self, device: str) -> str:
        """The pseudo-terminal an agent opens to reach an `rtu` device."""
        path = self._devices[device].serial_port
        if path is None:
            raise ValueError(f"device {device} is not an rtu device")
        return path

    def requests_by_unit(self, device: str) -> dict[int, int]:
        """How many requests each unit id of the device received."""
        return dict(self._devices[device].requests)

    def unit_sequence(self, device: str) -> list[int]:
        """The unit id of every request the device received, in order."""
        return list(self._devices[device].unit_sequence)

    def drop_connections(self, device: str) -> None:
        """Close the device's open TCP connections now; it keeps listening."""
        self._devices[device].drop_connections()

    def connections(self, device: str) -> int:
        """How many TCP connections the device has accepted."""
        return self._devices[device].connections

    def hang_device(self, name: str, hung: bool = True) -> None:
        """Keep accepting connections and requests but answer none (a hung PLC), or resume."""
        answering = self._devices[name].core.answering
        if hung:
            answering.clear()
        else:
            answering.set()

    async def stop_device(self, name: str) -> None:
        """Close the device's listener and its connections, as if it lost power."""
        await self._devices[name].stop()

    async def start_device(self, name: str) -> None:
        """Serve a stopped device again on the same port; t keeps running."""
        device = self._devices[name]
        if not device.running:
            await device.start()

    async def close(self) -> None:
        for device in self._devices.values():
            device.core.answering.set()
            await device.stop()
            device.close_bridge()

    async def __aenter__(self) -> Simulator:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


async def start_simulator(scenario: Scenario, ports: dict[str, int] | None = None) -> Simulator:
    """Serve every device of `scenario`; `ports` overrides ports by device name (0 = any free)."""
    unknown = set(ports or {}) - {d.name for d in scenario.devices}
    if unknown:
        raise ValueError(f"no device named {', '.join(sorted(unknown))} in the scenario")
    started = time.monotonic()

    def clock() -> float:
        return time.monotonic() - started

    devices: dict[str, _DeviceServer] = {}
    simulator = Simulator(devices)
    try:
        for spec in scenario.devices:
            port = (ports or {}).get(spec.name, spec.port)
            devices[spec.name] = _DeviceServer(spec, port, clock)
            await devices[spec.name].start()
    except BaseException:
        await simulator.close()
        raise
    return simulator


async def run_simulator(source: Scenario | str | Path, ports: dict[str, int] | None = None) -> None:
    """Serve a scenario (or the scenario file at `source`) until cancelled.

    Prints one line per device once every device listens, then flushes stdout:
    `simulating NAME on 127.0.0.1:PORT unit UNIT`.
    """
    scenario = source if isinstance(source, Scenario) else load_scenario(source)
    simulator = await start_simulator(scenario, ports)
    try:
        for spec in scenario.devices:
            units = ",".join(str(u.unit) for u in spec.all_units)
            if spec.transport == "rtu":
                where = simulator.serial_port(spec.name)
            else:
                where = f"{HOST}:{simulator.ports[spec.name]}"
            print(f"simulating {spec.name} on {where} unit {units}")
        sys.stdout.flush()
        await asyncio.Event().wait()
    finally:
        await simulator.close()

"""pymodbus' Modbus servers, answering each request with that request's own ids.

pymodbus 3.16's request handler (pymodbus/server/requesthandler.py) decodes a
request into `self.last_pdu`, schedules `handle_request`, and after awaiting
the datastore reads `self.last_pdu` again for the answer's transaction id and
unit id. So an answer that comes late goes out with the ids of whatever
request arrived on the connection meanwhile, which no real device does. The
handler also decodes only one frame per read from the socket, and its
transport's `send` drops input received but not yet decoded.

`Connection` replaces that handler: it takes each request as it is decoded,
hands it to the device (`Plant`), answers it from that copy in its own task,
and keeps undecoded input. `TcpServer` and `SerialServer` create it through
the servers' own factory, `callback_new_connection`. This module is the one
place the simulator relies on pymodbus internals: the handler's `last_pdu` and
`last_addr` as `callback_data` leaves them, its `handle_later` hook, and the
transport's `recv_buffer`. Check them when pymodbus is upgraded (the pin is
on the minor version).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler


class Plant(Protocol):
    """What a connection needs of its simulated device."""

    def connected(self) -> int:
        """Log a new connection; its number."""

    def received(self, connection: int, request: ModbusPDU) -> None:
        """Log a request as it is decoded, before any answer."""

    def answer_later(self, answer: Coroutine[Any, Any, None]) -> None:
        """Run one answer in its own task."""

    async def respond(self, request: ModbusPDU) -> ModbusPDU | None:
        """The answer to a request (its ids not yet set), or None for no answer."""


class Connection(ServerRequestHandler):
    """One connection to a simulated device; see the module docstring."""

    def __init__(self, server: ModbusTcpServer | ModbusSerialServer, plant: Plant) -> None:
        # No trace hooks: the plant logs each request itself, with its connection.
        super().__init__(server, None, None, None)  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated
        self._plant = plant
        self.number = 0

    def callback_connected(self) -> None:
        super().callback_connected()
        self.number = self._plant.connected()

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        used = 0
        while used < len(data):
            cut = super().callback_data(data[used:], addr)
            if not cut:
                break
            used += cut
            request = self.last_pdu
            if request is not None:
                self._plant.received(self.number, request)
                self._plant.answer_later(self._answer(request, self.last_addr))
        return used

    def handle_later(self) -> None:
        """Nothing: `callback_data` has started the answer already, from its own copy."""

    def send(self, data: bytes, addr: tuple[Any, ...] | None = None) -> None:
        kept = self.recv_buffer  # a client clears stale input before it asks; a server must not
        super().send(data, addr)
        self.recv_buffer = kept

    async def _answer(self, request: ModbusPDU, addr: tuple[Any, ...] | None) -> None:
        response = await self._plant.respond(request)
        if response is None or not self.is_active():
            return  # no answer, or the connection closed meanwhile
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        self.pdu_send(response, addr=addr)


class TcpServer(ModbusTcpServer):
    """pymodbus' TCP server; set `plant` before it serves."""

    plant: Plant

    def callback_new_connection(self) -> Connection:
        return Connection(self, self.plant)


class SerialServer(ModbusSerialServer):
    """pymodbus' serial server; set `plant` before it serves."""

    plant: Plant

    def callback_new_connection(self) -> Connection:
        return Connection(self, self.plant)

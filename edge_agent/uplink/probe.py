"""Does a broker that would not answer an MQTT 5 CONNECT answer an MQTT 3.1.1 one?

A broker that speaks MQTT 3.1.1 only (RabbitMQ 3.x) closes the connection on
an MQTT 5 CONNECT without a CONNACK, which by itself looks like any other
dropped connection. One 3.1.1 CONNECT tells them apart: any CONNACK to it,
even one refusing the credentials, proves the broker speaks 3.1.1. The probe
connects without credentials and with an empty client id (the broker assigns
one), so it can never take the gateway's session over.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

CONNECT_3_1_1 = bytes(
    [0x10, 12, 0, 4, *b"MQTT", 4, 0x02, 0, 10, 0, 0]
)  # CONNECT: protocol "MQTT" level 4, clean session, keep-alive 10 s, empty client id
CONNACK = 0x20
DISCONNECT = bytes([0xE0, 0])


async def answers_3_1_1(
    host: str, port: int, context: ssl.SSLContext | None, timeout_s: float
) -> bool:
    """True when the broker answers an MQTT 3.1.1 CONNECT with a CONNACK within `timeout_s`."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(
                host, port, ssl=context, server_hostname=host if context else None
            )
            writer.write(CONNECT_3_1_1)
            await writer.drain()
            answer = await reader.readexactly(2)
            writer.write(DISCONNECT)
            await writer.drain()
            return answer[0] == CONNACK
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return False
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

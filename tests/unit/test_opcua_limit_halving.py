"""A call cut to the server's limits: a piece refused for its count or its size is halved."""

from __future__ import annotations

import pytest
from asyncua import ua

from edge_agent.drivers.opcua.limits import TOO_LARGE, Call, Limits
from edge_agent.drivers.opcua.quality import status_name

REFUSED_FOR_SIZE = [pytest.param(code, id=status_name(code)) for code in sorted(TOO_LARGE)]


@pytest.mark.parametrize(
    "code",
    [*REFUSED_FOR_SIZE, pytest.param(ua.StatusCodes.BadTooManyOperations, id="count")],
)
async def test_a_refused_piece_is_sent_again_in_halves_and_the_size_kept(code: int) -> None:
    """The server takes 3 operations at most: 10 are sent as 5, then in twos, in order."""
    sent: list[int] = []

    async def send(piece: list[int]) -> list[int]:
        sent.append(len(piece))
        if len(piece) > 3:
            raise ua.UaStatusCodeError(code)
        return [operation * 10 for operation in piece]

    limits = Limits()
    assert await limits.chunked(Call.READ, range(10), send) == [i * 10 for i in range(10)]
    assert sent == [10, 5, 2, 2, 2, 2, 2]
    assert limits.learned == {Call.READ: 2}


async def test_a_single_operation_refused_for_its_size_fails_the_call() -> None:
    """Nothing smaller can be sent: the answer is the caller's (the tag's node is too big)."""

    async def send(piece: list[int]) -> list[int]:
        raise ua.UaStatusCodeError(ua.StatusCodes.BadResponseTooLarge)

    with pytest.raises(ua.UaStatusCodeError):
        await Limits().chunked(Call.READ, [1], send)

"""SendBudget's rules on stand-in transports whose write buffers the test sets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tickerd.transport.budget import FRESH_WRITE_BYTES, SendBudget


class Transport:
    """What the budget reads of a transport: its buffer, whether it closes, abort()."""

    def __init__(self, ip: str, unsent: int = 0) -> None:
        self.ip = ip
        self.unsent = unsent
        self.aborted = False

    def get_write_buffer_size(self) -> int:
        return 0 if self.aborted else self.unsent

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    def get_extra_info(self, name: str) -> Any:
        return (self.ip, 1234) if name == "peername" else None


def run(body: Any) -> Any:
    async def main() -> Any:
        return body()

    return asyncio.run(main())


def told(budget: SendBudget, transport: Transport, unsent: int) -> None:
    transport.unsent = unsent
    budget.note(transport, unsent)  # type: ignore[arg-type]


def test_the_largest_backlogs_are_cut_until_the_total_fits(caplog) -> None:
    def body() -> None:
        budget = SendBudget(100)
        a, b, c = Transport("10.0.0.1"), Transport("10.0.0.2"), Transport("10.0.0.3")
        told(budget, a, 30)
        told(budget, b, 50)
        assert budget.cut == 0 and budget.total == 80 and budget.room == 20
        told(budget, c, 40)  # 120 > 100: b (50) goes, 70 remains
        assert (a.aborted, b.aborted, c.aborted) == (False, True, False)
        assert budget.total == 70 and budget.aborted == 50 and budget.room == -20
        budget.forget(b)  # closed: its buffers are freed
        assert budget.aborted == 0 and budget.room == 30

    run(body)
    assert "cutting off 10.0.0.2: 50 unsent reply bytes" in caplog.text


def test_backlogs_that_drained_are_re_read_before_anyone_is_cut() -> None:
    def body() -> None:
        budget = SendBudget(100)
        a, b = Transport("10.0.0.1"), Transport("10.0.0.2")
        told(budget, a, 90)
        a.unsent = 0  # drained since it was told: the recorded sum overestimates
        told(budget, b, 60)
        assert not a.aborted and not b.aborted
        assert budget.total == 60 and a not in budget.sizes

    run(body)


def test_a_write_to_a_connection_with_nothing_unsent_is_not_refused() -> None:
    def body() -> None:
        budget = SendBudget(100)
        stalled, fresh = Transport("10.0.0.1"), Transport("10.0.0.2")
        told(budget, stalled, 100)
        assert budget.room == 0
        assert budget.refuse(fresh, FRESH_WRITE_BYTES) is False  # type: ignore[arg-type]
        assert not stalled.aborted and not fresh.aborted

    run(body)


@pytest.mark.parametrize("pending", [30, 80])
def test_a_stalled_writer_is_cut_when_its_bytes_do_not_fit(pending: int) -> None:
    """A stalled writer's pending bytes count as unsent: the largest backlog goes first;
    if what was cut this turn still leaves no room, the writer goes too."""

    def body() -> None:
        budget = SendBudget(100)
        big, writer = Transport("10.0.0.1"), Transport("10.0.0.2")
        told(budget, big, 70)
        told(budget, writer, 20)
        refused = budget.refuse(writer, pending)  # type: ignore[arg-type]
        if pending == 30:  # 70 + 50: big (70) is the largest; 50 live + 70 not yet freed
            assert big.aborted and refused and writer.aborted
        else:  # 70 + 100: the writer (100) is the largest and goes; big stays
            assert not big.aborted and refused and writer.aborted
        assert budget.total <= budget.limit

    run(body)


def test_a_stalled_writer_that_fits_is_not_refused() -> None:
    def body() -> None:
        budget = SendBudget(100)
        a, writer = Transport("10.0.0.1"), Transport("10.0.0.2")
        told(budget, a, 50)
        told(budget, writer, 10)
        assert budget.refuse(writer, 30) is False  # type: ignore[arg-type]
        assert not a.aborted and not writer.aborted

    run(body)

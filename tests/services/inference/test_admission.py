"""The pixel budget of /segment: waits its turn, gives up with 503 after the wait, oversized runs alone."""

from __future__ import annotations

import asyncio

import pytest

from services.inference.admission import PixelBudget, SegmentationBusy


def test_requests_wait_for_room_and_give_up_after_the_wait():
    async def scenario():
        budget = PixelBudget(limit=100, wait_s=0.3)
        order = []

        async def request(name: str, pixels: int, hold_s: float):
            async with budget.hold(pixels):
                order.append(f"{name} in ({budget.in_flight})")
                await asyncio.sleep(hold_s)

        first = asyncio.create_task(request("a", 60, 0.2))
        await asyncio.sleep(0.01)
        await asyncio.gather(request("b", 60, 0), first)  # b waits until a is done
        assert order == ["a in (60)", "b in (60)"]
        blocker = asyncio.create_task(request("c", 100, 1.0))
        await asyncio.sleep(0.01)
        with pytest.raises(SegmentationBusy, match="STRATA_SEGMENT_MAX_PIXELS_IN_FLIGHT"):
            await request("d", 1, 0)
        await blocker
        await request("huge", 10_000, 0)  # over the whole budget: admitted alone, as 100
        assert order[-1] == "huge in (100)" and budget.in_flight == 0

    asyncio.run(scenario())

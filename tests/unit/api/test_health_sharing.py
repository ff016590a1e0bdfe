"""/health's checks are shared: one run at a time, its answer reused briefly."""

from __future__ import annotations

import asyncio

import pytest

from api.health import SharedCheck


class Check:
    def __init__(self) -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.fail = False

    async def __call__(self) -> tuple[dict, int]:
        self.runs += 1
        await self.release.wait()
        if self.fail:
            raise RuntimeError("broken check")
        return {"run": self.runs}, 200


def test_concurrent_callers_share_one_run_and_its_answer_while_fresh():
    async def scenario() -> None:
        check = Check()
        shared = SharedCheck(check, fresh_s=0.2)
        callers = [asyncio.create_task(shared.get()) for _ in range(50)]
        await asyncio.sleep(0)
        callers[0].cancel()  # one caller leaving does not cancel the others' run
        check.release.set()
        answers = await asyncio.gather(*callers[1:])
        assert check.runs == 1 and all(a == ({"run": 1}, 200) for a in answers)
        assert await shared.get() == ({"run": 1}, 200), "fresh: no new run"
        await asyncio.sleep(0.25)
        assert await shared.get() == ({"run": 2}, 200) and check.runs == 2

    asyncio.run(scenario())


def test_a_failed_run_reaches_its_callers_and_the_next_call_runs_again():
    async def scenario() -> None:
        check = Check()
        check.release.set()
        check.fail = True
        shared = SharedCheck(check, fresh_s=10)
        with pytest.raises(RuntimeError, match="broken check"):
            await shared.get()
        check.fail = False
        assert await shared.get() == ({"run": 2}, 200)

    asyncio.run(scenario())

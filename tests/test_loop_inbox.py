"""Events from another thread reach the loop in order, many with one wake-up."""

from __future__ import annotations

import asyncio
import threading

from endmark.loop_inbox import LoopInbox, Mailbox, inbox_of


def test_events_put_before_the_loop_runs_arrive_in_order_with_one_wake_up() -> None:
    async def scenario() -> tuple[list[int], list[int], int]:
        loop = asyncio.get_running_loop()
        inbox = inbox_of(loop)
        assert inbox_of(loop) is inbox
        wakes = 0
        real = loop.call_soon_threadsafe

        def counting(callback, *args):  # type: ignore[no-untyped-def]
            nonlocal wakes
            wakes += 1
            return real(callback, *args)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        a: asyncio.Queue[int] = asyncio.Queue()
        b: asyncio.Queue[int] = asyncio.Queue()

        def worker() -> None:  # one decode step's events for two streams
            for i in range(3):
                inbox.put(a, i)
                inbox.put(b, 10 + i)

        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()  # all put while the loop was blocked here
        got_a = [await a.get() for _ in range(3)]
        got_b = [await b.get() for _ in range(3)]
        return got_a, got_b, wakes

    got_a, got_b, wakes = asyncio.run(scenario())
    assert got_a == [0, 1, 2] and got_b == [10, 11, 12]
    assert wakes == 1


def test_a_closed_loop_drops_what_is_put() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    inbox = LoopInbox(loop)
    inbox.put(asyncio.Queue(), 1)  # no error: nobody is left to read
    inbox.put(asyncio.Queue(), 2)


def test_a_mailbox_hands_its_reader_every_item_in_order() -> None:
    async def scenario() -> list[int]:
        box: Mailbox[int] = Mailbox()
        box.put_nowait(1)
        got = [await box.get()]
        late = asyncio.ensure_future(box.get())
        await asyncio.sleep(0)  # the reader waits
        box.put_nowait(2)
        box.put_nowait(3)
        got += [await late, await box.get()]
        waiting = asyncio.ensure_future(box.get())
        await asyncio.sleep(0)
        waiting.cancel()  # a reader that leaves while waiting leaves no waiter behind
        box.put_nowait(4)
        return [*got, await box.get()]

    assert asyncio.run(scenario()) == [1, 2, 3, 4]

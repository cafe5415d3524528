"""In-memory event bus: numbered events kept in a ring buffer so a client that reconnects with its last
event id gets everything it missed (while the buffer still holds it)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque


class EventBus:
    def __init__(self, capacity: int = 20_000) -> None:
        self._buffer: deque[dict] = deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def publish(self, type_: str, **data) -> dict:
        with self._lock:
            event = {"id": next(self._ids), "type": type_, "ts": time.time(), **data}
            self._buffer.append(event)
            waiters = list(self._waiters)
        for loop, flag in waiters:
            try:
                loop.call_soon_threadsafe(flag.set)
            except RuntimeError:  # that client's loop has closed
                pass
        return event

    def since(self, last_id: int) -> list[dict]:
        with self._lock:
            return [e for e in self._buffer if e["id"] > last_id]

    @property
    def last_id(self) -> int:
        with self._lock:
            return self._buffer[-1]["id"] if self._buffer else 0

    async def stream(self, last_id: int, heartbeat: float = 15.0):
        """Yield events after last_id as they come; None as a heartbeat when nothing happened."""
        loop = asyncio.get_running_loop()
        flag = asyncio.Event()
        entry = (loop, flag)
        with self._lock:
            self._waiters.append(entry)
        try:
            while True:
                events = self.since(last_id)
                if events:
                    for e in events:
                        last_id = e["id"]
                        yield e
                    continue
                flag.clear()
                if self.since(last_id):
                    continue
                try:
                    await asyncio.wait_for(flag.wait(), timeout=heartbeat)
                except TimeoutError:
                    yield None
        finally:
            with self._lock:
                self._waiters.remove(entry)

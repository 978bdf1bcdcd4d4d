"""``Waiter``: how a phase waits, holding back a cancellation of the request's task until the
phase ends (SPEC 2.6)."""

import time
from typing import Any

import anyio
import anyio.lowlevel

from ._backend import wait_signal


class Waiter:
    """Waits for events on behalf of one phase. A cancellation of the phase's task (an anyio
    cancel scope's, or on asyncio a native ``Task.cancel()``, which no anyio shield stops) is
    caught and kept in ``held`` for the phase to deliver when it ends: for at most
    ``hold_limit`` seconds (``None``: as long as the phase), and not at all once released."""

    def __init__(self, hold_limit: float | None, released: bool = False) -> None:
        self.held: BaseException | None = None
        self._held_until: float | None = None
        self._hold_limit = hold_limit
        self._released = released
        self._scope: anyio.CancelScope | None = None

    async def wait(self, signal: Any, deadline: float | None) -> bool:
        """Wait until ``signal`` (see ``new_signal``) is set (``True``) or ``deadline``
        (``time.monotonic()``) has passed (``False``)."""
        while not signal.is_set():
            now = time.monotonic()
            if self.held is not None and (
                self._released or (self._held_until is not None and now >= self._held_until)
            ):
                await self.deliver()
            if deadline is not None and now >= deadline:
                return False
            limits = [t for t in (deadline, self._held_until) if t is not None]
            seconds = min(limits) - now if limits else None
            try:
                if self.held is None:
                    await wait_signal(signal, seconds)
                else:
                    # An anyio scope's cancellation would otherwise come again at every await.
                    with anyio.CancelScope(shield=True) as self._scope:
                        await wait_signal(signal, seconds)
            except BaseException as exc:
                if not isinstance(exc, anyio.get_cancelled_exc_class()):
                    raise
                if self.held is None:
                    self.held = exc
                    if self._hold_limit is not None:
                        self._held_until = time.monotonic() + self._hold_limit
            finally:
                self._scope = None
        return True

    async def deliver(self) -> None:
        """Raise the cancellation held, if any: an anyio or trio scope's afresh."""
        if self.held is not None:
            await anyio.lowlevel.checkpoint_if_cancelled()
            raise self.held

    def release(self) -> None:
        """Hold no cancellation from now on (the shutdown's bound has passed)."""
        self._released = True
        if self._scope is not None and self.held is not None:
            self._scope.cancel()  # wakes wait(), which delivers it

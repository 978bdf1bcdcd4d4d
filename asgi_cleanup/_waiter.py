"""How a phase waits: on the middleware's own events only, holding back a cancellation of its
task until the phase ends, for at most ``shutdown_timeout``."""

import time

import anyio
import anyio.lowlevel


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

    async def wait(self, event: anyio.Event, deadline: float | None) -> bool:
        """Wait until ``event`` is set (``True``) or ``deadline`` (``time.monotonic()``)
        has passed (``False``)."""
        cancelled = anyio.get_cancelled_exc_class()
        while not event.is_set():
            now = time.monotonic()
            if self.held is not None and (
                self._released or (self._held_until is not None and now >= self._held_until)
            ):
                await self.deliver()
            if deadline is not None and now >= deadline:
                return False
            limits = [t for t in (deadline, self._held_until) if t is not None]
            with anyio.CancelScope(shield=self.held is not None) as self._scope:
                try:
                    with anyio.move_on_after(min(limits) - now if limits else None):
                        await event.wait()
                except cancelled as exc:
                    if self.held is None:
                        self.held = exc
                        if self._hold_limit is not None:
                            self._held_until = time.monotonic() + self._hold_limit
            self._scope = None
        return True

    async def deliver(self) -> None:
        """Raise the cancellation held, if any: an anyio or trio scope's afresh."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.held is not None:
            raise self.held

    def release(self) -> None:
        """Hold no cancellation from now on (the shutdown's bound has passed)."""
        self._released = True
        if self._scope is not None and self.held is not None:
            self._scope.cancel()  # wakes wait(), which delivers it

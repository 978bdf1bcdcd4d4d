import logging
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ._describe import describe_callable
from .outcome import Outcome

P = ParamSpec("P")
R = TypeVar("R")

# (func, args, kwargs), as register() received them.
Entry = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]

logger = logging.getLogger("asgi_cleanup")

# Guards register/unregister against the freeze; held only for a list operation, so one lock
# shared by every registry costs less than a lock allocated per request.
_lock = threading.Lock()


class CleanupRegistry:
    """The cleanups of one request, found at ``scope["cleanup"]``.

    ``register`` and ``unregister`` may be called from the event loop or from worker threads
    (Django sync views, ``run_in_threadpool``). Once the cleanup phase starts the registry is
    frozen: later registrations are ignored with a WARNING on the ``asgi_cleanup`` logger.
    """

    # Class-level defaults instead of an __init__: a registry is made for every request, and
    # most requests never touch it.
    _entries: list[Entry] | None = None
    _frozen = False
    _outcome: Outcome | None = None
    # The Outcome's fields, set when cleanups start; the Outcome is built on first use.
    _outcome_fields: tuple[Any, ...] | None = None
    # Directive cleanups added by CleanupMiddleware instances nested inside the outer one.
    _nested_directives: list[Callable[[Outcome], Any]] | None = None

    def register(
        self, func: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> Callable[P, R]:
        """Add a cleanup, called as ``func(*args, **kwargs)`` after the response.

        Returns ``func``, so ``@registry.register`` works as a decorator. Async callables are
        awaited on the event loop; sync ones run in a worker thread. Cleanups run in reverse
        order of registration.

        :raises TypeError: if ``func`` is not callable.
        """
        if not callable(func):
            raise TypeError(f"cleanup must be callable, got {func!r} ({type(func).__name__})")
        with _lock:
            if not self._frozen:
                if self._entries is None:
                    self._entries = [(func, args, kwargs)]
                else:
                    self._entries.append((func, args, kwargs))
                return func
        logger.warning(
            "Cleanup %s registered after cleanups started; it will not run",
            describe_callable(func),
        )
        return func

    def unregister(self, func: Callable[..., Any]) -> None:
        """Remove every pending registration of ``func`` (compared with ``==``).

        No error if it is not registered; no effect once the registry is frozen.
        """
        with _lock:
            if not self._frozen and self._entries:
                self._entries[:] = [entry for entry in self._entries if entry[0] != func]

    @property
    def frozen(self) -> bool:
        """``False`` until cleanups start, ``True`` from then on."""
        return self._frozen

    @property
    def outcome(self) -> Outcome | None:
        """How the request ended; ``None`` until cleanups start."""
        outcome = self._outcome
        if outcome is None and self._outcome_fields is not None:
            outcome = self._outcome = Outcome(*self._outcome_fields)
        return outcome

    def __len__(self) -> int:
        """The number of dynamic cleanups registered and not yet run."""
        entries = self._entries
        return 0 if entries is None else len(entries)

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else "open"
        return f"<CleanupRegistry {state}, {len(self)} pending>"

    def _freeze(self) -> list[Entry] | None:
        """Close the registry and hand over its entries; the caller pops them as they run."""
        self._frozen = True
        if _lock.locked():
            # A register() may be past its check of _frozen: let it finish first. One that
            # takes the lock from now on sees _frozen set.
            with _lock:
                return self._entries
        return self._entries

    def _start(self, outcome_fields: tuple[Any, ...]) -> None:
        """Cleanups start: ``outcome`` becomes an ``Outcome`` of these fields."""
        self._outcome_fields = outcome_fields

    def _add_directives(self, directives: tuple[Callable[[Outcome], Any], ...]) -> None:
        if self._nested_directives is None:
            self._nested_directives = list(directives)
        else:
            self._nested_directives.extend(directives)

"""The first steps of async cleanups on trio, with no cancel scope; imported on trio only.

Trio delivers a cancellation (and ``KeyboardInterrupt``) only at a checkpoint, and every
checkpoint yields to the scheduler. A cleanup whose first ``send(None)`` returns or raises
never checkpointed, so it needs no shield: ``run_first_steps`` runs such cleanups in the
request's task with no cancel scope at all, where a trio ``CancelScope`` would cost about as
much as the rest of the request. A cleanup that suspends has not reached the scheduler yet:
what it yielded is passed on only once ``AnyioPhase.run_here`` has opened its shielded scope,
and ``enclose`` puts that scope outside any cancel scope the step left open (``with
trio.move_on_after(1): await x``), where it would have been had it been opened first.

That needs trio's internals (a task's cancel status, and moving a status under another, as
trio does for nurseries): where they are not as expected, ``run_first_steps`` starts nothing,
and every cleanup's first step runs inside the shield as before.
"""

import inspect
import threading
import types
from time import perf_counter
from typing import Any

import trio

from ._anyio_phase import Suspended
from ._asyncio_phase import _STEP_DONE, NOT_STARTED, _Driver, _new_driver
from ._calls import as_coroutine, is_async_callable
from .registry import Entry

_FunctionType = types.FunctionType
_CO_COROUTINE = inspect.CO_COROUTINE
# Unbound, so that sending into a generator makes no bound method.
_generator_send = types.GeneratorType.send


class _Drivers(threading.local):
    """Each thread's idle driver of first steps (``_asyncio_phase._drive``: it learns that
    a coroutine finished with no ``StopIteration``), while none is in use there."""

    idle: _Driver | None = None


_drivers = _Drivers()


def _internals() -> Any:
    """trio's per-thread run context (``.task`` is the running task), if the internals used
    here are there: a task's ``_cancel_status`` and ``_activate_cancel_status()``, a cancel
    scope's ``_cancel_status``, and the settable ``CancelStatus.parent``."""
    try:
        from trio._core import _run
    except ImportError:
        return None
    status_type = getattr(_run, "CancelStatus", None)
    parent = getattr(status_type, "parent", None)
    task_type = getattr(_run, "Task", None)
    slot = types.MemberDescriptorType
    if not (
        isinstance(parent, property)
        and parent.fset is not None
        and isinstance(getattr(task_type, "_cancel_status", None), slot)
        and callable(getattr(task_type, "_activate_cancel_status", None))
        and isinstance(getattr(trio.CancelScope, "_cancel_status", None), slot)
        and trio.lowlevel.current_task is getattr(_run, "current_task", None)
    ):
        return None
    return getattr(_run, "GLOBAL_RUN_CONTEXT", None)


_run_context = _internals()


def run_first_steps(entries: list[Entry]) -> Any:
    """Run the async cleanups at the end of ``entries`` (LIFO) as long as each finishes in
    its first step, each in its context, in the caller's trio task and in no scope of ours.

    Returns ``None`` once ``entries`` is empty; ``NOT_STARTED`` at a sync cleanup, which it
    leaves in place (or when it cannot run here: not in a trio task, or trio's internals are
    not as expected); or ``(func, result, began)`` for the cleanup it removed that failed
    (``result`` is the exception) or suspended (a ``Suspended``), for ``run_phase``.
    """
    try:
        task = _run_context.task
    except AttributeError:  # not in a trio task; or _run_context is None
        return NOT_STARTED
    status = task._cancel_status
    # Taken while in use: a first step that runs first steps makes a driver of its own.
    driver = _drivers.idle or _new_driver()
    _drivers.idle = None
    while entries:
        entry = entries.pop()
        func, args, kwargs, context = entry
        if type(func) is _FunctionType and func.__code__.co_flags & _CO_COROUTINE:
            try:
                # Calling a coroutine function runs none of its code: no context needed.
                coro = func(*args, **kwargs) if kwargs else func(*args)
            except Exception as exc:  # arguments that do not fit
                _drivers.idle = driver
                return func, exc, perf_counter()
        elif is_async_callable(func):
            try:
                coro = as_coroutine(context.run(func, *args, **kwargs))
            except Exception as exc:
                _drivers.idle = driver
                return func, exc, perf_counter()
        else:
            entries.append(entry)
            _drivers.idle = driver
            return NOT_STARTED
        try:
            yielded = context.run(_generator_send, driver[0], coro)
        except Exception as exc:  # it ended the driver too
            return func, exc, perf_counter()
        if yielded is not _STEP_DONE:
            # It suspended, inside the driver, which ends with it: what it yielded waits,
            # unseen by trio, for the shield.
            driver[1].append(True)
            return func, Suspended(driver[0], yielded, context, status), perf_counter()
    _drivers.idle = driver
    return None


@trio.lowlevel.enable_ki_protection
def enclose(scope: trio.CancelScope, status: Any) -> None:
    """Move ``scope``, a shielded scope just entered after a first step that suspended, to
    sit right inside ``status`` (the task's cancel status before the step) and outside every
    cancel scope the step opened and left open; so that the step's scopes end inside it, and
    a cancellation from outside reaches none of them.
    """
    own = scope._cancel_status
    assert own is not None, "enclose() follows scope.__enter__()"
    inner = own.parent  # where the step left the task
    if inner is status:
        return  # the step left no scope open: the scope is in its place already
    outer = inner
    while outer is not None and outer.parent is not status:
        outer = outer.parent
    if outer is None:
        return  # the step left a scope it had not entered: trio reports that misnesting
    own.parent = status
    outer.parent = own
    _run_context.task._activate_cancel_status(inner)

"""arq as the middleware's job queue: ``CleanupMiddleware(app, queue="arq",
arq_redis=RedisSettings(...))`` (or ``arq_redis_url="redis://..."``, or an ``ArqRedis`` pool of
your own, which you close). The enqueue is an async cleanup on the event loop; each job's
``_job_id`` is its idempotency key, so a retry never enqueues twice. arq runs on asyncio only:
on trio, ``register_job()`` raises ``RuntimeError``.

Durable jobs are recorded with ``_defer_by=durable_grace``. Their release marks them released
(the Redis key ``K:released``, written after the release's enqueue) and then cancels them with
arq's ``Job.abort()``. ``Job.abort()`` moves the job to the front of the queue before it flags
it, and a worker that polls in between starts it: the workers' functions, wrapped by
:func:`durable_functions`, see the mark when the recorded copy starts and return at once. Without
the wrapper, or on workers without ``allow_abort_jobs=True``, a recorded copy may run a second
time (docs/queues.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import math
import sys
from collections.abc import Iterable
from typing import Any, ClassVar

from .._describe import describe_value
from ._durable import AsyncDurableJob
from ._jobs import AsyncJob, JobQueue

try:
    from arq.connections import ArqRedis, RedisSettings, create_pool
    from arq.jobs import Job as ArqJob
    from arq.typing import WorkerCoroutine
    from arq.worker import Function, func
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("queue='arq' needs arq: pip install 'asgi-cleanup[arq]'") from exc

_ON_TRIO = "arq runs on asyncio only, and this app runs on trio: use queue='celery' there"
#: Seconds the release waits for a worker to confirm that it aborted the recorded job, and
#: how often it asks; the abort holds without the confirmation.
ABORT_WAIT, ABORT_POLL = 1.0, 0.1
_NOT_ABORTED = (
    "The recorded copy of durable %s ran instead of being aborted: do the arq workers run "
    "with allow_abort_jobs=True and their functions wrapped by durable_functions(), and is "
    "durable_grace longer than the request? (docs/queues.md)"
)
logger = logging.getLogger("asgi_cleanup")
#: How long the released mark outlives the release: as long as arq keeps a deferred job's own
#: record past its due time (``expires_extra_ms``, a day), so that the mark outlives K.
MARK_EXTRA = 86_400
#: What a recorded copy that found its release's mark returns, instead of running the job.
SKIPPED = "asgi-cleanup: released, recorded copy not run"
_SKIPPED_LOG = "arq job %s (%s): released already, its recorded copy returns without running"


def released_mark(key: str) -> str:
    """The Redis key that a durable job's release sets before it aborts the recorded job ``key``."""
    return f"{key}:released"


def durable_functions(functions: Iterable[Function | WorkerCoroutine]) -> list[Function]:
    """The worker's functions, each wrapped to skip a durable job's recorded copy whose release
    already happened: ``functions = durable_functions([audit, ...])`` in ``WorkerSettings``.

    A job runs as before, except when it is the recorded copy of a durable job (arq's job id is
    its ``cleanup_job_key``) and the mark that the release writes exists: then it returns
    :data:`SKIPPED` without calling the function. The check is one Redis ``EXISTS`` on the
    worker's own connection (``ctx["redis"]``), made only for recorded copies; other jobs pay a
    dictionary lookup. Each function stays what ``arq.func()`` made of it (name, timeout,
    ``max_tries``, ``keep_result``)."""
    return [_guard(func(function)) for function in functions]


def _guard(function: Function) -> Function:
    inner = function.coroutine

    @functools.wraps(inner)
    async def guarded(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        key = kwargs.get("cleanup_job_key")
        recorded_copy = isinstance(key, str) and key == ctx.get("job_id")
        if recorded_copy and await ctx["redis"].exists(released_mark(str(key))):
            logger.info(_SKIPPED_LOG, function.name, key)
            return SKIPPED
        return await inner(ctx, *args, **kwargs)

    return dataclasses.replace(function, coroutine=guarded)


def arq_job(target: str) -> str:
    """A ``job:arq:FUNCTION`` directive's function name. :raises ValueError:"""
    if not target or any(c.isspace() or not c.isprintable() for c in target):
        raise ValueError("needs the name of an arq worker's function after 'job:arq:'")
    return target


def _on_trio() -> bool:
    """Whether this thread runs a trio event loop (trio's public API, if trio is imported)."""
    trio = sys.modules.get("trio")
    if trio is None:
        return False
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True


class ArqQueue(JobQueue):
    kind: ClassVar[str] = "arq"
    job_class = AsyncJob
    durable_class = AsyncDurableJob
    transient = (RedisConnectionError, RedisTimeoutError, OSError)

    def __init__(self, redis: Any, url: str | None) -> None:
        self._own: RedisSettings | None = None
        self._given: ArqRedis | None = None
        if isinstance(redis, ArqRedis):
            self._given = redis
        elif isinstance(redis, RedisSettings):
            self._own = redis
        elif redis is not None:
            wanted = "arq's RedisSettings or an ArqRedis pool"
            raise TypeError(f"arq_redis must be {wanted}, got {describe_value(redis, 60)}")
        elif url is not None:
            try:
                self._own = RedisSettings.from_dsn(url)
            except (RuntimeError, ValueError) as exc:
                raise ValueError(f"arq_redis_url is not a redis:// URL: {exc}") from None
        else:
            raise ValueError("queue='arq' needs arq_redis= (RedisSettings) or arq_redis_url")
        if self._own is not None:
            # One attempt per connection: our one retry replaces arq's (5, a second apart).
            self._own = dataclasses.replace(self._own, conn_retries=0)
        self._pool: ArqRedis | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def check_job(self, job: object) -> str:
        if not isinstance(job, str) or not job:
            raise TypeError(
                f"an arq job is its function's name, a string, not {describe_value(job, 60)}"
            )
        return job

    def on_registration(self) -> None:
        if _on_trio():
            raise RuntimeError(_ON_TRIO)

    async def _redis(self) -> ArqRedis:
        if self._given is not None:
            return self._given
        assert self._own is not None
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # connections belong to the loop that made them
            self._loop, self._pool, self._lock = loop, None, asyncio.Lock()
        assert self._lock is not None
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(self._own)
            return self._pool

    async def enqueue(
        self,
        job: object,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        key: str,
        defer: float | None = None,
    ) -> None:
        if _on_trio():
            raise RuntimeError(_ON_TRIO)
        redis = await self._redis()
        # None when a job of this id exists: the first attempt got through, its answer did not.
        await redis.enqueue_job(job, *args, _job_id=key, _defer_by=defer, **kwargs)  # type: ignore[arg-type]

    async def cancel(self, job: object, kwargs: dict[str, Any], key: str) -> None:
        redis = await self._redis()
        recorded = ArqJob(
            key, redis, _queue_name=kwargs.get("_queue_name") or redis.default_queue_name
        )
        # Marked first: abort() moves K to the front of the queue before it flags it, and a
        # worker that starts K in between finds the mark (durable_functions) and skips it.
        ttl = math.ceil(self.durable_grace) + MARK_EXTRA
        await redis.set(released_mark(key), b"1", ex=ttl)
        try:
            aborted = await recorded.abort(timeout=ABORT_WAIT, poll_delay=ABORT_POLL)
        except TimeoutError:
            return  # no worker looked yet; the one that does aborts it
        except self.transient:
            raise
        except Exception:  # the recorded job ran, and raised: its result re-raises it
            aborted = False
        if not aborted and not await self._skipped(recorded):
            logger.warning(_NOT_ABORTED, f"arq job {job} ({key})")

    async def _skipped(self, recorded: ArqJob) -> bool:
        """Whether the recorded copy started, found the released mark and did nothing."""
        info = await recorded.result_info()
        return info is not None and info.success and info.result == SKIPPED

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        try:
            same_loop = self._loop is asyncio.get_running_loop()
        except RuntimeError:
            same_loop = False
        if pool is not None and same_loop:
            await pool.aclose()

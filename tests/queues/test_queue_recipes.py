"""The Celery and arq recipes (``examples/recipes/celery_queue.py``, ``arq_queue.py``) run as
their pages say: a real worker started by its command line, uvicorn serving the app, and the
audit job logged by the worker after the response."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from queue_support import Process, RedisServer
from servers import REPO_ROOT, RawHTTPConnection, ServerProcess

pytestmark = pytest.mark.real_server

RECIPES = REPO_ROOT / "examples" / "recipes"
WORKERS = {
    "celery": (
        ["-m", "celery", "-A", "celery_queue:celery", "worker", "--pool", "solo", "-l", "INFO"],
        "ready.",
    ),
    "arq": (["-m", "arq", "arq_queue.WorkerSettings"], "Starting worker for 1 functions"),
}


def wait_in_log(process: Process, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while text not in process.log_text():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_recipe_s_worker_audits_each_order_after_the_response(
    queue_kind: str, broker: RedisServer, tmp_path: Path
) -> None:
    pythonpath = os.pathsep.join([str(RECIPES), str(REPO_ROOT)])
    env = {"REDIS_URL": broker.url, "PYTHONPATH": pythonpath}
    args, ready = WORKERS[queue_kind]
    worker = Process(f"{queue_kind} recipe worker", [sys.executable, *args], tmp_path / "w.log")
    worker.env.update(env)
    server = ServerProcess(
        "uvicorn", tmp_path / "uvicorn.log", app=f"{queue_kind}_queue:app", env=env
    )
    try:
        worker.start()
        assert wait_in_log(worker, ready, 30), worker.log_text()
        server.start()
        with RawHTTPConnection(server.port) as conn:
            response = conn.request("POST", "/orders/7")
        assert (response.status, response.body) == (200, b'{"order":7}')
        assert wait_in_log(worker, "audit: order 7 ended with status 200", 15), worker.log_text()
    finally:
        server.stop()
        worker.stop()

"""What a handler reference may name, checked when settings load (SPEC 4): no generator
functions, objects looked at safely, an async ``__call__`` run as async; and import troubles
(a nested settings error, a circular import) said once and plainly (issue 16 items 7-8,
issue 17 items 1-2)."""

from __future__ import annotations

import functools
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from raw import call, http_scope, respond

from asgi_cleanup import CleanupMiddleware, Outcome, SettingsError
from asgi_cleanup._types import Receive, Scope, Send
from asgi_cleanup.settings import load_settings, validate_hook

CALLS: list[str] = []


def generator(outcome: object) -> Iterator[None]:
    CALLS.append("generator")
    yield


async def async_generator(outcome: object) -> AsyncIterator[None]:
    CALLS.append("async_generator")
    yield


class GeneratorCall:
    def __call__(self, outcome: object) -> Iterator[None]:
        yield


class AsyncCall:
    async def __call__(self, outcome: Outcome) -> None:
        CALLS.append(f"async_call {outcome.status}")


class Unbound:
    """Like an unbound ``werkzeug.local.LocalProxy``: every attribute lookup raises."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError("working outside of request context")

    def __call__(self, outcome: object) -> None:
        pass


class NotCallableBadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


async_call = AsyncCall()
generator_call = GeneratorCall()


@pytest.fixture(autouse=True)
def _this_module_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setitem(sys.modules, "settings_handlers_under_test", sys.modules[__name__])
    CALLS.clear()
    yield
    CALLS.clear()


def error_of(data: Any) -> str:
    with pytest.raises(SettingsError) as raised:
        load_settings(data)
    return str(raised.value)


GENERATOR = "is a generator or async generator function: calling it would run none of its code"


@pytest.mark.parametrize(
    "name", ["generator", "async_generator", "generator_call", "GeneratorCall.__call__"]
)
def test_a_generator_function_as_a_file_handler_is_a_settings_error(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / "cleanup.toml"
    ref = f"settings_handlers_under_test:{name}"
    path.write_text(f'handlers = ["{ref}"]\n', encoding="utf-8")
    assert error_of(path) == f"{path}:1: top level, key 'handlers', entry '{ref}': {GENERATOR}"


@pytest.mark.parametrize(
    "handler",
    [
        pytest.param(generator, id="generator"),
        pytest.param(functools.partial(async_generator), id="partial-of-async-generator"),
        pytest.param(generator_call, id="instance-with-generator-call"),
    ],
)
def test_a_generator_function_as_a_mapping_handler_is_a_settings_error(handler: Any) -> None:
    assert error_of({"handlers": [handler]}).endswith(GENERATOR)


def test_a_generator_function_as_a_hook_is_refused() -> None:
    def on_error(cleanup: object, exception: object, outcome: object) -> Iterator[None]:
        yield

    assert error_of({"on_error": on_error}).endswith(GENERATOR)
    with pytest.raises(TypeError, match="generator"):
        validate_hook("on_error", on_error)


def test_an_object_whose_attributes_raise_is_accepted_and_named_by_its_type() -> None:
    settings = load_settings({"handlers": [Unbound()]})
    assert [ref for ref, _, _ in settings.explain(None, "/")] == [f"{__name__}:Unbound"]


def test_a_non_callable_whose_repr_raises_is_a_settings_error() -> None:
    assert error_of({"handlers": [NotCallableBadRepr()]}) == (
        "<mapping>: top level, key 'handlers', entry <NotCallableBadRepr object (repr failed)>: "
        "must be a handler reference or a callable, not a NotCallableBadRepr "
        "(<NotCallableBadRepr object (repr failed)>)"
    )


@pytest.mark.anyio
async def test_an_instance_with_an_async_call_runs_as_a_directive(tmp_path: Path) -> None:
    path = tmp_path / "cleanup.toml"
    path.write_text('handlers = ["settings_handlers_under_test:async_call"]\n', encoding="utf-8")

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        for message in respond(204):
            await send(message)

    await call(CleanupMiddleware(app, settings=path), http_scope("/"))
    assert CALLS == ["async_call 204"]


# --- import troubles ------------------------------------------------------------------------


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stem: str, body: str) -> str:
    name = f"{stem}_{uuid.uuid4().hex}"
    (tmp_path / f"{name}.py").write_text(body.replace("{name}", name), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return name


def test_a_nested_import_error_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # getting-started's old layout: a single app module, handlers named as if it were a
    # package; importing the handler module imports the app, which loads the same settings.
    path = tmp_path / "cleanup.toml"
    body = f"from asgi_cleanup.settings import load_settings\nload_settings({str(path)!r})\n"
    app = write_module(tmp_path, monkeypatch, "single_module_app", body)
    path.write_text(f'handlers = ["{app}.cleanups:log_request"]\n', encoding="utf-8")
    message = error_of(path)
    assert message == (
        f"{path}:1: top level, key 'handlers', entry '{app}.cleanups:log_request': cannot import "
        f"module '{app}.cleanups': No module named '{app}.cleanups'; '{app}' is not a package"
    )


CIRCULAR = (
    "yet: the module is still being imported (its code is running, further up: a circular "
    "import, as when it builds the middleware, or imports the module that does, before it "
    "defines the handler). Define handlers above the middleware's construction, or in a "
    "module that does not import the app's module"
)


def test_a_handler_defined_below_the_middleware_in_the_app_module_is_a_circular_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = (
        "from asgi_cleanup import CleanupMiddleware\n"
        "async def inner(scope, receive, send): pass\n"
        "app = CleanupMiddleware(inner, settings={'handlers': ['{name}:log_request']})\n"
        "def log_request(outcome): pass\n"
    )
    module = write_module(tmp_path, monkeypatch, "app_defining_handlers_late", body)
    message = error_of({"handlers": [f"{module}:log_request"]})
    assert message == (
        f"<mapping>: top level, key 'handlers', entry '{module}:log_request': "
        f"module '{module}' has no attribute 'log_request' {CIRCULAR}"
    )


def test_a_handler_module_importing_the_app_module_is_a_circular_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    handlers = f"handlers_importing_the_app_{uuid.uuid4().hex}"
    app = write_module(
        tmp_path,
        monkeypatch,
        "app_of_handlers",
        "from asgi_cleanup import CleanupMiddleware\n"
        "async def inner(scope, receive, send): pass\n"
        f"app = CleanupMiddleware(inner, settings={{'handlers': ['{handlers}:log']}})\n",
    )
    (tmp_path / f"{handlers}.py").write_text(
        f"import {app}\ndef log(outcome): pass\n", encoding="utf-8"
    )
    assert error_of({"handlers": [f"{handlers}:log"]}).endswith(
        f"module '{handlers}' has no attribute 'log' {CIRCULAR}"
    )


def test_a_missing_attribute_of_a_fully_imported_module_gets_no_circular_hint() -> None:
    message = error_of({"handlers": ["settings_handlers_under_test:absent"]})
    assert message.endswith("module 'settings_handlers_under_test' has no attribute 'absent'")

"""Looking at a callable never fails: its name, whether it is async, whether it can be a cleanup
(SPEC 1 ``register()``, 2.4, 2.5)."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from asgi_cleanup._describe import check_cleanup, describe_callable, is_async_callable


class Unbound:
    """Like an unbound ``werkzeug.local.LocalProxy``: every attribute raises, ``__class__``
    and ``__dict__`` included, yet it is callable."""

    def __getattribute__(self, name: str) -> Any:
        raise RuntimeError("working outside of request context")

    def __call__(self) -> None:
        pass


class BadQualname:
    def __getattribute__(self, name: str) -> Any:
        if name in ("__qualname__", "__module__"):
            raise RuntimeError("no name")
        return super().__getattribute__(name)

    def __call__(self) -> None:
        pass


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class AsyncCall:
    async def __call__(self, outcome: object) -> None:
        pass


class GeneratorCall:
    def __call__(self) -> Iterator[int]:
        yield 1


def generator() -> Iterator[int]:
    yield 1


async def async_generator() -> AsyncIterator[int]:
    yield 1


async def coroutine_function() -> None:
    pass


def test_describe_callable_of_an_object_whose_attributes_raise_is_a_fallback_name() -> None:
    assert describe_callable(Unbound()) == "<unnamed Unbound>"


def test_describe_callable_of_an_object_whose_qualname_raises_is_a_fallback_name() -> None:
    assert describe_callable(BadQualname()) == "<unnamed BadQualname>"


def test_describe_callable_escapes_and_bounds_a_forged_name() -> None:
    def func() -> None:
        pass

    func.__qualname__ = "a\nb" + "x" * 10_000
    name = describe_callable(func)
    assert "\n" not in name
    assert "a\\x0ab" in name
    assert len(name) <= 200
    assert name.endswith(f"({len(__name__) + 10_007} characters)")


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        pytest.param(coroutine_function, True, id="coroutine-function"),
        pytest.param(functools.partial(coroutine_function), True, id="partial"),
        pytest.param(AsyncCall(), True, id="instance-with-async-call"),
        pytest.param(functools.partial(AsyncCall(), 1), True, id="partial-of-instance"),
        pytest.param(AsyncCall, False, id="class-with-async-call"),
        pytest.param(print, False, id="builtin"),
        pytest.param(lambda: None, False, id="lambda"),
        pytest.param(Unbound(), False, id="attributes-raise"),
    ],
)
def test_is_async_callable(func: Any, expected: bool) -> None:
    assert is_async_callable(func) is expected


@pytest.mark.parametrize(
    "func",
    [
        pytest.param(generator, id="generator-function"),
        pytest.param(async_generator, id="async-generator-function"),
        pytest.param(functools.partial(generator), id="partial-of-generator-function"),
        pytest.param(
            functools.partial(functools.partial(async_generator)), id="partial-of-partial"
        ),
        pytest.param(GeneratorCall(), id="instance-with-generator-call"),
    ],
)
def test_check_cleanup_rejects_generator_functions(func: Any) -> None:
    with pytest.raises(TypeError, match="generator") as raised:
        check_cleanup(func)
    assert "would run none of its code" in str(raised.value)


@pytest.mark.parametrize(
    "func",
    [
        pytest.param(coroutine_function, id="coroutine-function"),
        pytest.param(AsyncCall(), id="instance-with-async-call"),
        pytest.param(functools.partial(print, 1), id="partial"),
        pytest.param(Unbound(), id="attributes-raise"),
        pytest.param(BadQualname(), id="qualname-raises"),
        # calling the class constructs an instance: not a generator
        pytest.param(GeneratorCall, id="class-with-generator-call"),
    ],
)
def test_check_cleanup_accepts_callables(func: Any) -> None:
    check_cleanup(func)


def test_check_cleanup_of_a_non_callable_names_it() -> None:
    with pytest.raises(TypeError) as raised:
        check_cleanup(42)
    assert str(raised.value) == "cleanup must be callable, not int 42"


def test_check_cleanup_of_a_non_callable_whose_repr_raises_is_still_a_type_error() -> None:
    with pytest.raises(TypeError) as raised:
        check_cleanup(BadRepr())
    assert str(raised.value) == (
        "cleanup must be callable, not BadRepr <BadRepr object (repr failed)>"
    )


def test_check_cleanup_cuts_a_huge_repr() -> None:
    with pytest.raises(TypeError) as raised:
        check_cleanup("x" * 10_000_000)
    assert len(str(raised.value)) < 300
    assert str(raised.value).endswith("(10000002 characters)")

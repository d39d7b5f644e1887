"""Awaitable proxies: ``await cam.start_capture(fps=30)``, ``await cam.state``.

A proxy turns attribute access into requests to the child that holds the
object (see ``_serving`` for the other half). It knows the object's public
members from the child's ready message, so an async-generator method comes
back as an async iterator and everything else as an awaitable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Hashable
from typing import Any, Generic, TypeVar, final

import anyio

from ._answers import Messages, ReplyStream
from ._errors import SerializationError, WorkerStopped
from ._lifetime import ProxyStatistics
from ._service import Service
from ._serving import CALLS, NOWAIT, Member, Op
from ._wire import BINARY, dumps, wrap_large

logger = logging.getLogger(__name__)

T = TypeVar("T")

# A proxy's own names; a served member with one of these names is reached
# with proxy.call(name, ...) / proxy.get_attr(name).
OWN_NAMES = frozenset(
    {
        "aclose",
        "call",
        "get_attr",
        "kill",
        "messages",
        "pid",
        "set_attr",
        "statistics",
        "wait_closed",
    }
)


@final
class RemoteAttribute:
    """A name on a proxy: call it (``await proxy.m(...)``) or await it (``await proxy.x``)."""

    __slots__ = ("_member", "_name", "_proxy")

    def __init__(self, proxy: ProxyBase[Any], name: str, member: Member | None) -> None:
        self._proxy = proxy
        self._name = name
        self._member = member

    def __repr__(self) -> str:
        return f"<remote {self._member or 'attribute'} {self._proxy._service.name}.{self._name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._member is Member.STREAM:
            return _ProxyStream(self._proxy, self._name, args, kwargs)
        return self._proxy._request(Op.CALL, self._name, args, kwargs)

    def __await__(self) -> Any:
        return self._proxy._request(Op.GET, self._name, (), {}).__await__()

    def nowait(self, *args: Any, **kwargs: Any) -> None:
        """Call the method without waiting for (or getting) its result.

        Failures are logged in the child (and so forwarded to this process's
        logging). Raises :class:`~corral.SerializationError` at once if an
        argument will not pickle.
        """
        if self._member is Member.STREAM:
            raise TypeError(
                f"{self._name}() is a generator method: nowait() would drop it unrun; "
                f"iterate it with `async for item in proxy.{self._name}(...)`"
            )
        self._proxy._nowait(self._name, args, kwargs)


class ProxyBase(Generic[T]):
    """What every proxy does (see :class:`Proxy`): calls, attributes, messages, lifetime."""

    _own_names: frozenset[str] = OWN_NAMES

    def __init__(self, service: Service) -> None:
        object.__setattr__(self, "_service", service)
        if shadowed := sorted(self._own_names & service.members.keys()):
            logger.info(
                "proxy %r: the proxy's own %s shadow(s) the served object's; reach those "
                "with proxy.call(name, ...) / proxy.get_attr(name)",
                service.name,
                ", ".join(shadowed),
            )
        object.__setattr__(self, "_counts", service.counts)

    def __repr__(self) -> str:
        service: Service = self._service
        return f"<{type(self).__name__} {service.name!r} {service.state} pid={self.pid}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(
                f"{type(self).__name__} has no attribute {name!r} (private members of the "
                "served object are not reachable)"
            )
        attribute = RemoteAttribute(self, name, self._service.members.get(name))
        self.__dict__[name] = attribute  # found directly next time
        return attribute

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot assign {name!r} on a proxy; use `await proxy.set_attr({name!r}, value)`"
        )

    # -- the proxy's own API -----------------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The current child's process id (None between restarts and after exit)."""
        pid: int | None = self._service.pid
        return pid

    async def call(self, name: str, /, *args: Any, **kwargs: Any) -> Any:
        """Call method ``name`` (for a method whose name the proxy itself uses)."""
        return await self._request(Op.CALL, name, args, kwargs)

    async def get_attr(self, name: str) -> Any:
        """Read attribute ``name`` (the same as ``await proxy.<name>``)."""
        return await self._request(Op.GET, name, (), {})

    async def set_attr(self, name: str, value: Any) -> None:
        """Set attribute ``name`` on the object.

        A property without a setter raises :class:`AttributeError`, as it would in-process.
        """
        await self._request(Op.SET, name, (value,), {})

    def messages(self, channel: Hashable = None) -> AsyncIterator[Any]:
        """Values the object publishes with ``corral.messenger().send(value, channel=...)``.

        Ends when the child is closed; raises :class:`~corral.WorkerCrashed`
        if it dies.
        """
        return Messages(self._receive, channel, WorkerStopped)

    async def _receive(self, channel: Hashable) -> Any:
        service: Service = self._service
        last = service.last_messenger
        if last is not None and last is not service.messenger:  # a child that has gone:
            try:  # what it sent before it went is still to be read
                return last.receive_nowait(channel)
            except anyio.WouldBlock:
                pass
            except Exception as error:
                if error is not last.error:  # an error it sent on purpose
                    raise
        messenger = service.messenger or await service.connected()
        return await messenger.receive(channel)

    async def aclose(self, grace: float = 5.0) -> None:
        """Close the child gracefully; kill it if that takes over ``grace`` seconds.

        Calls in flight finish, the object's ``aclose()`` or ``close()`` (if it
        has one) runs, and the process exits. Later calls raise
        :class:`~corral.WorkerStopped`.
        """
        await self._service.aclose(grace)

    def kill(self) -> None:
        """Kill the child now, without cleanup and without restart."""
        self._service.kill()

    async def wait_closed(self) -> None:
        """Wait until the child has exited for good."""
        await self._service.wait_closed()

    # -- requests ----------------------------------------------------------------------

    async def _request(
        self, op: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        service: Service = self._service
        messenger = service.messenger
        if messenger is None or service.state == "closing":
            messenger = await service.connected()
        counts: list[int] = self._counts
        counts[0] += 1
        counts[2] += 1
        for arg in args:
            if type(arg) in BINARY:  # a large one travels out of band
                args = tuple(map(wrap_large, args))
                break
        try:
            return await messenger.request((op, name, args, kwargs), channel=CALLS)
        except SerializationError as error:
            counts[1] += 1
            _blame_argument(name, args, kwargs, error)
            raise
        except Exception:
            counts[1] += 1
            raise
        finally:
            counts[2] -= 1

    def _nowait(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        messenger = self._service.messenger
        if messenger is None:
            raise self._service.stopped_error()
        try:
            messenger.send_nowait((Op.CALL, name, args, kwargs), channel=NOWAIT)
        except SerializationError as error:
            _blame_argument(name, args, kwargs, error)
            raise


class Proxy(ProxyBase[T]):
    """The host's handle on an object living in a child process.

    Every public method of the object is called with ``await
    proxy.method(...)``; async-generator (and generator) methods are
    iterated with ``async for x in proxy.method(...)``; attributes and
    properties are read with ``await proxy.name`` and written with ``await
    proxy.set_attr(name, value)``. An exception raised in the child is raised
    here as the same type, with the child's traceback as a note (or as
    :class:`~corral.RemoteError` when it will not unpickle here).

    When the child dies, calls in flight raise :class:`~corral.WorkerCrashed`;
    with a restart policy, later calls go to the new child.
    """

    def statistics(self) -> ProxyStatistics:
        """Calls, errors and calls in flight through this proxy; the child's RSS and CPU %."""
        statistics: ProxyStatistics = self._service.statistics()
        return statistics


class _ProxyStream:
    """``async for x in proxy.method(...)``: sent on the first step, so it can wait
    through a restart."""

    __slots__ = ("_args", "_inner", "_kwargs", "_name", "_proxy")

    def __init__(
        self, proxy: ProxyBase[Any], name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._proxy = proxy
        self._name = name
        self._args = args
        self._kwargs = kwargs
        self._inner: ReplyStream | None = None

    def __aiter__(self) -> _ProxyStream:
        return self

    async def __anext__(self) -> Any:
        counts: list[int] = self._proxy._counts
        if self._inner is None:
            messenger = await self._proxy._service.connected()
            counts[0] += 1
            try:
                self._inner = messenger.request_stream(
                    (Op.STREAM, self._name, self._args, self._kwargs), channel=CALLS
                )
            except SerializationError as error:
                counts[1] += 1
                _blame_argument(self._name, self._args, self._kwargs, error)
                raise
        counts[2] += 1  # in flight while waiting for an item
        try:
            return await self._inner.__anext__()
        except StopAsyncIteration:
            raise
        except Exception:  # (a cancelled step is not an error of the stream, nor of a call)
            counts[1] += 1
            raise
        finally:
            counts[2] -= 1

    async def aclose(self) -> None:
        """Stop the stream early (the child stops producing)."""
        if self._inner is not None:
            await self._inner.aclose()


def _blame_argument(
    method: str, args: tuple[Any, ...], kwargs: dict[str, Any], error: SerializationError
) -> None:
    """Raise a SerializationError naming the argument that will not pickle, if one won't."""
    labelled: list[tuple[str, Any]] = [(f"argument {i}", a) for i, a in enumerate(args)]
    labelled += [(f"argument {k}=", v) for k, v in kwargs.items()]
    for label, value in labelled:
        try:
            dumps(value)
        except SerializationError as culprit:
            raise SerializationError(
                f"{method}(): {label} cannot cross to the child: {culprit}",
                argument=label.removeprefix("argument ").rstrip("="),
            ) from error

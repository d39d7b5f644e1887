"""Logging across the process boundary: a child's records are logged by the host.

The child's root logger gets a :class:`LogForwarder` that sends each record
as a message on the :data:`LOGS` channel; the host logs it again under the
same logger name, with ``processName`` (and a ``child`` attribute) set to the
child's name, so the host's logging configuration decides where it goes.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from typing import Any, Final

from ._messenger import Messenger

LOGS: Final = "__corral_logs__"


class LogForwarder(logging.Handler):
    """Sends each log record to the host, where it is logged under the same name."""

    def __init__(self) -> None:
        super().__init__()
        self._messenger: Messenger | None = None
        self._loop_thread = threading.get_ident()
        self._early: list[dict[str, Any]] = []
        self._sending = threading.local()
        self._call_soon: Any = None

    def attach(self, channel: Messenger) -> None:
        import asyncio  # noqa: PLC0415  (the child always runs on asyncio)

        self._call_soon = asyncio.get_running_loop().call_soon_threadsafe
        self._loop_thread = threading.get_ident()
        self._messenger = channel
        early, self._early = self._early, []
        for payload in early:
            self._send(payload)

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._sending, "active", False):
            return  # a record logged while sending one: would loop
        try:
            payload = _record_payload(record, self)
        except Exception:
            self.handleError(record)
            return
        if self._messenger is None:
            self._early.append(payload)
        elif threading.get_ident() == self._loop_thread:
            self._send(payload)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._call_soon(self._send, payload)

    def _send(self, payload: dict[str, Any]) -> None:
        assert self._messenger is not None
        self._sending.active = True
        try:
            self._messenger.send_nowait(payload, channel=LOGS)
        except Exception:  # the host is gone, or the record will not pickle
            sys.stderr.write(f"{payload.get('name')}: {payload.get('msg')}\n")
        finally:
            self._sending.active = False


def _record_payload(record: logging.LogRecord, handler: logging.Handler) -> dict[str, Any]:
    payload = dict(record.__dict__)
    payload["msg"] = record.getMessage()
    payload["args"] = None
    if record.exc_info:
        payload["exc_text"] = (handler.formatter or logging.Formatter()).formatException(
            record.exc_info
        )
    payload["exc_info"] = None
    return {k: v for k, v in payload.items() if _plain(v)}


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool | tuple | list | dict)


def relog(child: str, payload: dict[str, Any]) -> None:
    """Log a record forwarded from ``child`` on the host, under its own logger name."""
    record = logging.makeLogRecord(payload)
    record.processName = child
    record.child = child
    target = logging.getLogger(record.name)
    if target.isEnabledFor(record.levelno):
        target.handle(record)

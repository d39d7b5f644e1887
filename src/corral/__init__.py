"""corral: asyncio-native workers, supervised.

Everything public is re-exported here; the modules behind it are private.
"""

from __future__ import annotations

import contextlib
import logging

from . import testing as testing
from ._answers import Request as Request
from ._control import ControlLoop as ControlLoop
from ._dask import DaskBackend as DaskBackend
from ._errors import CloseRequested as CloseRequested
from ._errors import CorralError as CorralError
from ._errors import HooksFailed as HooksFailed
from ._errors import OnFinishError as OnFinishError
from ._errors import PostRunError as PostRunError
from ._errors import PreRunError as PreRunError
from ._errors import ProcessError as ProcessError
from ._errors import ProcessTimeout as ProcessTimeout
from ._errors import ProtocolError as ProtocolError
from ._errors import QueueFull as QueueFull
from ._errors import RemoteError as RemoteError
from ._errors import ResultError as ResultError
from ._errors import RunError as RunError
from ._errors import SerializationError as SerializationError
from ._errors import StartupError as StartupError
from ._errors import StepFailed as StepFailed
from ._errors import SupervisorNotRunning as SupervisorNotRunning
from ._errors import WorkerCrashed as WorkerCrashed
from ._errors import WorkerFailed as WorkerFailed
from ._errors import WorkerStopped as WorkerStopped
from ._hooks import HookResults as HookResults
from ._hooks import Hooks as Hooks
from ._job import Job as Job
from ._job import ProcessTimers as ProcessTimers
from ._lifetime import ProxyStatistics as ProxyStatistics
from ._lifetime import RestartEvent as RestartEvent
from ._lifetime import SupervisorStatistics as SupervisorStatistics
from ._loophost import ControlLoopProxy as ControlLoopProxy
from ._loopstats import ControlLoopStatistics as ControlLoopStatistics
from ._loopstats import Percentiles as Percentiles
from ._mapiter import MapIterator as MapIterator
from ._messenger import Messenger as Messenger
from ._pool import Pool as Pool
from ._pool import PoolStatistics as PoolStatistics
from ._pool import StarPool as StarPool
from ._process import Process as Process
from ._process import Timeouts as Timeouts
from ._proxy import Proxy as Proxy
from ._proxy import RemoteAttribute as RemoteAttribute
from ._run import run as run
from ._scheduler import IntervalWorker as IntervalWorker
from ._serving import messenger as messenger
from ._serving import threaded as threaded
from ._specs import WorkerSpec as WorkerSpec
from ._specs import event_worker as event_worker
from ._specs import interval as interval
from ._specs import loop_worker as loop_worker
from ._specs import queue_worker as queue_worker
from ._standalone import control_loop as control_loop
from ._standalone import open_worker as open_worker
from ._standalone import spawn as spawn
from ._standalone import start as start
from ._supervisor import Supervisor as Supervisor
from ._timing import Timer as Timer
from ._timing import TimingSummary as TimingSummary
from ._timing import catchtime as catchtime
from ._worker import Worker as Worker
from ._worker import WorkerState as WorkerState
from ._worker import WorkerStatistics as WorkerStatistics
from ._worker import WorkerTimers as WorkerTimers
from ._workers import EventWorker as EventWorker
from ._workers import LoopWorker as LoopWorker
from ._workers import QueueWorker as QueueWorker

__version__ = "0.1.0"

__all__ = [
    "CloseRequested",
    "ControlLoop",
    "ControlLoopProxy",
    "ControlLoopStatistics",
    "CorralError",
    "DaskBackend",
    "EventWorker",
    "HookResults",
    "Hooks",
    "HooksFailed",
    "IntervalWorker",
    "Job",
    "LoopWorker",
    "MapIterator",
    "Messenger",
    "OnFinishError",
    "Percentiles",
    "Pool",
    "PoolStatistics",
    "PostRunError",
    "PreRunError",
    "Process",
    "ProcessError",
    "ProcessTimeout",
    "ProcessTimers",
    "ProtocolError",
    "Proxy",
    "ProxyStatistics",
    "QueueFull",
    "QueueWorker",
    "RemoteAttribute",
    "RemoteError",
    "Request",
    "RestartEvent",
    "ResultError",
    "RunError",
    "SerializationError",
    "StarPool",
    "StartupError",
    "StepFailed",
    "Supervisor",
    "SupervisorNotRunning",
    "SupervisorStatistics",
    "Timeouts",
    "Timer",
    "TimingSummary",
    "Worker",
    "WorkerCrashed",
    "WorkerFailed",
    "WorkerSpec",
    "WorkerState",
    "WorkerStatistics",
    "WorkerStopped",
    "WorkerTimers",
    "catchtime",
    "control_loop",
    "event_worker",
    "interval",
    "loop_worker",
    "messenger",
    "open_worker",
    "queue_worker",
    "run",
    "spawn",
    "start",
    "testing",
    "threaded",
]

# Tracebacks and reprs say corral.X, not corral._module.X (as trio does).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("corral._"):
        with contextlib.suppress(AttributeError, TypeError):
            _obj.__module__ = __name__
del _name, _obj

logging.getLogger(__name__).addHandler(logging.NullHandler())

"""What the Dagster daemon prints about the `gpu` pool and our sensors, made readable and said once per change.

The daemon (`dagster dev`, `dagster-daemon run`) is a process of its own that imports nothing of the code location;
the one hook Dagster gives into it is the instance's configurable classes (`deploy/local/dagster.yaml`).
`ReadableQueuedRunCoordinator` is Dagster's queued run coordinator, unchanged, whose construction puts two filters on
the daemon's loggers; every line they do not recognise (or one a later Dagster words otherwise) passes as it is.

- The run queue logs a run held back by a pool limit as raw counters: "Run <id> is blocked by global concurrency
  limits: {"gpu": {"granularity": "run", "slot_count": 1, ...}}". It becomes "Run <id> waits in the queue for pool
  'gpu': 1 of 1 slot(s) taken (...)" (`pools.describe_pool_wait`).
- The sensor daemon logs a sensor's skip reason on every tick ("Sensor model_catalog_sensor skipped: nothing
  missing", every 30 s). A line about a sensor is said again only when it differs from the previous line about that
  sensor (a launch in between, a new reason); the tick's heartbeat ("Checking for new runs for sensor: ...") stays.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from typing import Any

from dagster._core.run_coordinator.queued_run_coordinator import QueuedRunCoordinator

from assets.pools import describe_pool_wait

# The daemons' loggers: `dagster._daemon.daemon.get_default_daemon_logger(<daemon class name>)`.
QUEUE_LOGGER = "dagster.daemon.QueuedRunCoordinatorDaemon"
SENSOR_LOGGER = "dagster.daemon.SensorDaemon"
_BLOCKED = re.compile(r"Run (?P<run>\S+) is blocked by global concurrency limits: (?P<counts>\{.*\})", re.S)
_HEARTBEAT = "Checking for new runs for sensor: "  # every tick, first


class ReadablePoolWaits(logging.Filter):
    """Rewrites the run queue's raw-JSON "blocked by global concurrency limits" line into words."""

    def filter(self, record: logging.LogRecord) -> bool:
        found = _BLOCKED.fullmatch(record.getMessage())
        if found:
            try:
                counts = json.loads(found["counts"])
            except ValueError:
                return True
            record.msg, record.args = f"Run {found['run']} {describe_pool_wait(counts)}", ()
        return True


class SensorLinesOncePerChange(logging.Filter):
    """Drops a line about a sensor that repeats the previous line about that sensor (its skip reason every tick,
    "Skipping 1 run ... already completed with run keys" every tick); the per-tick heartbeat passes, once a tick."""

    def __init__(self) -> None:
        super().__init__()
        self._last: dict[str, str] = {}  # sensor -> the last line about it
        self._lock = threading.Lock()  # sensors may tick in the daemon's worker threads

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        with self._lock:
            if message.startswith(_HEARTBEAT):  # names the sensor ticking: the lines after it are about it
                self._last.setdefault(message[len(_HEARTBEAT) :].strip(), "")
                return True
            about = [s for s in self._last if re.search(rf"(?<![\w-]){re.escape(s)}(?![\w-])", message)]
            repeat = bool(about) and all(self._last[s] == message for s in about)
            self._last.update(dict.fromkeys(about, message))
        return not repeat


def install_daemon_log_filters() -> None:
    """Put the filters on the daemon's loggers, once per process."""
    for name, kind in ((QUEUE_LOGGER, ReadablePoolWaits), (SENSOR_LOGGER, SensorLinesOncePerChange)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())


class ReadableQueuedRunCoordinator(QueuedRunCoordinator):
    """Dagster's `QueuedRunCoordinator` (same settings, `concurrency:` in dagster.yaml), installing the filters in
    every process that loads the instance: the daemon, and harmlessly the webserver and runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        install_daemon_log_filters()

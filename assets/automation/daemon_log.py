"""What the Dagster daemon prints about the `gpu` pool and our sensors, made readable and said once per change.

The daemon (`dagster dev`, `dagster-daemon run`) is a process of its own that imports nothing of the code location;
the one hook Dagster gives into it is the instance's configurable classes (`deploy/local/dagster.yaml`).
`ReadableQueuedRunCoordinator` is Dagster's queued run coordinator, unchanged, whose construction puts filters on three
of the daemon's loggers; every line they do not recognise (or one a later Dagster words otherwise) passes as it is.

- The run queue logs a run held back by a pool limit as raw counters: "Run <id> is blocked by global concurrency
  limits: {"gpu": {"granularity": "run", "slot_count": 1, ...}}". It becomes "Run <id> waits in the queue for pool
  'gpu': 1 of 1 slot(s) taken (...)" (`pools.describe_pool_wait`).
- The sensor and automation daemons log every tick of every sensor, alike or not: "Checking for new runs for sensor:
  model_catalog_sensor" and "Sensor model_catalog_sensor skipped: nothing missing" every 30 s, and six lines a tick
  for `refresh_results` ("Checking 4 assets/checks ...", "Tick produced 0 runs ...", ...). A tick's line is said
  only when that sensor's previous tick did not have it too (evaluation ids aside): a sensor with nothing new is quiet.
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
AUTOMATION_LOGGER = "dagster.daemon.AssetDaemon"
_BLOCKED = re.compile(r"Run (?P<run>\S+) is blocked by global concurrency limits: (?P<counts>\{.*\})", re.S)
# The first line of a tick, naming the sensor: the lines up to the next such line belong to that tick.
SENSOR_TICK = re.compile(r"Checking for new runs for sensor: (?P<sensor>\S+)")
AUTOMATION_TICK = re.compile(r"Checking \d+ assets/checks and \d+ observable source assets? for (?P<sensor>\S+)")
_EVALUATION_ID = re.compile(r"(evaluation(?: ID)?) \d+")  # a new one every tick: not news


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


class TicksOncePerChange(logging.Filter):
    """Drops a line of a sensor's tick that the sensor's previous tick also had: only what changed is said."""

    def __init__(self, tick_start: re.Pattern[str]) -> None:
        super().__init__()
        self._start = tick_start
        self._previous: dict[str, set[str]] = {}  # sensor -> the lines of its previous tick
        self._tick: tuple[str, set[str]] | None = None  # the tick going on: its sensor, its lines so far
        self._lock = threading.Lock()  # sensors may tick in the daemon's worker threads

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        line = _EVALUATION_ID.sub(r"\1 <id>", message)
        with self._lock:
            started = self._start.match(message)
            if started:
                if self._tick is not None:
                    self._previous[self._tick[0]] = self._tick[1]
                self._tick = (started["sensor"], set())
            if self._tick is None:  # before the first tick (start-up lines)
                return True
            sensor, lines = self._tick
            lines.add(line)
            return line not in self._previous.get(sensor, set())


def install_daemon_log_filters() -> None:
    """Put the filters on the daemon's loggers, once per process."""
    filters = {
        QUEUE_LOGGER: ReadablePoolWaits,
        SENSOR_LOGGER: lambda: TicksOncePerChange(SENSOR_TICK),
        AUTOMATION_LOGGER: lambda: TicksOncePerChange(AUTOMATION_TICK),
    }
    for name, make in filters.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, (ReadablePoolWaits, TicksOncePerChange)) for f in logger.filters):
            logger.addFilter(make())


class ReadableQueuedRunCoordinator(QueuedRunCoordinator):
    """Dagster's `QueuedRunCoordinator` (same settings, `concurrency:` in dagster.yaml), installing the filters in
    every process that loads the instance: the daemon, and harmlessly the webserver and runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        install_daemon_log_filters()

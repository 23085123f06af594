"""Stage progress, for whoever shows it: one reporter per process, silent until a front end activates one.

Stages report from the process they run in. A flow run by the command line runs in the CLI's
own process, and so do the stages that report here: :func:`flows.pipeline.run_windowed` (it
counts the Dask tasks of preprocessing, encoding and assignment as their results come back) and
the training loops (epochs). In Dask worker processes, in tests and in library use no reporter
is active and every call returns at once.

    progress.start("encode", total=6, unit="tasks")
    progress.advance("encode")               # one more done; the stage ends when it reaches its total
    progress.update("train", 3, total=12)    # 3 of 12 done (a resumed run starts part-way); opens the stage if needed
    progress.done("train")                   # ends it before its total (early stopping), or one without a total
    progress.note("resuming from epoch 3")   # a line for the user, above the bars

The command line activates a :class:`RichReporter` (bars with an ETA on a terminal, one line
per finished stage anywhere).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Stage:
    name: str
    total: int | None = None
    unit: str = ""
    completed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def summary(self) -> str:
        """``"4/4 tasks in 1.2 s"``: how far it got, and how long it took."""
        if self.total == 0:
            return "nothing to do"
        count = f"{self.completed}/{self.total}" if self.total is not None else f"{self.completed}"
        unit = self.unit[:-1] if self.total is None and self.completed == 1 and self.unit.endswith("s") else self.unit
        return f"{count}{' ' if unit else ''}{unit} in {time.perf_counter() - self.started:.1f} s"


class Reporter:
    """Keeps the open stages; a subclass shows them through :meth:`opened`, :meth:`moved`,
    :meth:`ended` and :meth:`note`. This base shows nothing."""

    def __init__(self) -> None:
        self.stages: dict[str, Stage] = {}
        self._lock = threading.RLock()

    def start(self, name: str, total: int | None = None, unit: str = "") -> None:
        with self._lock:
            stage = self.stages[name] = Stage(name, total, unit)
            self.opened(stage)
            if total == 0:
                self.done(name)

    def update(self, name: str, completed: int | None = None, advance: int = 0, total: int | None = None, unit: str = "") -> None:
        with self._lock:
            if name not in self.stages:
                self.start(name, total, unit)
                if name not in self.stages:  # (a total of 0 ends it at once)
                    return
            stage = self.stages[name]
            stage.completed = (stage.completed if completed is None else completed) + advance
            self.moved(stage)
            if stage.total is not None and stage.completed >= stage.total:
                self.done(name)

    def done(self, name: str) -> None:
        with self._lock:
            stage = self.stages.pop(name, None)
            if stage is not None:
                self.ended(stage)

    def close(self) -> None:
        """Stop showing anything; stages still open (a failed run's) are dropped without a line."""
        with self._lock:
            self.stages.clear()

    def opened(self, stage: Stage) -> None: ...

    def moved(self, stage: Stage) -> None: ...

    def ended(self, stage: Stage) -> None: ...

    def note(self, message: str) -> None: ...


_active: Reporter | None = None


def activate(reporter: Reporter) -> Reporter:
    """Make ``reporter`` this process's reporter (closing the one before); returns it."""
    global _active
    previous, _active = _active, reporter
    if previous is not None and previous is not reporter:
        previous.close()
    return reporter


def deactivate() -> None:
    """Back to silence; the active reporter is closed."""
    global _active
    previous, _active = _active, None
    if previous is not None:
        previous.close()


def active() -> Reporter | None:
    return _active


def start(stage: str, total: int | None = None, unit: str = "") -> None:
    """Open ``stage`` with ``total`` steps (None: not known in advance); an open one of that name starts over."""
    if (r := _active) is not None:
        r.start(stage, total, unit)


def advance(stage: str, n: int = 1, total: int | None = None, unit: str = "") -> None:
    """``n`` more steps of ``stage`` done (opening it with ``total`` if it is not open)."""
    if (r := _active) is not None:
        r.update(stage, advance=n, total=total, unit=unit)


def update(stage: str, completed: int, total: int | None = None, unit: str = "") -> None:
    """``completed`` steps of ``stage`` done in all (opening it with ``total`` if it is not open)."""
    if (r := _active) is not None:
        r.update(stage, completed=completed, total=total, unit=unit)


def done(stage: str) -> None:
    """``stage`` ended (it need not have reached its total); nothing if it is not open."""
    if (r := _active) is not None:
        r.done(stage)


def note(message: str) -> None:
    """A line for the user (shown above any bars)."""
    if (r := _active) is not None:
        r.note(message)


def keras_callback(stage: str = "train", unit: str = "epochs"):
    """A Keras callback reporting ``fit``'s epochs as ``stage``; ends the stage when ``fit`` ends
    (early stopping ends it before its total). A resumed ``fit`` (``initial_epoch``) counts from there."""
    import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            start(stage, (self.params or {}).get("epochs"), unit)

        def on_epoch_end(self, epoch, logs=None):
            update(stage, epoch + 1)

        def on_train_end(self, logs=None):
            done(stage)

    return EpochProgress()


class RichReporter(Reporter):
    """Stages as rich progress bars with an ETA on ``console`` (on a terminal, while they run;
    cleared when they end), and one line per finished stage (anywhere: also when the output is a
    file or a pipe, where rich draws no bars). ``live=False``: only the lines."""

    def __init__(self, console, live: bool = True, title: str | None = None) -> None:
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        super().__init__()
        self.console = console
        self.bars = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"),
            TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
            console=console, transient=True, disable=not (live and console.is_interactive),  # (no bars in a file or pipe)
        )
        self._ids: dict[str, int] = {}
        self.bars.start()
        if title:  # a row for the whole command, so that its start-up shows too
            self.bars.add_task(title, total=None, count="")

    def opened(self, stage: Stage) -> None:
        if stage.name in self._ids:
            self.bars.remove_task(self._ids.pop(stage.name))
        self._ids[stage.name] = self.bars.add_task(stage.name, total=stage.total, count=self._count(stage))

    def moved(self, stage: Stage) -> None:
        if stage.name in self._ids:
            self.bars.update(self._ids[stage.name], completed=stage.completed, count=self._count(stage))

    def ended(self, stage: Stage) -> None:
        from rich.text import Text

        if stage.name in self._ids:
            self.bars.remove_task(self._ids.pop(stage.name))
        self.console.print(Text.assemble((stage.name, "bold"), f": {stage.summary()}"), soft_wrap=True, highlight=False)

    def note(self, message: str) -> None:
        from rich.text import Text

        self.console.print(Text(message, style="dim"), soft_wrap=True, highlight=False)

    def close(self) -> None:
        super().close()
        self.bars.stop()

    @staticmethod
    def _count(stage: Stage) -> str:
        return f"{stage.completed}/{stage.total if stage.total is not None else '?'} {stage.unit}".rstrip()

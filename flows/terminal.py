"""What a command shows on the terminal: stage progress, the run's own notes, warnings, errors, the summary.

Where the noise of a run came from, and where it goes instead (``AUDIOCLUST_LOG_LEVEL`` unset):

* TensorFlow's C++ start-up lines ("oneDNN custom operations are on", "This TensorFlow binary is
  optimized...", "oneDNN supports DT_INT32 only on platforms with AVX-512"), each after abseil's
  "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR". They
  are written to file descriptor 2 from C++ by every process that imports TensorFlow: the
  command's (training, local assign) and each Dask worker's (encoding). TensorFlow 2.21 writes
  them before its log level is read, so ``TF_CPP_MIN_LOG_LEVEL`` does not stop them. Here fd 2
  of the command's process, which the Dask workers and the Prefect server it starts inherit, is
  a pipe: a thread passes its lines on and drops those (:data:`NATIVE_NOISE`). Python's own
  ``sys.stderr`` keeps the terminal, so rich still sees one.
* Prefect's INFO lines for every flow and task run. Prefect's console handler is set to WARNING
  through ``PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL`` (the workers read it at start-up); its API
  handler is not touched, so the dashboard and the API keep every task's log. In the command's
  process the console handler is replaced by one that prints through the command's rich
  console, above the progress bars: the run's own lines (logged by flows/, tasks/, storage/)
  and warnings, one line each, except what the bars and the summary show; library records only
  from ERROR, and not a flow's failure, which the command reports itself.
* Library warnings (Python ``warnings``): captured into logging and dropped in the command's
  process; ``PYTHONWARNINGS=ignore`` in the processes it starts. Dask's own log: from ERROR.

``AUDIOCLUST_LOG_LEVEL``: ``WARNING`` (only warnings and errors) or ``ERROR`` (only errors) show
less; ``INFO`` shows Prefect's whole log as before (TensorFlow's lines still dropped);
``DEBUG``, or ``--verbose``/``-v``, changes nothing: every line as the libraries write it.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import select
import sys
import threading
from pathlib import Path

LEVELS = ("DEBUG", "INFO", "NOTES", "WARNING", "ERROR")  # NOTES: the default (unset)

NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+\s+\d+ [\w./-]+:\d+\] "  # abseil: I0000 00:00:1796024458.864666    4502 port.cc:153] oneDNN custom ...
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] [\w./-]+:\d+\] "  # TensorFlow's: 2024-05-01 10:00:00.1: I tensorflow/...cc:210] ...
    r"|To enable the following instructions: .*rebuild TensorFlow"  # the second line of "This TensorFlow binary is optimized"
)
# the run's own INFO lines that the terminal shows otherwise: counters (the progress bars), the summary's figures
SHOWN_ELSEWHERE = re.compile(
    r"\S+: \d+/\S+ [\w ]*done$"  # flows.pipeline.run_windowed: "encode: 3/6 task ranges done"
    r"|epoch \d+/\d+\b"  # training: "epoch 3/12: loss 0.0317"
    r"|\d+ workers warmed up"
    r"|preprocess: \d+ files, \d+ stored"  # the summary's found, stored, rejected
    r"|NMI [\d.]+ on \d+ labelled"  # the summary's scores
)
PROJECT = tuple(str(Path(__file__).resolve().parents[1] / d) + os.sep for d in ("flows", "tasks", "storage"))


def log_level(verbose: bool = False) -> str:
    """``DEBUG`` with ``--verbose``, else ``AUDIOCLUST_LOG_LEVEL`` (``NOTES`` when unset or unknown)."""
    if verbose:
        return "DEBUG"
    level = os.environ.get("AUDIOCLUST_LOG_LEVEL", "").strip().upper()
    return level if level in LEVELS else "NOTES"


_installed: dict = {}


def quiet(level: str, console, takeover: bool = False) -> None:
    """Quiet what ``level`` hides, before Prefect, Dask or TensorFlow are imported.

    Without ``takeover`` (a command invoked inside another program, e.g. a test's CliRunner) only
    environment defaults are set; with it (the ``audioclust`` executable) this process's fd 2,
    warnings and Prefect console are taken over as the module describes. Once per process."""
    if takeover and level != "DEBUG" and not _installed:
        _installed["level"] = level
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", {"NOTES": "WARNING"}.get(level, level))
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
        try:
            _installed["pipe"] = NativeStderr(console) if os.name == "posix" else None
        except OSError:  # no usable fd 2 (a daemon): nothing to quiet there
            _installed["pipe"] = None
        logging.captureWarnings(True)
        warned = logging.getLogger("py.warnings")
        warned.handlers, warned.propagate = [logging.NullHandler()], False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # Dask's own INFO chatter
    if _installed and "handler" not in _installed:
        _installed["handler"] = route_prefect_console(console, _installed["level"])


def route_prefect_console(console, level: str):
    """Replace Prefect's console handler on the root logger by a :class:`TerminalHandler` on ``console``."""
    import prefect.main  # noqa: F401  (sets up Prefect's logging, once per process)
    from prefect.logging.handlers import PrefectConsoleHandler

    root = logging.getLogger()
    old = [h for h in root.handlers if isinstance(h, PrefectConsoleHandler)]
    if not old:
        return None
    handler = TerminalHandler(console, level, old[0].formatter)
    for h in old:
        root.removeHandler(h)
    root.addHandler(handler)
    return handler


class TerminalHandler(logging.Handler):
    """Log records on a rich console, so that they print above its progress bars."""

    def __init__(self, console, level: str = "NOTES", formatter: logging.Formatter | None = None):
        super().__init__(logging.INFO if level in ("INFO", "NOTES") else getattr(logging, level))
        self.console, self.mode = console, level
        self.setFormatter(formatter or logging.Formatter("%(levelname)s %(name)s - %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.render(record)
            if text is not None:
                self.console.print(text, soft_wrap=True, highlight=False)
        except Exception:
            self.handleError(record)

    def render(self, record: logging.LogRecord):
        """What the terminal shows of ``record``: a rich Text, or None."""
        from rich.text import Text

        if self.mode == "INFO":
            return Text(self.format(record))
        ours = record.pathname.startswith(PROJECT)
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            if not ours and record.name == "prefect.flow_runs" and record.exc_info:
                return None  # the flow's exception reaches the command, which reports it
            first = message.splitlines()[0] if message else ""
            return Text.assemble(("error:", "bold red"), f" {first}")
        if not ours:
            return None  # Prefect's run states, libraries' warnings
        if record.levelno >= logging.WARNING:
            return Text.assemble(("warning:", "yellow"), f" {message}")
        if self.mode == "NOTES" and not SHOWN_ELSEWHERE.match(message):
            return Text(message, style="dim")
        return None


class NativeStderr:
    """File descriptor 2 as a pipe read by a thread: lines that match :data:`NATIVE_NOISE` are
    dropped, the others are printed on ``console``. ``sys.stderr`` is rebound to the original
    stream first. Restored at exit (:meth:`close`), after the pipe is drained. A process killed
    outright (SIGKILL, a C++ abort) can lose the last lines the thread had not passed on yet;
    ``--verbose`` leaves fd 2 alone."""

    def __init__(self, console):
        self.console, self.closed = console, False
        sys.stderr.flush()
        self.saved = os.dup(2)
        read, write = os.pipe()
        sys.stderr = os.fdopen(os.dup(self.saved), "w", buffering=1, encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
                               errors="backslashreplace")
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, args=(read,), name="audioclust-stderr", daemon=True)
        self.thread.start()
        atexit.register(self.close)

    def _pump(self, fd: int) -> None:
        held = b""
        try:
            while True:
                ready, _, _ = select.select([fd], [], [], 0.2 if held else None)
                if not ready:  # a line without its end for a while: show what there is
                    self._line(held)
                    held = b""
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                *lines, held = (held + chunk).split(b"\n")
                for line in lines:
                    self._line(line)
            if held:
                self._line(held)
        finally:
            os.close(fd)

    def _line(self, raw: bytes) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if NATIVE_NOISE.match(line):
            return
        try:
            from rich.text import Text

            self.console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)
        except Exception:  # never lose a line to a display problem
            os.write(self.saved, raw + b"\n")

    def close(self, timeout: float = 2.0) -> None:
        if self.closed:
            return
        try:
            sys.__stderr__.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved, 2)  # our end of the pipe closes; the thread ends when the children's do
        self.thread.join(timeout)
        self.closed = True

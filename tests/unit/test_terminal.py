"""flows.terminal: what the audioclust command lets through to the terminal."""

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from rich.console import Console

from flows import terminal

ROOT = Path(__file__).resolve().parents[2]

NOISE = [  # as TensorFlow 2.21 wrote them at the start of a demo run
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796024458.864666    4502 port.cc:153] oneDNN custom operations are on. You may see slightly different "
    "numerical results due to floating-point round-off errors from different computation orders. To turn them off, set "
    "the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.",
    "E0000 00:00:1796024464.582937    4502 util.cc:131] oneDNN supports DT_INT32 only on platforms with AVX-512. Falling "
    "back to the default Eigen-based implementation if present.",
    "2024-05-01 10:00:00.123456: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow binary is optimized "
    "to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate compiler flags.",
]
KEPT = [
    "F0000 00:00:1796024464.582937    4502 check.cc:10] Check failed: x == y",  # fatal: shown
    "Traceback (most recent call last):",
    "2026-11-30 07:40:15,813 - distributed.worker - ERROR - cannot import name 'file_hash'",
    "07:41:17.121 | WARNING | Task run 'encode-blocks-0-96' - something",
]


@pytest.mark.parametrize("line", NOISE)
def test_tensorflow_start_up_lines_are_noise(line):
    assert terminal.NATIVE_NOISE.match(line)


@pytest.mark.parametrize("line", KEPT)
def test_other_lines_are_not(line):
    assert not terminal.NATIVE_NOISE.match(line)


def test_log_level(monkeypatch):
    monkeypatch.delenv("AUDIOCLUST_LOG_LEVEL", raising=False)
    assert terminal.log_level() == "NOTES" and terminal.log_level(verbose=True) == "DEBUG"
    monkeypatch.setenv("AUDIOCLUST_LOG_LEVEL", "info")
    assert terminal.log_level() == "INFO"
    monkeypatch.setenv("AUDIOCLUST_LOG_LEVEL", "loud")
    assert terminal.log_level() == "NOTES"


def _record(level, message, pathname, name="prefect.flow_runs", exc=False):
    record = logging.LogRecord(name, level, pathname, 1, message, (), None)
    if exc:
        record.exc_info = (ValueError, ValueError("x"), None)
    return record


OURS = str(ROOT / "flows" / "pipeline.py")
PREFECT = "/venv/lib/python3.11/site-packages/prefect/flow_engine.py"


@pytest.mark.parametrize(
    "level, message, pathname, kwargs, shown",
    [
        (logging.INFO, "new store: 96 files listed, 96 new", OURS, {}, "new store: 96 files listed, 96 new"),
        (logging.INFO, "encode: 3/6 task ranges done", OURS, {}, None),  # the bars count these
        (logging.INFO, "epoch 3/12: loss 0.03176", str(ROOT / "tasks" / "train.py"), {"name": "prefect.task_runs"}, None),
        (logging.INFO, "preprocess: 96 files, 96 stored, 0 rejected", OURS, {}, None),  # the summary says it
        (logging.INFO, "Finished in state Completed()", PREFECT, {}, None),
        (logging.WARNING, "20 of 36 files rejected", OURS, {}, "warning: 20 of 36 files rejected"),
        (logging.WARNING, "a library's warning", "/venv/lib/python3.11/site-packages/keras/x.py", {"name": "keras"}, None),
        (logging.ERROR, "Encountered exception during execution: StoreLocked('x')", PREFECT, {"exc": True}, None),  # reported by the command
        (logging.ERROR, "Encountered exception during execution: ValueError('x')\nmore", PREFECT,
         {"exc": True, "name": "prefect.task_runs"}, "error: Encountered exception during execution: ValueError('x')"),
    ],
)
def test_what_the_terminal_shows_of_a_log_record(level, message, pathname, kwargs, shown):
    handler = terminal.TerminalHandler(Console(file=io.StringIO()), "NOTES")
    text = handler.render(_record(level, message, pathname, **kwargs))
    assert (None if text is None else text.plain) == shown


def test_warning_level_drops_the_notes_and_info_level_shows_everything():
    note = _record(logging.INFO, "new store: 96 files listed", OURS)
    assert terminal.TerminalHandler(Console(file=io.StringIO()), "WARNING").level == logging.WARNING
    info = terminal.TerminalHandler(Console(file=io.StringIO()), "INFO", logging.Formatter("%(levelname)s %(message)s"))
    assert info.render(note).plain == "INFO new store: 96 files listed"


def test_the_executable_drops_native_noise_from_itself_and_its_children():
    """fd 2 of a taken-over process, and of the processes it starts, passes everything but the noise."""
    child = f"import os; os.write(2, {(NOISE[2] + chr(10) + 'child line' + chr(10)).encode()!r})"
    script = textwrap.dedent(f"""
        import os, subprocess, sys
        from rich.console import Console
        from flows import terminal
        terminal.quiet("NOTES", Console(stderr=True), takeover=True)
        os.write(2, {(NOISE[0] + chr(10) + NOISE[1] + chr(10) + "native line" + chr(10)).encode()!r})
        subprocess.run([sys.executable, "-c", {child!r}])
        import warnings; warnings.warn("a library warning")
        print("python line", file=sys.stderr)
        import logging; logging.getLogger("some.library").warning("a library's log warning")
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("AUDIOCLUST_LOG_LEVEL", "PYTHONWARNINGS")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert sorted(lines) == ["child line", "native line", "python line"], lines


def test_tensorflow_imported_by_the_executable_says_nothing():
    """The real thing: TensorFlow's start-up and first-op lines (written from C++ whatever
    TF_CPP_MIN_LOG_LEVEL says) do not reach a taken-over stderr."""
    pytest.importorskip("tensorflow")
    script = textwrap.dedent("""
        from rich.console import Console
        from flows import terminal
        terminal.quiet("NOTES", Console(stderr=True), takeover=True)
        import tensorflow as tf
        print(int(tf.reduce_sum(tf.range(3))))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("AUDIOCLUST_LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL")}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr
    assert done.stderr == "", done.stderr

"""The stage-progress reporter (tasks.progress): silent by default, one line per finished stage."""

import io

import pytest
from rich.console import Console

from tasks import progress


class Recording(progress.Reporter):
    def __init__(self):
        super().__init__()
        self.events = []

    def opened(self, stage):
        self.events.append(("opened", stage.name, stage.total, stage.unit))

    def moved(self, stage):
        self.events.append(("moved", stage.name, stage.completed))

    def ended(self, stage):
        self.events.append(("ended", stage.name, stage.completed))

    def note(self, message):
        self.events.append(("note", message))


@pytest.fixture
def recording():
    reporter = progress.activate(Recording())
    yield reporter
    progress.deactivate()


def test_without_a_reporter_every_call_does_nothing():
    assert progress.active() is None
    progress.start("encode", 3)
    progress.advance("encode")
    progress.update("train", 2, total=5)
    progress.done("train")
    progress.note("hello")  # nothing raised, nothing kept


def test_a_stage_ends_when_it_reaches_its_total(recording):
    progress.start("encode", 3, "tasks")
    for _ in range(3):
        progress.advance("encode")
    progress.advance("encode")  # after its end: opens a new one (no total), not an error
    assert recording.events[:5] == [("opened", "encode", 3, "tasks"), ("moved", "encode", 1), ("moved", "encode", 2),
                                    ("moved", "encode", 3), ("ended", "encode", 3)]


def test_update_opens_a_stage_and_counts_from_where_it_is(recording):
    progress.update("train", 4, total=12, unit="epochs")  # a resumed run: 4 of 12 already done
    progress.update("train", 5)
    progress.done("train")  # early stopping: ended before its total
    progress.done("train")  # twice: nothing more
    assert recording.events == [("opened", "train", 12, "epochs"), ("moved", "train", 4), ("moved", "train", 5), ("ended", "train", 5)]


def test_nothing_to_do_ends_at_once_and_notes_pass_through(recording):
    progress.start("preprocess", 0, "tasks")
    progress.note("new store: 3 files")
    assert recording.events == [("opened", "preprocess", 0, "tasks"), ("ended", "preprocess", 0), ("note", "new store: 3 files")]


def test_summary_line():
    assert progress.Stage("encode", 4, "tasks", completed=4).summary().startswith("4/4 tasks in ")
    assert progress.Stage("assign", None, "tasks", completed=1).summary().startswith("1 task in ")
    assert progress.Stage("preprocess", 0, "tasks").summary() == "nothing to do"


def test_activating_another_reporter_closes_the_first():
    first = progress.activate(Recording())
    progress.start("a", 2)
    second = progress.activate(Recording())
    assert first.stages == {} and progress.active() is second
    progress.deactivate()
    assert progress.active() is None


def test_rich_reporter_off_a_terminal_prints_one_line_per_finished_stage():
    out = io.StringIO()
    reporter = progress.activate(progress.RichReporter(Console(file=out, width=200), title="audioclust demo"))
    try:
        progress.note("new store: 96 files listed")
        progress.start("encode", 2, "tasks")
        progress.advance("encode")
        progress.advance("encode")
        progress.update("train", 3, total=12, unit="epochs")
        progress.done("train")
        progress.start("assign", None, "tasks")  # still open when the command ends: no line
    finally:
        progress.deactivate()
    lines = out.getvalue().splitlines()
    assert lines[0] == "new store: 96 files listed"
    assert lines[1].startswith("encode: 2/2 tasks in ") and lines[2].startswith("train: 3/12 epochs in ")
    assert len(lines) == 3 and "\x1b" not in out.getvalue()  # no bars, no blank line, no control codes in a file
    assert reporter.stages == {}


def test_keras_callback_reports_epochs_and_ends_with_fit(recording):
    keras = pytest.importorskip("keras")
    import numpy as np

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, 2), "float32")
    model.fit(x, x[:, :1], epochs=3, initial_epoch=1, verbose=0, callbacks=[progress.keras_callback("train")])
    assert recording.events == [("opened", "train", 3, "epochs"), ("moved", "train", 2), ("moved", "train", 3), ("ended", "train", 3)]

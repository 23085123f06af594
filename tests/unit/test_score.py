"""flows.score.score_run: a finished run scored against labels; each problem is one ScoreError line."""

import json

import pytest

from flows.runs import CommandError
from flows.score import ScoreError, file_name_part, score_run


@pytest.fixture
def run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    rows = [("a/1.wav", 0), ("a/2.wav", 0), ("b/3.wav", 1), ("b/4.wav", 1), ("c/5.wav", 1)]
    (run / "predictions.csv").write_text("file,cluster\n" + "".join(f"{f},{c}\n" for f, c in rows))
    (run / "metrics.json").write_text(json.dumps({"config": {"split_seed": 3}}))
    (tmp_path / "labels.csv").write_text("file,label,kind\n1.wav,a,x\n2.wav,a,x\n3.wav,b,y\n4.wav,b,y\n5.wav,c,\n")
    return run


def test_scores_are_written_beside_the_run(run_dir):
    labels = str(run_dir.parent / "labels.csv")
    result = score_run(run_dir, labels)
    assert (result["clips"], result["labelled"], result["split_seed"]) == (5, 5, 3)  # the run's own split
    assert result["file"] == str(run_dir / "scores-label.json")
    assert json.loads((run_dir / "scores-label.json").read_text())["scores"] == result["scores"]
    spaced = score_run(run_dir, labels, "kind", split_seed=0)
    assert spaced["labelled"] == 4 and spaced["split_seed"] == 0


def test_a_column_name_that_is_not_a_file_name_gets_its_own_file():
    assert file_name_part("label") == "label"
    assert file_name_part("tex ture").startswith("tex_ture-") and file_name_part("tex ture") != file_name_part("tex_ture")


@pytest.mark.parametrize(
    "change, kwargs, code, message",
    [
        (lambda run: (run / "predictions.csv").unlink(), {}, 2, "is not a finished run folder: no predictions.csv"),
        (lambda run: None, {"labels": "/no/labels.csv"}, 2, "labels file not found"),
        (lambda run: None, {"label_column": "speaker"}, 2, "needs columns 'file' and 'speaker'"),
        (lambda run: (run / "metrics.json").write_text("{not json"), {}, 2, "cannot read the run's split seed"),
        (lambda run: (run / "predictions.csv").write_text("name,group\nx,1\n"), {}, 2, "(columns file,cluster expected)"),
        (lambda run: (run / "predictions.csv").write_text("file,cluster\n"), {}, 1, "lists no clips"),
        (lambda run: (run.parent / "labels.csv").write_text("file,label\n1.wav,a\n"), {}, 1,
         "1 of the 5 clustered files has a label in column 'label'"),
    ],
)
def test_each_problem_is_one_line_with_its_exit_status(run_dir, change, kwargs, code, message):
    change(run_dir)
    args = {"labels": str(run_dir.parent / "labels.csv"), **kwargs}
    with pytest.raises(ScoreError) as raised:
        score_run(run_dir, **args)
    assert isinstance(raised.value, CommandError) and raised.value.code == code
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert not list(run_dir.glob("scores-*.json"))


def test_a_run_folder_that_cannot_be_written(run_dir):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    run_dir.chmod(0o555)
    try:
        with pytest.raises(ScoreError, match="cannot write run folder"):
            score_run(run_dir, str(run_dir.parent / "labels.csv"))
    finally:
        run_dir.chmod(0o755)

import pytest
from typer.testing import CliRunner

from flows.cli import app
from flows.config import ConfigError, load_config
from flows.corpus import label_lookup, read_labels, scan


def test_presets():
    seed = load_config("seed")
    a, t = seed.audio, seed.training
    assert (a.n_mels, a.n_frames, a.block, a.channels) == (288, 432, 144, 3)
    assert (t.batch_size, t.min_delta, t.patience, t.epochs, seed.clustering.k) == (4, 0.009, 15, 200, 20)
    assert (seed.model.code_side(a.block), seed.model.code_channels) == (9, 1)
    assert load_config("fast").training.epochs < 50
    default = load_config("default")
    assert (default.model.objective, default.audio.block, default.audio.n_mels, default.audio.duration) == ("contrastive", "image", 64, "auto")
    assert default.clustering.method == "consensus" and default.clustering.dec_batch_size == 256
    pca = lambda c: c.features.pca_components(c.clustering)  # noqa: E731
    assert (default.features.standardize, default.features.whiten, pca(default)) == (True, True, 64)  # k = 20 -> 4 k, capped
    assert pca(load_config("default", k=10)) == 40
    assert pca(load_config("default", k=10, cluster="kmeans")) == 16  # one K-Means: 1.6 k
    assert load_config("default", k=10).clustering.consensus_runs == 100
    with pytest.raises(ConfigError, match="sub-spaces of principal components"):
        load_config("default", pca=0)
    assert (default.training.temperature, default.training.freq_shift, default.training.mix, default.training.freq_warp) == (0.2, "both", "add", 0.07)
    with pytest.raises(ConfigError, match="training.mix"):
        load_config("fast", training={"mix": "power"})  # the autoencoder has no views to mix
    with pytest.raises(ConfigError, match="training.freq_warp"):
        load_config("fast", training={"freq_warp": 0.07})
    with pytest.raises(ConfigError, match=r"training.freq_warp must be in \[0, 1\]"):
        load_config("default", training={"freq_warp": -0.1})
    with pytest.raises(ConfigError, match="audio.block 'image'"):
        load_config("default", audio={"block": 32})
    assert (default.model.input_norm, default.training.batch_size) == (("clip", "pcen"), 32)
    assert load_config("default", model={"input_norm": "clip"}).model.input_norm == ("clip",)  # one network, as before
    with pytest.raises(ValueError, match="from the saved encoder"):  # one part per network trained, which the settings do not fix
        default.model.code_size(64)
    with pytest.raises(ConfigError, match="training.freq_shift must be >= 0, 'auto' or 'both'"):
        load_config("default", training={"freq_shift": -1})
    with pytest.raises(ConfigError, match="one block per clip"):  # codes side by side: one block per clip
        load_config("default", training={"freq_warp": 0}, audio={"block": 32})
    with pytest.raises(ConfigError, match="reads a dB spectrogram"):
        load_config("default", audio={"channels": 3})
    with pytest.raises(ConfigError, match="model.input_norm"):
        load_config("fast", model={"input_norm": "pcen"})  # the autoencoder has no input normalization
    with pytest.raises(ConfigError, match="a list of different ones"):
        load_config("default", model={"input_norm": ["clip", "clip"]})
    assert default.model.envelope == 0.5 and load_config("seed").model.envelope == 0.0  # the report's input is untouched
    with pytest.raises(ConfigError, match="model.envelope"):
        load_config("default", model={"input_norm": "band"})  # per-band corpus z-scores keep every envelope whole
    with pytest.raises(ConfigError, match=r"model.envelope.*in \[0, 1\]"):
        load_config("default", model={"envelope": 1.5})


def test_precedence_preset_file_env_cli(tmp_path, monkeypatch):
    f = tmp_path / "c.toml"
    f.write_text("k = 5\nepochs = 3\nbatch_size = 8\n")
    monkeypatch.setenv("AUDIOCLUST_EPOCHS", "7")
    c = load_config("seed", file=f, batch_size=2)
    assert (c.clustering.k, c.training.epochs, c.training.batch_size) == (5, 7, 2)


def test_the_preset_named_by_the_caller_wins_over_environment_and_file(tmp_path, monkeypatch):
    f = tmp_path / "c.toml"
    f.write_text('preset = "seed"\nk = 5\n')
    assert load_config(None, file=f).preset == "seed"
    assert load_config("fast", file=f).preset == "fast" and load_config("fast", file=f).clustering.k == 5  # file fields still apply
    monkeypatch.setenv("AUDIOCLUST_PRESET", "default")
    assert load_config(None, file=f).preset == "default"  # environment over file
    assert load_config("fast", file=f).preset == "fast"  # --preset over both
    monkeypatch.delenv("AUDIOCLUST_PRESET")
    assert load_config(None, fallback="fast").preset == "fast"  # demo: fast unless named anywhere
    assert load_config(None).preset == "default"


def test_bad_configuration_is_one_clear_error(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("nope")
    with pytest.raises(ConfigError, match="does not split"):
        load_config("seed", block=100)
    monkeypatch.setenv("AUDIOCLUST_K", "many")
    with pytest.raises(ConfigError, match="AUDIOCLUST_"):
        load_config("seed")


def test_discover_and_labels(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.wav", "sub/a.ogg", ".hidden.wav", "labels.csv"):
        (tmp_path / name).write_text("x")
    assert [e.path for e in scan(tmp_path, exclude=(tmp_path / "labels.csv",))] == ["b.wav", "sub/a.ogg"]
    # linked folders are walked (a dataset folder linked in), a link back up the tree only once
    (tmp_path.parent / f"{tmp_path.name}-elsewhere").mkdir()
    (tmp_path.parent / f"{tmp_path.name}-elsewhere" / "c.wav").write_text("x")
    (tmp_path / "linked").symlink_to(tmp_path.parent / f"{tmp_path.name}-elsewhere")
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)
    assert [e.path for e in scan(tmp_path, exclude=(tmp_path / "labels.csv",))] == ["b.wav", "linked/c.wav", "sub/a.ogg"]
    (tmp_path / "labels.csv").write_text("file,label,extra\nb.wav,dog,1\na.ogg,cat,2\n")
    labels = read_labels(tmp_path / "labels.csv")
    assert [label_lookup(labels)(p) for p in ["b.wav", "sub/a.ogg", "c.wav"]] == ["dog", "cat", ""]


runner = CliRunner()


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "/does/not/exist"], "input folder not found"),
        (["run", ".", "--preset", "huge"], "unknown preset"),
        (["run", ".", "--labels", "/no/labels.csv"], "labels file not found"),
        (["preprocess", "/does/not/exist", "--store", "/tmp/x.zarr"], "input folder not found"),
        (["run", ".", "--config", "/no/c.toml"], "config file not found"),
        (["run", ".", "--features", "spectra"], "features"),
        (["run", ".", "--cluster", "dbscan"], "cluster"),
        (["run", ".", "--preset", "fast", "--epochs", "auto"], "epochs 'auto' is for the contrastive objective"),
        (["assign", "/does/not/exist", "--model", "."], "input folder not found"),
        (["assign", ".", "--model", ".", "--local", "--n-workers", "2"], "--local runs in this process"),
        (["serve", ".", "--watch", "0"], "--watch takes a number of seconds >= 1"),
        (["serve", ".", "--cron", "0 2 * * *", "--watch", "60"], "exactly one of --cron or --watch"),
        (["serve", ".", "--watch", "60", "--config", "/no/c.toml"], "config file not found"),
        (["serve", ".", "--watch", "60", "--k", "1"], "k (the number of clusters) must be at least 2, got 1"),
        (["run", ".", "--k", "0"], "k (the number of clusters) must be at least 2, got 0"),
        (["run", ".", "--k", "many"], "clustering.k: 'many' is not accepted"),
        (["run", ".", "--k", "auto", "--k-min", "5", "--k-max", "3"], "k_max (3) must be at least k_min (5)"),
        (["run", ".", "--n-workers", "0"], "n_workers must be at least 1, got 0"),
        (["run", ".", "--epochs", "many"], "epochs: 'many' is not accepted"),
        (["run", "pyproject.toml"], "input is a file, not a folder: pyproject.toml"),
        (["run", ".", "--out", "pyproject.toml/run"], "cannot write the run folder pyproject.toml/run"),
        (["run", ".", "--store", "pyproject.toml/s.zarr"], "cannot write the store's folder"),
        (["preprocess", ".", "--store", "pyproject.toml/s.zarr"], "cannot write the store's folder"),
    ],
)
def test_cli_errors_are_one_line(args, message):
    """A wrong option or path: exit 2, one line, no traceback."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_preset_beats_the_config_file(tmp_path):
    """--preset fast with a file naming `default`: fast's rules apply (epochs 'auto' is refused)."""
    f = tmp_path / "c.toml"
    f.write_text('preset = "default"\n')
    result = runner.invoke(app, ["run", ".", "--config", str(f), "--preset", "fast", "--epochs", "auto"])
    assert result.exit_code == 2 and "epochs 'auto' is for the contrastive objective" in result.output


def test_serve_takes_the_preset_from_its_config_file_unless_named(tmp_path):
    """serve --config with `preset = "fast"`: fast's rules apply to the served runs (epochs 'auto' refused)."""
    f = tmp_path / "c.toml"
    f.write_text('preset = "fast"\nepochs = "auto"\n')
    result = runner.invoke(app, ["serve", ".", "--watch", "60", "--config", str(f)])
    assert result.exit_code == 2 and "epochs 'auto' is for the contrastive objective" in result.output


@pytest.mark.parametrize("cmd", [["--help"], ["run", "--help"], ["demo", "--help"], ["preprocess", "--help"], ["assign", "--help"],
                                 ["serve", "--help"], ["sweep", "--help"], ["verify", "--help"]])
def test_help(cmd):
    result = runner.invoke(app, cmd)
    assert result.exit_code == 0 and "Usage" in result.output


def test_serve_without_a_server_says_how_to_start_one(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_HOME"] = str(tmp_path)
    exe = Path(sys.executable).with_name("audioclust")
    done = subprocess.run([str(exe), "serve", str(tmp_path), "--watch", "60"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "serve needs a Prefect server" in done.stderr and "Traceback" not in done.stderr
    both = subprocess.run([str(exe), "serve", str(tmp_path), "--watch", "60", "--cron", "* * * * *"], env=env, capture_output=True, text=True, timeout=120)
    assert both.returncode == 2 and "exactly one of --cron or --watch" in both.stderr


def test_help_shows_defaults_written_in_brackets():
    # rich reads "[...]" as markup: an unescaped "[default: 20]" would vanish from the help
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "200"})
    assert "[default: 20]" in result.output and "[default: OUT/store.zarr]" in result.output

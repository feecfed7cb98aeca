"""Bad input ends a command with one line and exit code 1, never a traceback, and leaves no run."""
from __future__ import annotations

from click.testing import CliRunner
from conftest import run_statuses, train_process

from aeservice.cli import aeservice_command

FAST = ["--epochs", "2", "--hidden", "16", "--patience", "0", "--experiment", "cli"]



def _bad_inputs(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    nan = tmp_path / "nan.csv"
    nan.write_text("a,b\n1,2\n,4\n" + "5,6\n" * 20)
    text = tmp_path / "text.csv"
    text.write_text("a,b\n1,x\n" + "5,6\n" * 20)
    tiny = tmp_path / "tiny.csv"
    tiny.write_text("a,b\n1,2\n3,4\n")
    return [
        (["--dataset", "nope"], "unknown data set 'nope'"),
        (["--model", "gan"], "Invalid value for '--model'"),
        (["--dataset", str(tmp_path / "missing.csv")], "data file not found"),
        (["--dataset", str(empty)], "data file is empty"),
        (["--dataset", str(nan)], "empty, NaN or infinite"),
        (["--dataset", str(text)], "non-numeric column"),
        (["--latent-dim", "0"], "latent_dim must be at least 1"),
        (["--model", "pca", "--dataset", "curve3d", "--latent-dim", "5"], "at most the feature count"),
        (["--dataset", str(tiny)], "too few rows"),
        (["--hidden", "64,abc"], "hidden must be comma-separated integers"),
    ]


def test_bad_input_gives_one_line_and_leaves_no_run(tracking_uri, tmp_path):
    runner = CliRunner()
    for args, message in _bad_inputs(tmp_path):
        result = runner.invoke(aeservice_command, ["train", *FAST, *args])
        assert result.exit_code != 0, args
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), args
    assert "RUNNING" not in run_statuses()


def test_bad_input_in_a_real_process_has_no_traceback_and_no_run(tracking_uri, tmp_path):
    proc = train_process(tracking_uri, tmp_path, "--dataset", "nope")
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: unknown data set 'nope'")
    assert "Traceback" not in proc.stderr
    assert run_statuses() == []


def test_a_tracking_failure_in_a_real_process_is_one_line(tracking_uri, tmp_path):
    proc = train_process(tracking_uri, tmp_path, *FAST, env={"MLFLOW_TRACKING_URI": "nosuchscheme://x"})
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: MLflow tracking failed:") and "nosuchscheme" in last
    assert "Traceback" not in proc.stderr

"""The `emo-pipeline` command as a user runs it."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from emo_pipeline.storage.warehouse import Warehouse


def emo(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "emo_pipeline.cli", *args], capture_output=True, text=True, env=env)


def test_inspect_real_emotion6_as_json(real_emotion6: Path):
    run = emo("inspect", "emotion6", str(real_emotion6), "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report == {"dataset": "emotion6", "rows": 1980, "rejected": [], "tables": {"labels": 1980}}


def test_inspect_lists_rejections_and_still_exits_zero(tmp_path: Path):
    from emo_pipeline_tests.test_emotion6 import GOOD_ROWS, make_folder

    root = make_folder(tmp_path / "Emotion6", GOOD_ROWS + ["joy/7.jpg\t5\t5\t0.5\t0.5"],
                       images=["anger/1.jpg", "joy/1.jpg", "fear/2.jpg"])
    run = emo("inspect", "emotion6", str(root))
    assert run.returncode == 0
    assert "emotion6: 3 valid images, 1 rejected records" in run.stdout
    assert "ground_truth.txt:5: row: expected 10 TAB-separated fields, found 5" in run.stdout
    report = json.loads(emo("inspect", "emotion6", str(root), "--json").stdout)
    assert report["rejected"] == [{"file": "ground_truth.txt", "line": 5, "field": "row",
                                   "reason": "expected 10 TAB-separated fields, found 5"}]


@pytest.mark.parametrize("dataset", ["emotion6", "emotionroi", "vg"])
def test_inspect_a_folder_that_is_not_the_dataset_exits_2(tmp_path: Path, dataset: str):
    run = emo("inspect", dataset, str(tmp_path))
    assert run.returncode == 2
    assert run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1
    assert run.stderr.startswith(f"emo-pipeline inspect: not a {dataset} folder: ")


def test_sql_prints_results_and_refuses_writes(tmp_path: Path):
    warehouse = Warehouse(tmp_path / "wh")
    warehouse.write_table("objects", pd.DataFrame({"name": ["dog", "cat", "dog"]}))
    query = "SELECT name, count(*) AS n FROM objects GROUP BY 1 ORDER BY 2 DESC, 1"
    run = emo("sql", "--warehouse", str(warehouse.root), "--format", "csv", query)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == ["name,n", "dog,2", "cat,1"]
    table = emo("sql", "--warehouse", str(warehouse.root), query)
    assert table.stdout.split() == ["name", "n", "dog", "2", "cat", "1"]

    refused = emo("sql", "--warehouse", str(warehouse.root), "DELETE FROM objects")
    assert refused.returncode == 2
    assert "read-only: DELETE statements are refused" in refused.stderr
    assert len(warehouse.query("SELECT * FROM objects")) == 3

    missing = emo("sql", "--warehouse", str(warehouse.root), "SELECT * FROM nothing_here")
    assert missing.returncode == 2 and "CatalogException" in missing.stderr


@pytest.mark.parametrize("command", ["objects", "scene"])
def test_help_lists_one_weight_option_per_emotion(command: str):
    from emo_pipeline.core.emotions import EMOTIONS

    run = emo(command, "--help")
    assert run.returncode == 0, run.stderr
    for emotion in EMOTIONS:
        assert f"--{emotion} W" in run.stdout


@pytest.mark.parametrize(
    ("argv", "prefix", "message"),
    [
        pytest.param(["objects", "--joy", "lots"], "emo-pipeline objects: error: ",
                     "argument --joy: invalid float value: 'lots'", id="not-a-number"),
        pytest.param(["objects", "--happiness", "1"], "emo-pipeline objects: ",
                     "unknown emotion(s) 'happiness': choose from anger, disgust, fear, joy, sadness, surprise, "
                     "neutral", id="unknown-emotion"),
        pytest.param(["scene", "--joy", "1"], "emo-pipeline scene: error: ",
                     "the following arguments are required: --out", id="missing-required"),
        pytest.param(["sql", "SELECT 1", "--bogus"], "emo-pipeline sql: error: ",
                     "unrecognized arguments: --bogus", id="unknown-option"),
        pytest.param(["paint"], "emo-pipeline: error: ", "invalid choice: 'paint'", id="unknown-command"),
        pytest.param([], "emo-pipeline: error: ", "the following arguments are required: command", id="no-command"),
    ],
)
def test_a_refused_command_line_is_one_line_and_exit_status_2(tmp_path: Path, argv: list[str], prefix: str,
                                                               message: str):
    run = emo(*argv, "--warehouse", str(tmp_path / "none")) if argv[:1] == ["objects"] else emo(*argv)
    assert run.returncode == 2
    assert run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(prefix) and message in line, line
    assert "Traceback" not in run.stderr and "usage:" not in run.stderr

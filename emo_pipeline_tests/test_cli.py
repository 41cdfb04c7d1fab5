"""The `emo-pipeline` command as a user runs it."""

import json
import os
import socket
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


# -- inspect: where it reads, and what it is about to read ---------------------------------------------

def emo_at(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The command run from `cwd`, with these environment variables added to the current ones."""
    return subprocess.run([sys.executable, "-m", "emo_pipeline.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **env}, timeout=300)


def test_file_size_reads_as_people_write_it():
    from emo_pipeline.cli import file_size

    assert [file_size(n) for n in (0, 999, 1000, 132_386, 5_400_000, 1_234_567_890)] == [
        "0 B", "999 B", "1.0 kB", "132.4 kB", "5.4 MB", "1.2 GB"]


def test_inspect_takes_home_and_relative_paths_and_announces_the_read_on_stderr(tmp_path: Path):
    from emo_pipeline_tests.test_emotion6 import GOOD_ROWS, make_folder

    root = make_folder(tmp_path / "Emotion6", GOOD_ROWS)
    size = (root / "ground_truth.txt").stat().st_size
    assert size < 1000  # so that it prints in bytes
    announced = (f"reading Emotion6 at {root}: ground_truth.txt ({size} B, 3 records) and the image each "
                 f"record names under images/, every one decoded")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for cwd, path in ((elsewhere, "~/Emotion6"), (tmp_path, "Emotion6"), (elsewhere, "../Emotion6")):
        run = emo_at(cwd, "inspect", "emotion6", path, "--json", HOME=str(tmp_path))
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout) == {"dataset": "emotion6", "rows": 3, "rejected": [], "tables": {"labels": 3}}
        assert run.stderr.splitlines() == [announced], path


def test_inspect_vg_lists_each_annotation_file_and_its_size_before_reading(tmp_path: Path):
    root = tmp_path / "visual_genome"
    root.mkdir()
    (root / "image_data.json").write_text(
        '[{"image_id": 1, "width": 800, "height": 600, "url": "https://x/VG_100K/1.jpg"}]')
    (root / "objects.json").write_text(
        '[{"image_id": 1, "objects": [{"object_id": 10, "x": 1, "y": 1, "w": 10, "h": 10, "names": ["dog"]}]}]')
    (root / "relationships.json").write_text('[{"image_id": 1, "relationships": []}]')
    (root / "object_alias.txt").write_text("dog,doggy\n" * 200)  # 2,000 bytes
    run = emo_at(tmp_path, "inspect", "vg", "visual_genome", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["rows"] == 1  # stdout is the JSON report alone
    head, *files = run.stderr.splitlines()
    assert head == f"reading Visual Genome at {root} (every record, into a temporary copy of its tables):"
    sizes = {line.split()[0]: " ".join(line.split()[1:]) for line in files}
    assert sizes == {
        "image_data.json": f"{(root / 'image_data.json').stat().st_size} B",
        "objects.json": f"{(root / 'objects.json').stat().st_size} B",
        "relationships.json": f"{(root / 'relationships.json').stat().st_size} B",
        "attributes.json": "absent",
        "object_alias.txt": "2.0 kB",
        "relationship_alias.txt": "absent",
    }


# -- weights ----------------------------------------------------------------------------------------------

def offline_env(torch_home: Path) -> dict[str, str]:
    """TORCH_HOME in tmp, and every proxy set to a local port nothing listens on: a download is refused at
    once (no DNS, no waiting on a network), whatever network the machine has."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proxy = f"http://127.0.0.1:{port}"
    return {"TORCH_HOME": str(torch_home), "NO_PROXY": "", "no_proxy": "",
            **dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), proxy)}


def torchvision_cache_file(torch_home: Path, url: str) -> Path:
    """Where torchvision looks for the file at `url`: <TORCH_HOME>/hub/checkpoints/<its file name>."""
    return torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]


def test_weights_fetch_offline_fails_in_one_line_naming_the_file_and_where(tmp_path: Path):
    import torchvision

    url = torchvision.models.ResNet101_Weights.DEFAULT.url
    expected = torchvision_cache_file(tmp_path / "torch", url)
    run = emo_at(tmp_path, "weights", "fetch", "resnet101", **offline_env(tmp_path / "torch"))
    assert run.returncode == 2
    assert run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith(f"emo-pipeline weights: could not download the ImageNet weights of resnet101 from {url} (")
    assert line.endswith(f"; place {expected.name} by hand at {expected}")
    assert expected.name == "resnet101-cd907fc2.pth"
    assert list(expected.parent.iterdir()) == []  # no half-written file left behind


def test_weights_fetch_and_list_find_a_file_already_in_the_cache(tmp_path: Path):
    import torch
    import torchvision

    home = tmp_path / "torch"
    placed = torchvision_cache_file(home, torchvision.models.ResNet18_Weights.DEFAULT.url)
    placed.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(2, 3, 1, 1)}, placed)  # placed by hand
    size = placed.stat().st_size
    run = emo_at(tmp_path, "weights", "fetch", "resnet18", **offline_env(home))
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"resnet18   {placed}  (already in the cache, {size / 1000:.1f} kB)"]
    listed = emo_at(tmp_path, "weights", "list", **offline_env(home)).stdout.splitlines()
    assert f"resnet18   present, {size / 1000:.1f} kB" in listed[3] and listed[3].endswith(str(placed))
    assert listed[4].startswith("resnet101  absent")


def test_synth_offers_every_scale_of_the_world():
    from emo_pipeline.synthetic import SCALES

    run = emo("synth", "--help")
    assert run.returncode == 0, run.stderr
    assert "{" + ",".join(SCALES) + "}" in run.stdout

"""`make demo` as a newcomer runs it: the whole demo job on the seed-0 world, every model against its
floor and every planted figure recovered. (A file of its own: the longest test, run in a test worker
beside the others.)"""

import re
from pathlib import Path

import pandas as pd
import pytest

from emo_pipeline_tests.demo_command import demo_home, run_demo

# Key figures of the demo's lines that set a model against its floor: `<metric> <model> vs <floor> <name>`.
_AGAINST_FLOOR = re.compile(r"(KL|MSE|top-1|accuracy|nDCG@10(?: \(\w+\))?) ([0-9.]+) vs ([0-9.]+) "
                            r"(train mean|mean map|most frequent)")
_LOWER_IS_BETTER = {"KL", "MSE"}


@pytest.mark.slow
def test_the_demo_on_its_own_world_recovers_every_planted_figure(world_factory, tmp_path: Path):
    """`make demo` as a newcomer runs it: the whole demo job on the seed-0 world. Every model it trains
    beats its floor on validation, and every figure of `planted_truth_recovery` (the detector's recall
    and kinds, the best image model against the majority class, dataset B's dominant emotions and both
    data sets' top objects) reaches its target."""
    env = demo_home(tmp_path / "home", world_factory(seed=0))
    result = run_demo(env)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]

    against_floor = _AGAINST_FLOOR.findall(result.stdout)
    assert len(against_floor) >= 15, result.stdout
    losing = [f"{metric} {model} vs {floor} {name}" for metric, model, floor, name in against_floor
              if (float(model) >= float(floor) if metric in _LOWER_IS_BETTER else float(model) <= float(floor))]
    assert not losing, losing

    table = pd.read_parquet(Path(env["EMO_HOME"]) / "warehouse" / "tables" / "planted_truth_recovery.parquet")
    assert len(table) == 24 and set(table["stage"]) == {"detector", "image model", "dataset B", "dataset A"}
    assert table["met"].all(), table.loc[~table["met"], ["stage", "figure", "value", "target", "detail"]].to_string()
    assert "Planted truth recovered: 24 of 24 figures reach their targets" in result.stdout

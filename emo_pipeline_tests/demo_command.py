"""`emo-pipeline demo` as a test runs it: in a subprocess, on a synthetic world, with a fresh home."""

import shutil
import subprocess
import sys
from pathlib import Path

from emo_pipeline.core.home import PROJECT_ROOT
from emo_pipeline_tests.conftest import pipeline_env


def demo_home(home: Path, world: Path) -> dict:
    """The environment of `emo-pipeline demo` on `world`, with a fresh home and instance (`make home`)."""
    env = pipeline_env(home, world)
    Path(env["DAGSTER_HOME"]).mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "dagster.yaml", Path(env["DAGSTER_HOME"]) / "dagster.yaml")
    return env


def run_demo(env: dict, *args: str, selection: str | None = None) -> subprocess.CompletedProcess:
    """`emo-pipeline demo` on `selection` of the graph, or on the whole demo job (None)."""
    select = ["--select", selection] if selection else []
    return subprocess.run([sys.executable, "-m", "emo_pipeline.cli", "demo", *select, *args],
                          env=env, capture_output=True, text=True, timeout=900, cwd=PROJECT_ROOT)

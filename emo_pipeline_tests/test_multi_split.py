"""`emo-pipeline evaluate`: the distribution models fitted on several split seeds, means and spreads."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emo_pipeline.cli import main
from emo_pipeline.image_emotion.multi_split import summarise
from emo_pipeline_tests.conftest import environ


def test_summary_is_the_mean_and_sample_standard_deviation_per_model():
    per_split = pd.DataFrame({"seed": [0, 1, 0, 1], "model": ["a", "a", "b", "b"], "seconds": [1.0, 3.0, 0.0, 0.0],
                              "kl": [0.5, 0.7, 0.4, 0.4], "chebyshev": [0.2, 0.4, 0.3, 0.3]})
    summary = summarise(per_split).set_index("model")
    assert list(summary.index) == ["b", "a"]  # best (lowest) KL first
    assert summary.loc["a", "kl_mean"] == pytest.approx(0.6)
    assert summary.loc["a", "kl_std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert summary.loc["b", "chebyshev_std"] == 0 and summary.loc["a", "seconds_mean"] == 2
    assert (summary["splits"] == 2).all()


def test_evaluate_fits_each_model_on_each_seed_and_stores_the_tables(world: Path, tmp_path: Path, capsys):
    with environ(EMO_HOME=str(tmp_path / "home")):
        status = main(["evaluate", "--emotion6", str(world / "Emotion6"), "--splits", "0", "1", "--models",
                       "feature_ridge", "feature_gbm", "ensemble", "--workers", "1"])
    out = capsys.readouterr().out
    assert status == 0
    per_split = pd.read_csv(tmp_path / "home" / "evaluation" / "splits_0_1_per_split.csv")
    summary = pd.read_csv(tmp_path / "home" / "evaluation" / "splits_0_1_summary.csv").set_index("model")
    assert sorted(zip(per_split["seed"], per_split["model"])) == sorted(
        (seed, model) for seed in (0, 1) for model in ("feature_ridge", "feature_gbm", "ensemble", "train_mean"))
    # the summary is the per-seed rows averaged, recomputed here with pandas alone
    for model, rows in per_split.groupby("model"):
        assert summary.loc[model, "kl_mean"] == pytest.approx(rows["kl"].mean())
        assert summary.loc[model, "chebyshev_std"] == pytest.approx(rows["chebyshev"].std(ddof=1))
    # the planted signal of the demo world is learnt on both splits, and the printout says so
    assert summary.loc["feature_gbm", "kl_mean"] < summary.loc["train_mean", "kl_mean"]
    assert summary.loc["ensemble", "kl_mean"] < summary.loc["train_mean", "kl_mean"]
    assert "mean +- standard deviation over split seeds 0 1" in out
    assert "ensemble of seed 0:" in out and "splits_0_1_summary.csv" in out


def test_evaluate_refuses_an_unknown_model_in_one_line(world: Path, capsys):
    assert main(["evaluate", "--emotion6", str(world / "Emotion6"), "--models", "svm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("emo-pipeline evaluate: unknown model 'svm'") and "feature_gbm" in err
    assert len(err.splitlines()) == 1

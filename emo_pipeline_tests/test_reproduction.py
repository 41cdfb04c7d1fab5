"""The paper's numbers beside ours: the reported-numbers file and the comparison rows."""

from pathlib import Path

import pandas as pd
import pytest

from emo_pipeline.core.reproduction import REPORTED_FILE, ReportedError, comparison_table, read_reported

# Figs. 6 and 7 and §5.1, as the paper prints them (read off the paper's text, not off the data file).
FIG6_RESNET = {"kl": 2.760, "chebyshev": 0.239, "max_emotion": 0.209, "bhattacharyya": 0.877}


def test_every_number_of_figs_6_7_and_section_5_1_is_in_the_reported_file():
    reported = read_reported()
    fig6 = reported[reported["figure"] == "Fig. 6"]
    assert len(fig6) == 16 and set(fig6["model"]) == {"alexnet", "vgg19_bn", "resnet101", "esm_resnet"}
    resnet = fig6[fig6["model"] == "resnet101"].set_index("metric")["value"].to_dict()
    assert resnet == FIG6_RESNET
    fig7 = reported[reported["figure"] == "Fig. 7"].set_index("model")["value"]
    assert fig7.to_dict() == {"alexnet": 0.0210, "vgg19_bn": 0.0177, "resnet101": 0.0168, "esm_resnet": 0.0159}
    accuracy = reported[reported["metric"] == "accuracy"].set_index(["model", "split"])["value"]
    assert len(accuracy) == 6 and accuracy[("alexnet_classifier", "test")] == 0.4848
    assert reported["id"].is_unique and reported["paper_says"].str.len().min() > 5


def test_a_bad_row_is_named_by_file_line_and_field(tmp_path: Path):
    lines = REPORTED_FILE.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace(",1386,", ",many,").replace(",297,", ",many,")
    bad = tmp_path / "reported.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ReportedError, match=rf"^{bad}:4: field 'value': 'many' is not a number$"):
        read_reported(bad)


def test_comparison_rows_give_the_difference_and_which_side_is_better():
    reported = read_reported()
    ours = {("resnet_kl", "paper"): 0.5, ("resnet_kl", "improved"): 0.45, ("resnet_bc", "improved"): 0.83,
            ("svm_test", "paper"): 0.35, ("svm_test", "improved"): 0.35}
    table = comparison_table(reported, ours, {"resnet_kl": "demo world"}).set_index("id")
    kl = table.loc["resnet_kl"]
    assert (kl["model"], kl["metric"], kl["paper"]) == ("resnet101", "kl", 2.760)
    assert kl["difference"] == pytest.approx(0.5 - 2.760) and kl["ours_better"] and kl["note"] == "demo world"
    # Only the improved recipe ran: the difference is taken from it; a lower BC is worse.
    bc = table.loc["resnet_bc"]
    assert pd.isna(bc["ours_paper"]) and bc["difference"] == pytest.approx(0.83 - 0.877) and not bc["ours_better"]
    assert table.loc["svm_test", "ours_better"]
    assert table.loc["vgg_kl", "ours_better"] is None
    assert len(table) == len(reported)


def test_fig14_rows_read_the_mlp_and_baseline_losses_on_the_papers_target(tmp_path: Path):
    from emo_pipeline.defs.reproduction import PAPER_TARGET, _object_loss
    from emo_pipeline.storage.warehouse import Warehouse

    store = Warehouse(tmp_path / "warehouse")
    rows = {row.id: row for row in read_reported().itertuples(index=False)}
    assert _object_loss(store, rows["mlp_a_val"]) == (None, "not materialized yet (emotion_object_metrics)")
    store.write_table("emotion_object_metrics", pd.DataFrame({
        "dataset": ["a", "a", "a", "b"], "method": ["mlp", "mlp", "score_baseline", "mlp"],
        "normalisation": [PAPER_TARGET, "times_area", None, "times_area"],
        "val_loss": [0.031, 0.5, None, 0.2], "baseline_val_loss": [0.12, 0.6, None, 0.3]}))
    store.write_table("emotion_objects_mlp_a", pd.DataFrame({
        "normalisation": [PAPER_TARGET] * 3 + ["times_area"], "epoch": [1, 2, 3, 1],
        "train_loss": [0.9, 0.004, 0.003, 0.0001], "val_loss": [0.05, 0.031, 0.04, 0.001]}))
    assert _object_loss(store, rows["mlp_a_val"])[0] == pytest.approx(0.031)
    assert _object_loss(store, rows["baseline_a_val"])[0] == pytest.approx(0.12)
    train, note = _object_loss(store, rows["mlp_a_train"])
    assert train == pytest.approx(0.004) and "best validation epoch (2)" in note  # not the last, nor times_area's
    assert _object_loss(store, rows["mlp_b_val"])[0] is None  # dataset B has no MLP on the paper's target


def _handful(world: Path, out: Path, per_folder: int = 4) -> Path:
    """A copy of `world`'s Emotion6 and EmotionROI with `per_folder` pictures of each keyword folder."""
    import shutil

    e6 = out / "Emotion6"
    header, *rows = (world / "Emotion6" / "ground_truth.txt").read_text(encoding="utf-8").splitlines()
    kept = [row for row in rows if int(row.split("/")[1].split(".")[0]) <= per_folder]
    for row in kept:
        name = row.split("\t")[0]
        (e6 / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(world / "Emotion6" / "images" / name, e6 / "images" / name)
    (e6 / "ground_truth.txt").write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    roi = out / "EmotionROI"
    for split_file in ("training", "testing"):
        names = (world / "EmotionROI" / "training_testing_split" / f"{split_file}.txt").read_text().split()
        names = [n for n in names if int(n.split("/")[1].split(".")[0]) <= 2 * per_folder]
        for name in names:
            for folder in ("images", "ground_truth"):
                (roi / folder / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(world / "EmotionROI" / folder / name, roi / folder / name)
        target = roi / "training_testing_split" / f"{split_file}.txt"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(names) + "\n")
    shutil.copytree(world / "VG", out / "VG")  # read by nothing here, but a data root must exist
    return out


@pytest.mark.slow
def test_reproduce_paper_trains_every_paper_model_and_fills_the_report(world: Path, tmp_path: Path):
    """The paper profile's whole path, 224 px included, one epoch on a handful of images on the CPU:
    what a GPU run of `reproduce_paper` does, so that it cannot break unseen."""
    from emo_pipeline.definitions import defs
    from emo_pipeline.defs.reproduction import reproduce_paper
    from emo_pipeline.defs.shared.resources import ModelStoreResource
    from emo_pipeline.storage.warehouse import Warehouse
    from emo_pipeline_tests.materialize import materialize, project_resources

    small = _handful(world, tmp_path / "world")
    resources = project_resources(small, tmp_path, models=ModelStoreResource(root=str(tmp_path / "home"),
                                                                              profile="paper"))
    job = defs.resolve_job_def("reproduce_paper")
    training = [node.name for node in job.graph.node_defs
                if node.config_schema and "epochs" in getattr(node.config_schema.config_type, "fields", {})]
    assert set(training) == {"alexnet", "alexnet_classifier", "vgg19_bn", "resnet101", "small_cnn_classifier",
                             "esm_model", "esm_resnet"}
    keys = reproduce_paper.selection.resolve(defs.resolve_asset_graph())
    result = materialize(resources, keys, run_config={"ops": {n: {"config": {"epochs": 1}} for n in training}})
    assert result.success
    metadata = {e.materialization.asset_key.to_user_string(): e.materialization.metadata
                for e in result.get_asset_materialization_events()}
    assert metadata["resnet101_model"]["recipe"].value == "paper"

    table = Warehouse(tmp_path / "warehouse").read_table("paper_comparison").set_index("id")
    image_rows = table[table["figure"].isin(["Fig. 6", "Fig. 7"]) | table["section"].str.startswith("§5.1")]
    assert len(image_rows) == 16 + 4 + 6
    assert image_rows["ours_paper"].notna().all(), image_rows[image_rows["ours_paper"].isna()]["note"].to_dict()
    # Only the paper's recipe ran: the improved column stays empty, except for the SVM, which has no recipe.
    with_recipe = image_rows["model"] != "svm"
    assert image_rows.loc[with_recipe, "ours_improved"].isna().all()
    assert image_rows.loc[~with_recipe, "ours_improved"].notna().all()
    assert image_rows.loc[with_recipe, "note"].str.contains("without ImageNet weights").all()

"""The detector weights shipped with the package: pinned, recorded, refused when changed, and remade by
`emo-pipeline detector-pretrain` (test_detector.py checks what they find in a world they never saw)."""

import json
import shutil
from pathlib import Path

import pytest

from emo_pipeline.cli import main
from emo_pipeline.core.digests import file_sha256
from emo_pipeline.detection import pretrained
from emo_pipeline.detection.detect import load_detector
from emo_pipeline.detection.training import settings_dict
from emo_pipeline.synthetic import grammar


def test_the_shipped_weights_are_the_pinned_file_made_with_the_current_settings():
    assert file_sha256(pretrained.SHIPPED_WEIGHTS) == pretrained.SHIPPED_SHA256
    record = pretrained.read_provenance(pretrained.SHIPPED_WEIGHTS)
    assert record["sha256"] == pretrained.SHIPPED_SHA256
    assert record["world"] == {**record["world"], "seed": pretrained.PRETRAINING_SEED,
                               "scale": pretrained.PRETRAINING_SCALE, "visual_genome_images": 3000}
    # New settings without new weights would leave the record describing a recipe no longer in the code.
    assert record["settings"] == json.loads(json.dumps(settings_dict(pretrained.PRETRAINING_SETTINGS)))
    assert sorted(record["classes"]) == sorted(kind.name for kind in grammar.OBJECTS)
    assert pretrained.verified_shipped_weights() == pretrained.SHIPPED_WEIGHTS


def test_a_changed_weights_file_is_refused_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    changed = tmp_path / "yolo11n_synthetic.pt"
    shutil.copyfile(pretrained.SHIPPED_WEIGHTS, changed)
    with open(changed, "ab") as handle:
        handle.write(b"\0")
    monkeypatch.setattr(pretrained, "SHIPPED_WEIGHTS", changed)
    with pytest.raises(pretrained.ShippedWeightsChanged, match=rf"{changed}: sha256 [0-9a-f]{{64}}, not the "):
        pretrained.verified_shipped_weights()


@pytest.mark.slow
def test_detector_pretrain_writes_loadable_weights_and_their_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture):
    # The demo world (300 pictures) for one epoch instead of 3,000 pictures for ten: the same code path.
    monkeypatch.setattr(pretrained, "PRETRAINING_SCALE", "demo")
    out = tmp_path / "weights" / "detector.pt"
    assert main(["detector-pretrain", "--out", str(out), "--seed", "5", "--epochs", "1"]) == 0
    record = pretrained.read_provenance(out)
    assert record["sha256"] == file_sha256(out)
    assert record["world"]["seed"] == 5 and record["settings"]["epochs"] == 1
    assert record["made_with"] == "emo-pipeline detector-pretrain --out detector.pt --seed 5 --epochs 1"
    assert load_detector(out).names == record["classes"]
    assert f"wrote {out} (sha256 {record['sha256']})" in capsys.readouterr().out
    assert sorted(p.name for p in out.parent.iterdir()) == ["detector.json", "detector.pt"]

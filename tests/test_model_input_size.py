"""Models configured for smaller crops (fast CPU models) take the protocol's 256 px crop and resize it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from wflwv.baselines.unet import UNetConfig, UNetNet
from wflwv.models.ldeq import LDEQConfig, LDEQNet


def _resized(x, size):
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


@pytest.mark.slow
def test_ldeq_resizes_larger_crops_to_its_input_size():
    torch.manual_seed(0)
    net = LDEQNet(
        LDEQConfig(
            num_landmarks=5,
            input_size=64,
            heatmap_size=16,
            injection_width=8,
            cell_base_width=8,
            cell_width_increment=2,
            max_iters=3,
        )
    ).eval()
    x = torch.randn(2, 3, 256, 256)
    with torch.no_grad():
        a = net(x)["keypoints"]
        b = net(_resized(x, 64))["keypoints"]
    torch.testing.assert_close(a, b)
    assert a.shape == (2, 5, 2)


def test_unet_input_size_resizes_and_keeps_unit_keypoints():
    torch.manual_seed(0)
    net = UNetNet(UNetConfig(num_landmarks=4, size="tiny", input_size=64)).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        out = net(x)
        ref = UNetNet.forward(net, _resized(x, 64))
    assert out["heatmaps"].shape == (1, 4, 16, 16)
    torch.testing.assert_close(out["keypoints"], ref["keypoints"])

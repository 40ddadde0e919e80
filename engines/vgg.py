"""The frozen ImageNet VGG16 of the content (perceptual) losses: CartoonGAN's relu4_3, SRGAN's relu5_3 or relu2_2.

torchvision's VGG16 weights (``vgg16-397923af.pth`` under ``$TORCH_HOME/hub/checkpoints``; only the convolutions
are read, memory-mapped: the 400 MB classifier never is). The network is cut right after the named ReLU, frozen
(no parameter needs a gradient) and kept in eval mode; inputs are pictures in [-1, 1], mapped to [0, 1] and
normalised with the ImageNet mean and std inside. One copy per process, layer and device.
"""
from __future__ import annotations

import threading
from pathlib import Path

import torch
from torch import nn

VGG16_FILE = "vgg16-397923af.pth"  # torchvision's ImageNet VGG16, as cached under $TORCH_HOME/hub/checkpoints
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: layer name -> how many modules of torchvision's ``vgg16().features`` it takes (cut after that ReLU).
#: relu{i}_{j}: the ReLU after the j-th convolution before the i-th max-pooling (Ledig et al.'s phi_{i,j})
LAYERS = {"relu1_2": 4, "relu2_2": 9, "relu3_3": 16, "relu4_3": 23, "relu5_3": 30}

_lock = threading.Lock()
_nets: dict[tuple[str, str], nn.Module] = {}


class VGGUnavailable(FileNotFoundError):
    """The ImageNet VGG16 weights a content loss needs could not be found or read."""


class VGGFeatures(nn.Module):
    """[-1, 1] pictures -> VGG16 features at ``layer`` (e.g. relu4_3: 512 channels at 1/8 resolution)."""

    def __init__(self, layer: str = "relu4_3"):
        super().__init__()
        if layer not in LAYERS:
            raise ValueError(f"VGG16 layer must be one of {', '.join(LAYERS)}, not {layer!r}")
        self.layer = layer
        layers: list[nn.Module] = []
        ch = 3
        for v in _VGG16:  # the same indices as torchvision's vgg16().features
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(ch, v, 3, padding=1), nn.ReLU(inplace=True)]
                ch = v
        self.features = nn.Sequential(*layers[:LAYERS[layer]])
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(((x + 1) * 0.5 - self.mean) / self.std)


def vgg16_state_dict(purpose: str = "a content loss") -> dict[str, torch.Tensor]:
    """torchvision's VGG16 state dict (from the cache, else its download); VGGUnavailable says what to do."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
    try:
        if path.is_file():  # mmap: only the convolution tensors are read, not the 400 MB classifier
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        from torchvision.models import VGG16_Weights

        return torch.hub.load_state_dict_from_url(VGG16_Weights.IMAGENET1K_V1.url, progress=False,
                                                  map_location="cpu")
    except Exception as e:  # noqa: BLE001 — no cache and no network, a truncated file, ...
        raise VGGUnavailable(
            f"could not load the ImageNet VGG16 weights for {purpose} ({type(e).__name__}: {e}); "
            f"point TORCH_HOME at a folder whose hub/checkpoints/ holds {VGG16_FILE} or allow the download") from e


def get_vgg_features(layer: str = "relu4_3", device: str | torch.device | None = None,
                     purpose: str = "a content loss") -> VGGFeatures:
    """The frozen network cut at ``layer`` on ``device`` (default CPU), eval mode; loaded once per process,
    layer and device."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    with _lock:
        net = _nets.get((layer, str(dev)))
        if net is None:
            net = VGGFeatures(layer)
            state = vgg16_state_dict(purpose)
            want = {f"features.{k}" for k in net.features.state_dict()}
            try:
                net.load_state_dict({k: v for k, v in state.items() if k in want}, strict=False)
                missing = want - set(state)
                if missing:
                    raise RuntimeError(f"missing {', '.join(sorted(missing))}")
            except RuntimeError as e:
                raise VGGUnavailable(f"{VGG16_FILE} does not hold VGG16 convolution weights: {e}") from e
            net = net.eval().requires_grad_(False).to(dev)
            if dev.type == "cuda":
                net = net.to(memory_format=torch.channels_last)
            _nets[(layer, str(dev))] = net
    return net

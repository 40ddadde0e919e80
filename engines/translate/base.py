"""What every image-to-image translation engine shares (CycleGAN, CartoonGAN, U-GAT-IT, pix2pix).

The contract on top of ``engines.base.Engine`` (docs/engines.md):
- ``kind = "translate"``, ``domains = 2``: ``train_step((real_A, real_B))`` on unpaired batches (aligned
  pairs for ``paired`` engines: pix2pix);
- ``translate(x, direction="AB")``: pictures in [-1, 1] -> translated pictures in [-1, 1] (batched,
  inference mode); ``directions`` says which directions the engine has (CartoonGAN only A→B);
- ``attention(x)``: raw CAM heat maps [N, H, W] (float32, input size) where the model has them
  (``has_attention``); U-GAT-IT only;
- ``sample_grid(images_A)``: the run's sample grid, one row per input: input | output |
  reconstruction (when B→A exists) | attention (when present);
- the learning rate is constant for the first half of the epochs and decays linearly towards zero in
  the second half (``decay_start``), set per epoch by ``start_epoch``.

Shared pieces: the image pool (Shrivastava et al.), LSGAN losses, patch-level D accuracy, and the references'
training augmentation of both domains (``resize_crop``: enlarge by 30/256, random crop back; ``flip``).
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..base import Engine
from ..data.images import from_uint8, heatmap_rgb, overlay_heatmap, to_uint8
from ..losses import lsgan_loss  # noqa: F401 - the translation engines import it from here


class TranslationEngine(Engine):
    kind: ClassVar[str] = "translate"
    domains: ClassVar[int] = 2
    #: translation GANs rely on their cycle/content losses, not on D augmentation; their training pictures get
    #: the references' resize + random crop + flip instead (prepare_batch)
    default_augment: ClassVar[str] = "none"
    #: the shared translation protocol (DESIGN.md): batch 1-4, 200 epochs, samples every 5 epochs
    protocol_defaults: ClassVar[dict[str, Any]] = {
        "batch_size": 4, "epochs": 200, "sample_every": 5, "eval_every": 10,
        "eval_metrics": "fid,kid,lpips,cycle,lpips_target",
    }
    directions: ClassVar[tuple[str, ...]] = ("AB", "BA")
    has_attention: ClassVar[bool] = False
    #: trained on pairs (pix2pix): the trainer matches the two sets by file id, holds out the engine's
    #: ``val_fraction`` of the ids and feeds aligned pairs (engines/paired.py); unpaired engines get two
    #: independently shuffled sets
    paired: ClassVar[bool] = False

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {"lr": 2e-4, "betas": [0.5, 0.999],
                "decay_start": 0.5,  # fraction of the epochs after which lr decays linearly towards 0
                # training pictures of both domains, each picture on its own draw (the references'
                # resize_and_crop + flip): enlarge to size + 30/256 * size (bicubic), crop a random size x size
                "resize_crop": True,
                "flip": True}        # random horizontal flips

    # ---- learning-rate schedule ------------------------------------------------------
    def make_adam(self, params, lr: float | None = None, betas=None, weight_decay: float = 0.0) -> torch.optim.Adam:
        opt = super().make_adam(params, lr, betas, weight_decay)
        for g in opt.param_groups:  # the schedule's base; saved with the optimiser, so resume keeps it
            g.setdefault("initial_lr", g["lr"])
        return opt

    def lr_factor(self, epoch: int, epochs: int) -> float:
        """1 up to ``decay_start * epochs``, then linear towards 0 (1/(decay epochs + 1) at the last epoch)."""
        start = int(round(float(self.config["decay_start"]) * epochs))
        if epoch <= start:
            return 1.0
        return max(0.0, 1.0 - (epoch - start) / (epochs - start + 1))

    def start_epoch(self, epoch: int, epochs: int) -> None:
        self.set_lr_factor(self.lr_factor(epoch, epochs))

    # ---- training helpers ------------------------------------------------------------
    def prepare_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The training augmentation of both domains, in the references' order: resize + random crop, then flip.
        All draws come from the torch RNGs the trainer checkpoints, so a resumed run sees the same crops."""
        real_a, real_b = batch
        if self.config["resize_crop"]:
            real_a, real_b = random_resized_crop(real_a), random_resized_crop(real_b)
        if self.config["flip"]:
            real_a, real_b = random_hflip(real_a), random_hflip(real_b)
        return real_a, real_b

    # ---- inference -------------------------------------------------------------------
    def _translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """One batch through the generator of ``direction``; engines implement this."""
        raise NotImplementedError

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        """Raw CAM maps [N, h, w] at the network's feature resolution; engines with attention implement this."""
        raise NotImplementedError

    def check_direction(self, direction: str) -> str:
        """'AB', 'a->b', 'A→B' ... -> 'AB'; a direction the engine does not have is a ValueError."""
        d = str(direction).upper().replace("→", "").replace("->", "").replace("2", "")
        if d not in self.directions:
            raise ValueError(f"engine {self.name!r} translates {' and '.join(self.directions)}, not {direction!r}")
        return d

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"translate() expects RGB pictures [N, 3, H, W]; got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = from_uint8(x)
        return x

    @torch.inference_mode()
    def translate(self, x: torch.Tensor, direction: str = "AB", batch_size: int = 16) -> torch.Tensor:
        """[N, 3, H, W] in [-1, 1] (or uint8) -> translated [N, 3, H, W] in [-1, 1]."""
        d = self.check_direction(direction)
        x = self._check_input(x)
        return self._batched(lambda b: self._translate(b, d).float().clamp(-1, 1), x, batch_size)

    def reconstruct(self, x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """A -> B -> A (the cycle), for engines with both directions. Callers that already hold the A -> B
        output translate it back with ``translate(y, "BA")`` instead of running A -> B again."""
        self.check_direction("BA")
        return self.translate(self.translate(x, batch_size=batch_size), "BA", batch_size)

    @torch.inference_mode()
    def attention(self, x: torch.Tensor, batch_size: int = 16) -> np.ndarray:
        """The generator's CAM attention for A -> B as raw values, upsampled to the input size: [N, H, W]."""
        if not self.has_attention:
            raise ValueError(f"engine {self.name!r} has no attention maps")
        x = self._check_input(x)

        def one(b):
            cam = self._attention(b).float()[:, None]
            return F.interpolate(cam, size=b.shape[-2:], mode="bilinear", align_corners=False)[:, 0]

        return self._batched(one, x, batch_size).cpu().numpy().astype(np.float32)

    def _batched(self, fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
        was_training = self.training
        self.eval()
        try:
            with self.autocast():
                return torch.cat([fn(x[i:i + batch_size].to(self.device)) for i in range(0, len(x), batch_size)])
        finally:
            self.train(was_training)

    def sample_grid(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, Any]:
        """One row per input picture (uint8 or [-1, 1]): input | output | true target (when ``targets`` are
        given: paired engines) | reconstruction | attention overlay."""
        x = self._check_input(images.to(self.device))
        y = self.translate(x)
        cols = [to_uint8(x), to_uint8(y)]
        if targets is not None:
            cols.append(to_uint8(self._check_input(targets.to(self.device))))
        if "BA" in self.directions:
            cols.append(to_uint8(self.translate(y, "BA")))
        if self.has_attention:
            cols.append(overlay_heatmap(cols[0], normalise_maps(self.attention(x))))
        grid = torch.stack([c.cpu() for c in cols], dim=1).flatten(0, 1)  # row-major: input i's columns
        return {"images": grid, "nrow": len(cols)}

    def latent(self, n: int, seed: int | None = 0) -> torch.Tensor:
        raise ValueError(f"{self.name} is a translation engine: it has no latent space; use translate(x)")

    def sample(self, *args, **kwargs) -> torch.Tensor:
        raise ValueError(f"{self.name} is a translation engine: it does not sample; use translate(x)")

    def interpolate(self, *args, **kwargs) -> torch.Tensor:
        raise ValueError(f"{self.name} is a translation engine: it has no latent walk; use translate(x)")

    def export_extra(self) -> dict[str, Any]:
        return {"directions": list(self.directions), "attention": self.has_attention}

    # ---- resume state: the image pools hold past fakes that D still sees ----------------
    def pools(self) -> dict[str, "ImagePool"]:
        return {}

    def state_dict_full(self) -> dict[str, Any]:
        st = super().state_dict_full()
        st["pools"] = {k: p.state_dict() for k, p in self.pools().items()}
        return st

    def load_state_dict_full(self, state: dict[str, Any]) -> None:
        super().load_state_dict_full(state)
        for k, p in self.pools().items():
            if k in state.get("pools", {}):
                p.load_state_dict(state["pools"][k])


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Raw CAM maps -> [0, 1] per map (min-max), for display; constant maps become 0."""
    m = maps.reshape(len(maps), -1)
    lo, hi = m.min(1, keepdims=True), m.max(1, keepdims=True)
    return ((m - lo) / np.maximum(hi - lo, 1e-12)).reshape(maps.shape).astype(np.float32)


class ImagePool:
    """A history of generated images (Shrivastava et al. 2017): D sees past fakes half of the time, which
    damps oscillation. Once full, each new image is, with probability 0.5, swapped for a stored one."""

    def __init__(self, size: int = 50):
        self.size = int(size)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size <= 0:
            return images
        out = []
        for img in images.detach():
            img = img.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(img.clone())
                out.append(img)
            elif torch.rand(()).item() < 0.5:
                i = int(torch.randint(0, self.size, ()).item())
                out.append(self.images[i].clone())
                self.images[i] = img.clone()
            else:
                out.append(img)
        return torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        return {"images": torch.cat(self.images).cpu() if self.images else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        imgs = state.get("images")  # already on the run's device (the checkpoint is loaded with map_location)
        self.images = [] if imgs is None else [t.unsqueeze(0) for t in imgs]


def crop_margin(size: int) -> int:
    """Pixels added before the random crop: 30 at 256 px (the references' load size 286 for crop 256), scaled to
    the training size (15 at 128 px)."""
    return int(round(30 * int(size) / 256))


def random_resized_crop(x: torch.Tensor) -> torch.Tensor:
    """The references' ``resize_and_crop``: the batch enlarged (bicubic) by ``crop_margin`` pixels, then one
    random size x size crop per picture (offsets from the global CPU RNG: no device sync)."""
    n, _, h, w = x.shape
    mh, mw = crop_margin(h), crop_margin(w)
    if mh == 0 and mw == 0:
        return x
    big = F.interpolate(x.float(), size=(h + mh, w + mw), mode="bicubic", align_corners=False)
    big = big.clamp(-1, 1).to(x.dtype)  # bicubic overshoots a little at sharp edges
    oy = torch.randint(0, mh + 1, (n,)).tolist()
    ox = torch.randint(0, mw + 1, (n,)).tolist()
    out = torch.stack([big[i, :, y:y + h, xo:xo + w] for i, (y, xo) in enumerate(zip(oy, ox))])
    return out.contiguous(memory_format=torch.channels_last) if x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else out


def random_hflip(x: torch.Tensor) -> torch.Tensor:
    """Each image mirrored left-right with probability 0.5 (the references flip after the resize and crop)."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def patch_accuracy(pred: torch.Tensor, real: bool) -> torch.Tensor:
    """Share of D's patch outputs on the right side of 0.5 (LSGAN targets are 1 for real, 0 for fake)."""
    pred = pred.detach().float()
    return ((pred > 0.5) if real else (pred <= 0.5)).float().mean()


def init_normal(m: nn.Module, std: float = 0.02) -> None:
    """N(0, 0.02) weights, zero biases (the CycleGAN reference's 'normal' init); norms keep 1/0."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(m.weight, 0.0, std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)


def set_requires_grad(nets, flag: bool) -> None:
    """Freeze D while G steps: no wasted gradients for parameters that are not updated."""
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)

"""What every upscaling (single-image super-resolution) engine shares (SRGAN; docs/srgan.md).

The contract on top of ``engines.base.Engine`` (docs/engines.md):
- ``kind = "upscale"``, one dataset: the run's pictures are the high-resolution (HR) targets at ``image_size``;
  the engine makes each low-resolution (LR) input itself by antialiased bicubic downsampling by ``scale``
  (``downsample``), so ``image_size`` is the output size and ``image_size / scale`` the input size;
- ``heldout_split(n)``: a seeded split (``val_fraction``, ``split_seed``) that the trainer keeps out of training
  and uses for the metrics (engines.metrics.superres) and the sample grids;
- ``train_step(hr)``: random ``crop_size`` crops of the HR batch (the paper's 96 px sub-images), LR made from
  them, one optimisation step;
- ``upscale(x)``: LR pictures in [-1, 1] (any size) -> ``scale`` times larger pictures in [-1, 1];
  ``upscale_tiled(x, tile)``: the same in tiles with an overlap of the generator's receptive field, so any
  picture fits in bounded memory and gives the same pixels as in one piece (the CLI and the app);
- ``bicubic(x)``: plain bicubic upsampling, the baseline every metric is reported beside;
- ``sample_grid(hr)``: one row per held-out picture: LR (nearest neighbour) | bicubic | engine | HR.
There is no latent space: ``latent``, ``sample`` and ``interpolate`` say so.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..base import Engine
from ..data.images import from_uint8, to_uint8

#: LR pixels per tile side in ``upscale_tiled`` (plus the receptive-field overlap on each side): bounds the
#: generator's activations (~240 MB a feature map at x4 with 64 channels) whatever the picture's size
DEFAULT_TILE = 160


class UpscaleEngine(Engine):
    kind: ClassVar[str] = "upscale"
    domains: ClassVar[int] = 1
    #: the pictures' own random crops are the training variation; no D augmentation (the paper has none)
    default_augment: ClassVar[str] = "none"
    #: Ledig et al.: batch 16; grids and metrics every 5 epochs (PSNR/SSIM/LPIPS, engines.metrics.superres)
    protocol_defaults: ClassVar[dict[str, Any]] = {
        "batch_size": 16, "epochs": 200, "sample_every": 5, "eval_every": 5, "grid_n": 8,
        "eval_metrics": "psnr,ssim,lpips",
    }

    @classmethod
    def default_config(cls) -> dict[str, Any]:
        return {**super().default_config(),
                "scale": 4,            # 2, 4 or 8: one x2 PixelShuffle stage each
                "crop_size": 96,       # HR training crop (the paper's 96 px); 0 or >= image size: whole pictures
                "val_fraction": 0.1,   # held out of training for the metrics and grids (0: none, then they
                #                        measure training pictures)
                "split_seed": 0}       # the held-out split depends on this and the picture count only

    def __init__(self, config: dict[str, Any] | None = None, image_size: int = 128, *, training: bool = True):
        super().__init__(config, image_size, training=training)
        c = self.config
        scale = c["scale"]
        if isinstance(scale, bool) or scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8 (one x2 PixelShuffle stage each), not {scale!r}")
        self.scale = int(scale)
        if self.image_size % self.scale or self.image_size // self.scale < 4:
            raise ValueError(f"image size {self.image_size} (the high-resolution size) must be a multiple of the "
                             f"scale {self.scale} with inputs of at least 4 px")
        crop = c["crop_size"]
        if isinstance(crop, bool) or not isinstance(crop, int) or crop < 0:
            raise ValueError(f"crop_size must be a whole number of pixels (0: whole pictures), not {crop!r}")
        self.crop = self.image_size if crop == 0 or crop >= self.image_size else crop
        if self.crop % self.scale or self.crop // self.scale < 4:
            raise ValueError(f"crop_size {crop} must be a multiple of the scale {self.scale} with inputs of at "
                             f"least 4 px (e.g. 96 for x4)")
        vf = c["val_fraction"]
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf <= 0.5:
            raise ValueError(f"val_fraction must be between 0 and 0.5, not {vf!r}")
        self.split_counts: tuple[int, int] | None = None

    # ---- data -----------------------------------------------------------------------------------
    def heldout_split(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(training indices, held-out indices) of ``n`` pictures: ``val_fraction`` of them (at least one when it
        is above 0), drawn with ``split_seed``; both sorted. The same on every resume."""
        vf = float(self.config["val_fraction"])
        k = 0 if vf == 0 else max(1, int(round(vf * n)))
        if n - k < 1:
            raise ValueError(f"{n} picture(s) leave nothing to train on after holding out {k}; lower val_fraction")
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(self.config["split_seed"])))
        self.split_counts = (n - k, k)
        return perm[k:].sort().values, perm[:k].sort().values

    def run_info(self) -> dict[str, Any]:
        info = dict(super().run_info())
        if self.split_counts is not None:
            info.update(train_pictures=self.split_counts[0], heldout_pictures=self.split_counts[1])
        return info

    def random_crop(self, hr: torch.Tensor) -> torch.Tensor:
        """One ``crop`` x ``crop`` window per picture (offsets from the global CPU RNG, which the trainer
        checkpoints: a resumed run draws the same crops)."""
        n, _, h, w = hr.shape
        c = self.crop
        if c >= h and c >= w:
            return hr
        oy = torch.randint(0, h - c + 1, (n,)).tolist()
        ox = torch.randint(0, w - c + 1, (n,)).tolist()
        return torch.stack([hr[i, :, y:y + c, x:x + c] for i, (y, x) in enumerate(zip(oy, ox))])

    def downsample(self, hr: torch.Tensor) -> torch.Tensor:
        """HR [-1, 1] -> LR [-1, 1]: bicubic with antialiasing (PIL's BICUBIC reduction, as the paper's MATLAB
        imresize), sides divided by ``scale``."""
        h, w = hr.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(f"a {w}x{h} picture cannot be downsampled by {self.scale}: its sides must be multiples")
        lr = F.interpolate(hr.float(), size=(h // self.scale, w // self.scale), mode="bicubic", antialias=True,
                           align_corners=False)
        return lr.clamp(-1, 1)  # bicubic overshoots a little at sharp edges

    def bicubic(self, lr: torch.Tensor) -> torch.Tensor:
        """The baseline: LR [-1, 1] upsampled by ``scale`` with bicubic interpolation, [-1, 1]."""
        h, w = lr.shape[-2:]
        up = F.interpolate(lr.float(), size=(h * self.scale, w * self.scale), mode="bicubic", align_corners=False)
        return up.clamp(-1, 1)

    # ---- inference -------------------------------------------------------------------------------
    def _upscale(self, lr: torch.Tensor) -> torch.Tensor:
        """One batch through the generator, [-1, 1] in and out; engines implement this."""
        raise NotImplementedError

    @property
    def receptive_radius(self) -> int:
        """LR pixels on each side of an output pixel's position that can change it (the tile overlap)."""
        raise NotImplementedError

    @torch.inference_mode()
    def upscale(self, x: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
        """LR pictures [N, 3, h, w] in [-1, 1] (or uint8) -> [N, 3, h*scale, w*scale] in [-1, 1], eval mode."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"upscale() expects RGB pictures [N, 3, H, W]; got {tuple(x.shape)}")
        if x.dtype == torch.uint8:
            x = from_uint8(x)
        was_training = self.training
        self.eval()
        try:
            with self.autocast():
                return torch.cat([self._upscale(x[i:i + batch_size].to(self.device)).float().clamp(-1, 1)
                                  for i in range(0, len(x), batch_size)])
        finally:
            self.train(was_training)

    @torch.inference_mode()
    def upscale_tiled(self, x: torch.Tensor, tile: int | None = DEFAULT_TILE,
                      dtype: torch.dtype = torch.uint8) -> torch.Tensor:
        """uint8 (or [-1, 1]) LR pictures [N, 3, h, w] -> [N, 3, h*scale, w*scale] on the CPU (uint8, or [-1, 1]
        with ``dtype=torch.float32``), in tiles of ``tile`` x ``tile`` LR pixels (None or 0: in one piece). Each
        tile is computed with ``receptive_radius`` pixels of its neighbours around it and only its own part is
        kept, so the result is the one-piece result (to float rounding) while the generator never sees more than
        (tile + 2 * radius)^2 pixels."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"upscale_tiled() expects RGB pictures [N, 3, H, W]; got {tuple(x.shape)}")
        if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 0):
            raise ValueError(f"tile must be a whole number of pixels (0: no tiling), not {tile!r}")
        convert = to_uint8 if dtype == torch.uint8 else (lambda t: t.to(dtype))
        x = from_uint8(x) if x.dtype == torch.uint8 else x.float()
        n, _, h, w = x.shape
        s = self.scale
        if not tile or (h <= tile and w <= tile):
            return convert(self.upscale(x)).cpu()
        r = int(self.receptive_radius)
        out = torch.empty(n, 3, h * s, w * s, dtype=dtype)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                py0, px0, py1, px1 = max(0, y0 - r), max(0, x0 - r), min(h, y1 + r), min(w, x1 + r)
                sr = self.upscale(x[:, :, py0:py1, px0:px1])
                keep = sr[:, :, (y0 - py0) * s:(y1 - py0) * s, (x0 - px0) * s:(x1 - px0) * s]
                out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = convert(keep).cpu()
        return out

    @torch.inference_mode()
    def sample_grid(self, images: torch.Tensor) -> dict[str, Any]:
        """One row per HR picture (uint8 or [-1, 1]): its LR input enlarged by nearest neighbour | bicubic |
        this engine | the HR original; every tile at the HR size."""
        hr = (from_uint8(images) if images.dtype == torch.uint8 else images.float()).to(self.device)
        lr = self.downsample(hr)
        near = F.interpolate(lr, scale_factor=self.scale, mode="nearest")
        cols = [to_uint8(near), to_uint8(self.bicubic(lr)), to_uint8(self.upscale(lr)), to_uint8(hr)]
        grid = torch.stack([c.cpu() for c in cols], dim=1).flatten(0, 1)  # row-major: picture i's columns
        return {"images": grid, "nrow": len(cols)}

    def latent(self, n: int, seed: int | None = 0) -> torch.Tensor:
        raise ValueError(f"{self.name} is an upscaling engine: it has no latent space; use upscale(x) "
                         "(`pokelab upscale`)")

    def sample(self, *args, **kwargs) -> torch.Tensor:
        raise ValueError(f"{self.name} is an upscaling engine: it does not sample; use upscale(x) "
                         "(`pokelab upscale EXPORT PICTURES --out DIR`)")

    def interpolate(self, *args, **kwargs) -> torch.Tensor:
        raise ValueError(f"{self.name} is an upscaling engine: it has no latent walk; use upscale(x)")

    def export_extra(self) -> dict[str, Any]:
        return {"scale": self.scale, "input_size": self.image_size // self.scale,
                "receptive_radius": int(self.receptive_radius), "supports": ["upscale"]}


def pixel_shuffle_stages(scale: int) -> int:
    """x2 PixelShuffle stages for a scale of 2, 4 or 8."""
    k = math.log2(scale)
    if k != int(k) or not 1 <= k <= 3:
        raise ValueError(f"scale must be 2, 4 or 8, not {scale!r}")
    return int(k)

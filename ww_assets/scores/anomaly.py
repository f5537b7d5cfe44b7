"""Where the anomaly score is computed: image, feature and anomaly scores and latent vectors, per image.

For an image x (Lupton RGB, uint8 / 255 in [0, 1]) the encoder guesses z = E(x) and the generator reconstructs
G(z). With f the critic's features (the flattened last convolution):

- image score     residual between x and G(z)
- feature score   residual between f(x) and f(G(z))
- anomaly score   their weighted sum

``ScoreConfig.formula`` chooses how (MODEL.md), and ``ScoreConfig.to_dict()`` is recorded with every score table:

- ``"hsc"`` (Storey-Fisher et al. 2021): L1 sums, anomaly = (1 - lam) * image + lam * feature, lam = 0.3.
- ``"fanogan"`` (Schlegl et al. 2019): per-sample means of squared errors, anomaly = image + kappa * feature.

``refine_steps = 0`` is f-AnoGAN's single encoder pass (the fast default, under ``torch.inference_mode``).
``refine_steps > 0`` then moves z by Adam (``refine_lr``; the HSC reference uses 10 steps at lr 0.1) to lower each
image's own anomaly score, starting from the encoder's guess; scores are those at the final z. Adam works per
element, so a batch refines each image independently, exactly as one image at a time would.

Residuals are measured on images in [0, 1]. On CUDA: pinned-memory, non-blocking host-to-device copies; optional
bf16 autocast and channels-last (residuals are always summed in fp32). Plain PyTorch: no Dagster.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ww_assets.model.networks import WGAN, ImageDataError, check_images, device_name, resolve_device

__all__ = ["ScoreConfig", "ScoreResult", "score_images", "reconstruct", "ImageDataError", "FORMULAS"]

FORMULAS = ("hsc", "fanogan")


@dataclass(frozen=True)
class ScoreConfig:
    """How scores are computed; recorded with every score table (``to_dict``)."""

    formula: str = "hsc"
    lam: float = 0.3          # hsc: weight of the feature score
    kappa: float = 1.0        # fanogan: weight of the feature score
    refine_steps: int = 0     # 0: single encoder pass; HSC reference: 10
    refine_lr: float = 0.1
    batch_size: int = 1024
    precision: str = "fp32"   # "fp32" or "bf16" (autocast; residuals in fp32)
    channels_last: bool = False
    compile: bool = False     # torch.compile the networks (CUDA only)

    def __post_init__(self) -> None:
        problems = []
        if self.formula not in FORMULAS:
            problems.append(f"formula must be one of {FORMULAS}, got {self.formula!r}")
        if not 0.0 <= self.lam <= 1.0:
            problems.append(f"lam must be in [0, 1], got {self.lam}")
        if self.kappa < 0:
            problems.append(f"kappa must be >= 0, got {self.kappa}")
        if self.refine_steps < 0:
            problems.append(f"refine_steps must be >= 0, got {self.refine_steps}")
        if self.refine_lr <= 0:
            problems.append(f"refine_lr must be > 0, got {self.refine_lr}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if self.precision not in ("fp32", "bf16"):
            problems.append(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if problems:
            raise ValueError("invalid ScoreConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["description"] = self.describe()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ScoreConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def describe(self) -> str:
        if self.formula == "hsc":
            core = (f"hsc: L1 sums; anomaly = {1 - self.lam:g} * image + {self.lam:g} * feature")
        else:
            core = f"fanogan: mean squared errors; anomaly = image + {self.kappa:g} * feature"
        z = (f"z refined by {self.refine_steps} Adam steps (lr {self.refine_lr:g}) from E(x)" if self.refine_steps
             else "z = E(x), single pass")
        return f"{core}; {z}; residuals on images in [0, 1]"


@dataclass
class ScoreResult:
    """Per-image scores (float64, (N,)) and latent vectors (float32, (N, latent_dim)), in input order."""

    image_score: np.ndarray
    feature_score: np.ndarray
    anomaly_score: np.ndarray
    latents: np.ndarray
    config: ScoreConfig
    device: str = "cpu"
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.anomaly_score)

    @property
    def images_per_s(self) -> float:
        return len(self) / self.seconds if self.seconds > 0 else float("nan")


ProgressFn = Callable[[int, int], Any]


# -------------------------------------------------------------------------------------------------------
def _residuals(x: torch.Tensor, rec: torch.Tensor, f_x: torch.Tensor, f_rec: torch.Tensor,
               cfg: ScoreConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    d_img = (x.float() - rec.float()).flatten(1)
    d_feat = (f_x.float() - f_rec.float()).flatten(1)
    if cfg.formula == "hsc":
        img, feat = d_img.abs().sum(1), d_feat.abs().sum(1)
        return img, feat, (1 - cfg.lam) * img + cfg.lam * feat
    img, feat = d_img.pow(2).mean(1), d_feat.pow(2).mean(1)
    return img, feat, img + cfg.kappa * feat


class _Batches:
    """uint8 / float image batches as float [0, 1] on device; the next batch is staged while this one computes."""

    def __init__(self, images, batch_size: int, device: torch.device, channels_last: bool):
        self.images, self.bs, self.device, self.cl = images, batch_size, device, channels_last
        self.n = len(images)

    def _stage(self, start: int) -> torch.Tensor:
        chunk = self.images[start:start + self.bs]
        if isinstance(chunk, torch.Tensor):
            t = chunk
        else:
            t = torch.from_numpy(np.array(chunk))  # a copy: memory maps are read-only
        if t.device != self.device:
            if self.device.type == "cuda" and t.device.type == "cpu":
                t = t.pin_memory().to(self.device, non_blocking=True)
            else:
                t = t.to(self.device)
        return t

    def __iter__(self):
        nxt = self._stage(0) if self.n else None
        for start in range(0, self.n, self.bs):
            cur = nxt
            if start + self.bs < self.n:
                nxt = self._stage(start + self.bs)
            x = cur.float().div_(255.0) if cur.dtype == torch.uint8 else cur.float()
            if self.cl:
                x = x.contiguous(memory_format=torch.channels_last)
            yield start, x


def _autocast(device: torch.device, bf16: bool):
    if bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    import contextlib

    return contextlib.nullcontext()


def score_images(wgan: WGAN, images, config: ScoreConfig | None = None, device=None,
                 progress: ProgressFn | None = None, source: str = "images") -> ScoreResult:
    """Score uint8 (N, 3, 96, 96) images (numpy, memory-mapped numpy, or torch; float in [0, 1] also accepted).

    ``device``: None keeps the model where it is; "auto" picks CUDA when present; or any torch device.
    ``progress(done, total)`` is called after each batch. ``source`` names the images in error messages
    (e.g. the file they came from). The model is switched to eval mode and moved to ``device``.
    """
    cfg = config or ScoreConfig()
    mcfg = wgan.config
    check_images(images, mcfg.image_size, mcfg.channels, source=source)
    dev = wgan.device if device is None else resolve_device(device)
    model = wgan.to(dev).eval()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    bf16 = cfg.precision == "bf16"
    E, G, features = model.encoder, model.generator, model.critic.features
    if cfg.compile and dev.type == "cuda":
        E, G, features = torch.compile(E), torch.compile(G), torch.compile(features)
    n = len(images)
    out_img = torch.empty(n, dtype=torch.float32, device=dev)
    out_feat = torch.empty_like(out_img)
    out_anom = torch.empty_like(out_img)
    out_z = torch.empty(n, mcfg.latent_dim, dtype=torch.float32, device=dev)
    started = time.perf_counter()
    amp = _autocast(dev, bf16)
    for start, x in _Batches(images, cfg.batch_size, dev, cfg.channels_last):
        stop = start + len(x)
        with torch.inference_mode(), amp:
            z = E(x).float()
            if cfg.refine_steps == 0:
                rec = G(z)
                f_both = features(torch.cat([x, rec.to(x.dtype)]))
                img, feat, anom = _residuals(x, rec, f_both[:len(x)], f_both[len(x):], cfg)
            else:
                f_x = features(x).float()
        if cfg.refine_steps:
            # refine outside inference mode: tensors made there cannot take part in autograd
            z, img, feat, anom = _refine(G, features, x.clone(), f_x.clone(), z.clone(), cfg, amp)
        out_img[start:stop], out_feat[start:stop], out_anom[start:stop] = img, feat, anom
        out_z[start:stop] = z
        if progress is not None:
            progress(stop, n)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - started
    return ScoreResult(
        image_score=out_img.cpu().numpy().astype(np.float64),
        feature_score=out_feat.cpu().numpy().astype(np.float64),
        anomaly_score=out_anom.cpu().numpy().astype(np.float64),
        latents=out_z.cpu().numpy().astype(np.float32),
        config=cfg,
        device=device_name(dev),
        seconds=seconds,
    )


def _refine(G, features, x, f_x, z0, cfg: ScoreConfig, amp):
    """Adam on z (only z: the networks' weights get no gradients) to lower each image's anomaly score."""
    z = z0.detach().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.refine_lr)
    for _ in range(cfg.refine_steps):
        with amp:
            rec = G(z)
            f_rec = features(rec)
        _, _, anom = _residuals(x, rec, f_x, f_rec, cfg)
        (grad,) = torch.autograd.grad(anom.sum(), z)
        z.grad = grad
        opt.step()
    with torch.no_grad(), amp:
        rec = G(z)
        img, feat, anom = _residuals(x, rec, f_x, features(rec), cfg)
    return z.detach().float(), img, feat, anom


def reconstruct(wgan: WGAN, images, device=None, batch_size: int = 256) -> np.ndarray:
    """G(E(x)) as uint8 (N, 3, H, W) numpy, for figures (real vs reconstructed)."""
    check_images(images, wgan.config.image_size, wgan.config.channels, source="images to reconstruct")
    dev = wgan.device if device is None else resolve_device(device)
    model = wgan.to(dev).eval()
    outs = []
    with torch.inference_mode():
        for _, x in _Batches(images, batch_size, dev, False):
            outs.append((model.reconstruct(x).float().clamp(0, 1) * 255).round().to(torch.uint8).cpu())
    return torch.cat(outs).numpy()

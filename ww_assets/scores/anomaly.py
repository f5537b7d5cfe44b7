"""Where the anomaly score is computed: image, feature and anomaly scores and latent vectors, per image.

For an image x (Lupton RGB, uint8 / 255 in [0, 1]) the encoder guesses z = E(x), the generator draws G(z), and the
model's prediction for the image is E[x | G(z)]: with an observation model, the expected observation of the
noise-free G(z) given the image's sky noise (``ww_assets.model.observation``), else G(z) itself. With f the
critic's features (the flattened last convolution), ``ScoreConfig.formula`` chooses the scores, and
``ScoreConfig.to_dict()`` is recorded with every score table:

- ``"local"``: residuals in units of each pixel's own noise, ``u = (x - E) / sd``. image score =
  mean(u^2) - 1 (what is spread over the image); feature score = mean squared critic-feature residual; anomaly
  score = the peak of the PSF-scale matched-filter chi-square map, as a sigma (``scores.residuals``), plus
  ``global_weight`` x the image score. A compact oddity of any colour raises the peak; the published formulas
  bury it in the noise of 27,648 pixels (BENCHMARKS.md compares them).
- ``"hsc"`` (Storey-Fisher et al. 2021; the default): L1 sums, anomaly = (1 - lam) * image + lam * feature, lam = 0.3.
  It stays the default while the shipped model does not pass its structure gate: "local" reads residuals, and a
  model that draws one blob for every galaxy leaves residuals that are the galaxy itself (BENCHMARKS.md).
- ``"fanogan"`` (Schlegl et al. 2019): per-sample means of squared errors, anomaly = image + kappa * feature.

``refine_steps = 0`` is f-AnoGAN's single encoder pass (the fast default, under ``torch.inference_mode``).
``refine_steps > 0`` then moves z by Adam (``refine_lr``; the HSC reference uses 10 steps at lr 0.1) from the
encoder's guess to lower each image's misfit (its anomaly score; for "local" its chi-square); scores are those at
the final z.

On CUDA: pinned-memory, non-blocking host-to-device copies; optional bf16 autocast and channels-last (residuals
are always summed in fp32). Plain PyTorch: no Dagster.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np
import torch

from ww_assets.model.networks import WGAN, ImageDataError, check_images, device_name, resolve_device
from ww_assets.scores.residuals import PSF_SIGMA_PX, noise_units, residual_statistics

__all__ = ["ScoreConfig", "ScoreResult", "score_images", "reconstruct", "ImageDataError", "FORMULAS"]

FORMULAS = ("local", "hsc", "fanogan")


@dataclass(frozen=True)
class ScoreConfig:
    """How scores are computed; recorded with every score table (``to_dict``)."""

    formula: str = "hsc"      # the published formula; "local" pays off only with a model that reconstructs
    lam: float = 0.3          # hsc: weight of the feature score
    kappa: float = 1.0        # fanogan: weight of the feature score
    psf_px: float = PSF_SIGMA_PX   # local: Gaussian sigma of the matched filter, pixels
    global_weight: float = 0.0     # local: weight of the image (global chi-square) score in the anomaly score
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
        if self.psf_px <= 0:
            problems.append(f"psf_px must be > 0, got {self.psf_px}")
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
        if self.formula == "local":
            core = (f"local: residuals in units of each pixel's noise; anomaly = peak of the matched-filter (sigma "
                    f"{self.psf_px:g} px) chi-square map" + (f" + {self.global_weight:g} * image" if self.global_weight
                                                             else ""))
        elif self.formula == "hsc":
            core = (f"hsc: L1 sums; anomaly = {1 - self.lam:g} * image + {self.lam:g} * feature")
        else:
            core = f"fanogan: mean squared errors; anomaly = image + {self.kappa:g} * feature"
        z = (f"z refined by {self.refine_steps} Adam steps (lr {self.refine_lr:g}) from E(x)" if self.refine_steps
             else "z = E(x), single pass")
        return f"{core}; {z}; residuals against the model's expected observation"


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
class _Scorer:
    """One batch's scores under ``cfg``: the model's expected observation of G(z), the residuals, the statistics."""

    def __init__(self, model: WGAN, cfg: ScoreConfig, features):
        self.model, self.cfg, self.features = model, cfg, features

    def prediction(self, x: torch.Tensor, g: torch.Tensor, noise: torch.Tensor | None):
        """(expected observation, its per-pixel variance or None) for the generator's output ``g``."""
        mean, var = self.model.expected(g, noise)
        if var is None and self.cfg.formula == "local":
            # a model without an observation model: the variance of the observed image itself, from its noise
            from ww_assets.model.observation import noise_variance

            var = noise_variance(x.float(), noise)
        return mean.float(), var

    def scores(self, x, mean, var, f_x, f_rec):
        """(image, feature, anomaly) per image."""
        cfg = self.cfg
        d_feat = (f_x.float() - f_rec.float()).flatten(1)
        if cfg.formula == "local":
            u = noise_units(x.float(), mean, var)
            stats = residual_statistics(u, cfg.psf_px)
            feat = d_feat.pow(2).mean(1)
            return stats["chi2"], feat, stats["peak"] + cfg.global_weight * stats["chi2"]
        d_img = (x.float() - mean).flatten(1)
        if cfg.formula == "hsc":
            img, feat = d_img.abs().sum(1), d_feat.abs().sum(1)
            return img, feat, (1 - cfg.lam) * img + cfg.lam * feat
        img, feat = d_img.pow(2).mean(1), d_feat.pow(2).mean(1)
        return img, feat, img + cfg.kappa * feat

    def objective(self, x, mean, var, f_x, f_rec):
        """What z refinement lowers: the image's own misfit (chi-square under the noise model for "local")."""
        if self.cfg.formula == "local":
            return noise_units(x.float(), mean, var).pow(2).mean((1, 2, 3))
        return self.scores(x, mean, var, f_x, f_rec)[2]


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


def _noise_for(images, noise, start: int, stop: int, x: torch.Tensor) -> torch.Tensor:
    """The sky noise of images[start:stop]: as given where known (finite), estimated from the image elsewhere."""
    from ww_assets.model.observation import estimate_sigma

    given = None if noise is None else torch.as_tensor(np.asarray(noise[start:stop], dtype=np.float32),
                                                       device=x.device)
    if given is not None and bool(torch.isfinite(given).all()):
        return given
    estimate = estimate_sigma(x.float())
    if given is None:
        return estimate
    return torch.where(torch.isfinite(given), given, estimate)


def score_images(wgan: WGAN, images, config: ScoreConfig | None = None, device=None,
                 progress: ProgressFn | None = None, source: str = "images", noise=None) -> ScoreResult:
    """Score uint8 (N, 3, 96, 96) images (numpy, memory-mapped numpy, or torch; float in [0, 1] also accepted).

    ``noise``: each image's sky noise, (N, 3) flux sigma in channel order i, r, g (the catalog's ``sky_sigma_*``
    columns, measured on the fluxes); NaN or None where unknown (RGB-only thumbnails): then it is estimated from the
    image itself (``ww_assets.model.observation.estimate_sigma``). Needed by a model with an observation model and
    by the "local" formula; unused otherwise.
    ``device``: None keeps the model where it is; "auto" picks CUDA when present; or any torch device.
    ``progress(done, total)`` is called after each batch. ``source`` names the images in error messages.
    """
    cfg = config or ScoreConfig()
    mcfg = wgan.config
    check_images(images, mcfg.image_size, mcfg.channels, source=source)
    if noise is not None and np.asarray(noise).shape != (len(images), mcfg.channels):
        raise ImageDataError(f"{source}: noise levels must be ({len(images)}, {mcfg.channels}), got "
                             f"{np.asarray(noise).shape}")
    dev = wgan.device if device is None else resolve_device(device)
    model = wgan.to(dev).eval()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    E, G, features = model.encoder, model.generator, model.critic.features
    if cfg.compile and dev.type == "cuda":
        E, G, features = torch.compile(E), torch.compile(G), torch.compile(features)
    scorer = _Scorer(model, cfg, features)
    needs_noise = mcfg.observation != "none" or cfg.formula == "local"
    n = len(images)
    out = {k: torch.empty(n, dtype=torch.float32, device=dev) for k in ("image", "feature", "anomaly")}
    out_z = torch.empty(n, mcfg.latent_dim, dtype=torch.float32, device=dev)
    started = time.perf_counter()
    amp = _autocast(dev, cfg.precision == "bf16")
    for start, x in _Batches(images, cfg.batch_size, dev, cfg.channels_last):
        stop = start + len(x)
        sigma = _noise_for(images, noise, start, stop, x) if needs_noise else None
        with torch.inference_mode(), amp:
            z = E(x).float()
            f_x = features(x).float()
            if cfg.refine_steps == 0:
                mean, var = scorer.prediction(x, G(z), sigma)
                scores = scorer.scores(x, mean, var, f_x, features(mean.to(x.dtype)))
        if cfg.refine_steps:
            # refine outside inference mode: tensors made there cannot take part in autograd
            z, scores = _refine(G, scorer, x.clone(), f_x.clone(), z.clone(), sigma, amp)
        for key, value in zip(("image", "feature", "anomaly"), scores):
            out[key][start:stop] = value
        out_z[start:stop] = z
        if progress is not None:
            progress(stop, n)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - started
    return ScoreResult(
        image_score=out["image"].cpu().numpy().astype(np.float64),
        feature_score=out["feature"].cpu().numpy().astype(np.float64),
        anomaly_score=out["anomaly"].cpu().numpy().astype(np.float64),
        latents=out_z.cpu().numpy().astype(np.float32),
        config=cfg,
        device=device_name(dev),
        seconds=seconds,
    )


def _refine(G, scorer: _Scorer, x, f_x, z0, sigma, amp):
    """Adam on z (only z: the networks' weights get no gradients) to lower each image's misfit; Adam works per
    element, so a batch refines each image independently, exactly as one image at a time would."""
    cfg = scorer.cfg
    z = z0.detach().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.refine_lr)
    for _ in range(cfg.refine_steps):
        with amp:
            mean, var = scorer.prediction(x, G(z), sigma)
            f_rec = scorer.features(mean.to(x.dtype))
        (grad,) = torch.autograd.grad(scorer.objective(x, mean, var, f_x, f_rec).sum(), z)
        z.grad = grad
        opt.step()
    with torch.no_grad(), amp:
        mean, var = scorer.prediction(x, G(z), sigma)
        scores = scorer.scores(x, mean, var, f_x, scorer.features(mean.to(x.dtype)))
    return z.detach().float(), scores


def reconstruct(wgan: WGAN, images, device=None, batch_size: int = 256) -> np.ndarray:
    """G(E(x)) as uint8 RGB (N, 3, H, W) numpy, for figures (real vs reconstructed): the noise-free image for a
    model with an observation model."""
    check_images(images, wgan.config.image_size, wgan.config.channels, source="images to reconstruct")
    dev = wgan.device if device is None else resolve_device(device)
    model = wgan.to(dev).eval()
    outs = []
    with torch.inference_mode():
        for _, x in _Batches(images, batch_size, dev, False):
            outs.append((model.rgb(model.reconstruct(x)).float().clamp(0, 1) * 255).round().to(torch.uint8).cpu())
    return torch.cat(outs).numpy()

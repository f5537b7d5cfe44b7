"""Training the wGAN: WGAN-GP for the generator and critic, then the f-AnoGAN izi_f encoder (G and D frozen).

    from ww_assets.model.networks import WGANConfig
    from ww_assets.model.training import train
    result = train(images_uint8, WGANConfig.preset("cpu"), progress=print)
    result.wgan        # the trained WGAN (generator, critic, encoder)
    result.history     # loss curves, one value per generator / encoder iteration
    result.card()      # what to record with the checkpoint

WGAN-GP (Gulrajani et al. 2017): per generator step, ``critic_steps`` critic steps on
``D(fake) - D(real) + gp_weight * (||grad D(x_hat)|| - 1)^2`` with x_hat on random lines between real and fake,
then one generator step on ``-D(G(z))``. Adam(lr, betas) for both.

Encoder, izi_f (Schlegl et al. 2019): ``MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x))))`` with f the critic's
features; G and D frozen, G in eval mode (no training noise).

On CPU everything is seeded and bit-reproducible for a given seed, thread count and PyTorch build. On CUDA the
defaults add bf16 autocast and channels-last memory (``WGANConfig.precision`` / ``channels_last``); the gradient
norm of the penalty and every loss are computed in fp32. ``progress`` receives a ``TrainProgress`` every
``progress_every_s`` seconds (and at the first and last step of each phase).

Plain PyTorch and numpy: no Dagster.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ww_assets.model.networks import (
    WGAN,
    ImageDataError,
    WGANConfig,
    check_images,
    device_name,
    resolve_device,
    use_bf16,
    use_channels_last,
)

__all__ = ["train", "train_gan", "train_encoder", "TrainProgress", "TrainResult", "ImageSampler",
           "TrainingDivergedError"]

ProgressFn = Callable[["TrainProgress"], Any]


class TrainingDivergedError(RuntimeError):
    """A loss became NaN or infinite."""


@dataclass
class TrainProgress:
    """One progress report: phase ("wgan" or "encoder"), 1-based step of total, latest losses, speed."""

    phase: str
    step: int
    total: int
    losses: dict[str, float]
    images_per_s: float
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / max(self.step, 1) * (self.total - self.step)

    def message(self) -> str:
        losses = ", ".join(f"{k} {v:.4g}" for k, v in self.losses.items())
        return (f"{self.phase} {self.step}/{self.total}: {losses} | {self.images_per_s:,.0f} images/s | "
                f"{self.elapsed_s:.0f} s, about {self.eta_s:.0f} s left")

    def __str__(self) -> str:
        return self.message()


@dataclass
class TrainResult:
    """A trained model with its loss curves and what is worth writing on its card."""

    wgan: WGAN
    history: dict[str, np.ndarray]
    device: str
    precision: str
    channels_last: bool
    seconds: dict[str, float] = field(default_factory=dict)
    images_per_s: dict[str, float] = field(default_factory=dict)
    n_images: int = 0

    @property
    def final_losses(self) -> dict[str, float]:
        """Mean of the last 5% (at least 1) of each curve: a stable 'final' value."""
        out = {}
        for key, values in self.history.items():
            if len(values):
                tail = max(1, len(values) // 20)
                out[key] = float(np.mean(values[-tail:]))
        return out

    def card(self) -> dict[str, Any]:
        cfg = self.wgan.config
        return {
            "config": cfg.to_dict(),
            "generator_iterations": int(len(self.history.get("critic_loss", ()))),
            "encoder_iterations": int(len(self.history.get("encoder_loss", ()))),
            "n_training_images": int(self.n_images),
            "device": self.device,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "torch_version": torch.__version__,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
            "images_per_s": {k: round(v, 1) for k, v in self.images_per_s.items()},
            "final_losses": {k: round(v, 6) for k, v in self.final_losses.items()},
        }


# -------------------------------------------------------------------------------------------------------
# data
# -------------------------------------------------------------------------------------------------------
class ImageSampler:
    """Mini-batches of uint8 images, drawn without replacement epoch by epoch (seeded), as float [0, 1] on device.

    ``images`` is one (N, 3, H, W) uint8 array or a list of them (e.g. one memory-mapped ``cutouts.npy`` per
    image batch). When they fit (``cache_bytes``), they are copied to the device once as uint8; otherwise each
    mini-batch is gathered on the host and sent through pinned memory without blocking.
    """

    def __init__(self, images: np.ndarray | torch.Tensor | Sequence[np.ndarray], device: torch.device,
                 seed: int, image_size: int = 96, channels: int = 3, channels_last: bool = False,
                 cache_bytes: int | None = None, sources: Sequence[str] | None = None, augment: bool = False,
                 noise: np.ndarray | Sequence[np.ndarray] | None = None, holdout: np.ndarray | None = None):
        arrays = list(images) if isinstance(images, (list, tuple)) else [images]
        if not arrays:
            raise ImageDataError("no training images given")
        names = list(sources) if sources is not None else [f"images[{i}]" for i in range(len(arrays))]
        for arr, name in zip(arrays, names):
            check_images(arr, image_size, channels, source=name, check_values=False)
            if getattr(arr, "dtype", None) not in (np.uint8, torch.uint8):
                raise ImageDataError(f"{name}: training expects uint8 images (0-255), got dtype {arr.dtype}")
        self.device = device
        self.channels_last = channels_last
        self.augment = augment
        self.sizes = np.array([len(a) for a in arrays], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)])
        self.n = int(self.offsets[-1])
        # images kept out of training (the model's own validation set), by index into the concatenated arrays
        self.allowed = np.arange(self.n) if holdout is None else np.setdiff1d(np.arange(self.n), holdout)
        if len(self.allowed) == 0:
            raise ImageDataError("every training image is held out for validation")
        self.rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=np.int64)
        self._pos = 0
        nbytes = self.n * channels * image_size * image_size
        if cache_bytes is None:
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                cache_bytes = free // 4
            else:
                cache_bytes = 8 << 30
        self.cached: torch.Tensor | None = None
        if nbytes <= cache_bytes:
            # np.array copies: the arrays may be read-only memory maps, which torch cannot wrap
            parts = [a if isinstance(a, torch.Tensor) else torch.from_numpy(np.array(a)) for a in arrays]
            self.cached = (torch.cat(parts) if len(parts) > 1 else parts[0]).to(device)
        self.arrays = arrays
        self.noise: torch.Tensor | None = None
        if noise is not None:
            parts = list(noise) if isinstance(noise, (list, tuple)) else [noise]
            flat = np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1, channels) for a in parts])
            if len(flat) != self.n or not np.isfinite(flat).all() or (flat <= 0).any():
                raise ImageDataError(f"noise levels: expected {self.n} finite positive rows of {channels}, got "
                                     f"{flat.shape} ({int((~np.isfinite(flat)).any(1).sum())} not finite)")
            self.noise = torch.from_numpy(flat).to(device)
        self._last: np.ndarray = np.empty(0, dtype=np.int64)

    def __len__(self) -> int:
        return self.n

    def reseed(self, seed: int) -> None:
        """Start a fresh, seeded sequence of epochs."""
        self.rng = np.random.default_rng(seed)
        self._order = np.empty(0, dtype=np.int64)
        self._pos = 0

    def _indices(self, n: int) -> np.ndarray:
        out = []
        while n > 0:
            if self._pos >= len(self._order):
                self._order = self.allowed[self.rng.permutation(len(self.allowed))]
                self._pos = 0
            take = self._order[self._pos:self._pos + n]
            self._pos += len(take)
            n -= len(take)
            out.append(take)
        return np.concatenate(out)

    def last_noise(self) -> torch.Tensor | None:
        """The sky noise (n, channels) of the images the last ``next`` returned (None without noise levels)."""
        if self.noise is None:
            return None
        return self.noise[torch.from_numpy(self._last).to(self.noise.device)]

    def next(self, n: int) -> torch.Tensor:
        idx = self._indices(n)
        self._last = idx
        if self.cached is not None:
            u8 = self.cached[torch.from_numpy(idx).to(self.cached.device)]
        else:
            u8 = self._gather(idx)
        if self.augment:
            u8 = dihedral(u8, self.rng.integers(0, 8, len(idx)))
        x = u8.float().div_(255.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _gather(self, idx: np.ndarray) -> torch.Tensor:
        which = np.searchsorted(self.offsets, idx, side="right") - 1
        batch = np.empty((len(idx), *self.arrays[0].shape[1:]), dtype=np.uint8)
        for a in np.unique(which):
            sel = np.nonzero(which == a)[0]
            local = idx[sel] - self.offsets[a]
            order = np.argsort(local)  # sorted reads are kinder to memory-mapped files
            src = self.arrays[a]
            batch[sel[order]] = np.asarray(src[local[order]])
        t = torch.from_numpy(batch)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)


def dihedral(images: torch.Tensor, codes: np.ndarray) -> torch.Tensor:
    """Apply one of the 8 flips / quarter turns to each image (code bit 2: flip left-right; bits 0-1: turns).

    A galaxy cutout has no preferred orientation, so these are images of the same distribution: used on the real
    images the critic and encoder see (``WGANConfig.augment``), they multiply a small training set by eight.
    """
    out = torch.empty_like(images)
    for code in np.unique(codes):
        sel = torch.from_numpy(np.nonzero(codes == code)[0]).to(images.device)
        part = images[sel]
        if code & 4:
            part = part.flip(-1)
        out[sel] = torch.rot90(part, int(code & 3), dims=(-2, -1))
    return out


# -------------------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------------------
class _Reporter:
    def __init__(self, phase: str, total: int, images_per_step: int, progress: ProgressFn | None,
                 every_s: float):
        self.phase, self.total, self.per_step = phase, total, images_per_step
        self.progress, self.every_s = progress, every_s
        self.start = time.monotonic()
        self.last = -np.inf

    def due(self, step: int) -> bool:
        return step == 1 or step == self.total or time.monotonic() - self.last >= self.every_s

    def report(self, step: int, losses: dict[str, float]) -> None:
        for key, value in losses.items():
            if not np.isfinite(value):
                raise TrainingDivergedError(
                    f"{self.phase} training diverged at step {step}/{self.total}: {key} = {value}; try a lower "
                    "learning rate or precision='fp32'")
        self.last = time.monotonic()
        if self.progress is not None:
            elapsed = self.last - self.start
            self.progress(TrainProgress(self.phase, step, self.total, losses,
                                        step * self.per_step / max(elapsed, 1e-9), elapsed))

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start


def _autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _set_requires_grad(module: torch.nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def _maybe_compile(module, enabled: bool, device: torch.device):
    if enabled and device.type == "cuda" and hasattr(torch, "compile"):
        return torch.compile(module)
    return module


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _prepare(model: WGAN | None, config: WGANConfig, device) -> tuple[WGAN, torch.device, bool, bool]:
    device = resolve_device(device)
    if model is None:
        torch.manual_seed(config.seed)  # initial weights
        model = WGAN(config)
    bf16 = use_bf16(config.precision, device)
    cl = use_channels_last(config.channels_last, device)
    model = model.to(device)
    if cl:
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick the fastest kernels once
    return model, device, bf16, cl


def _as_sampler(images, config: WGANConfig, device: torch.device, cl: bool, seed: int,
                sources: Sequence[str] | None, noise=None, holdout=None) -> ImageSampler:
    if isinstance(images, ImageSampler):
        return images
    if config.observation != "none" and noise is None:
        raise ImageDataError(f"observation {config.observation!r} needs the sky noise of every training image "
                             "(``noise``: (N, 3) flux sigma per image, channel order i, r, g)")
    return ImageSampler(images, device, seed=seed, image_size=config.image_size, channels=config.channels,
                        channels_last=cl, sources=sources, augment=config.augment,
                        noise=noise if config.observation != "none" else None, holdout=holdout)


# -------------------------------------------------------------------------------------------------------
# WGAN-GP
# -------------------------------------------------------------------------------------------------------
def _reconstruction_loss(model: WGAN, G_fwd, E_fwd, amp, x: torch.Tensor, noise) -> torch.Tensor:
    """MSE(x, E[x | G(E(x))]), through the exact expected observation (the interpolated one's gradient stalls
    training: ``observation.fast_expected_and_variance_flux``)."""
    with amp:
        rec = G_fwd(E_fwd(x))
    predicted, _ = model.expected(rec.float(), noise, exact=True)
    return F.mse_loss(predicted, x.float())


def _warm_start(model: WGAN, sampler: ImageSampler, config: WGANConfig, device, amp, G_fwd, E_fwd,
                progress, progress_every_s) -> torch.Tensor:
    """G and E trained as an autoencoder on ``_reconstruction_loss`` (``config.autoencoder_iterations``)."""
    n_iter, bs = config.autoencoder_iterations, config.batch_size
    opt = torch.optim.Adam([*model.generator.parameters(), *model.encoder.parameters()],
                           lr=config.autoencoder_lr, betas=(0.9, 0.99))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, n_iter))
    model.encoder.train()
    losses = torch.zeros(n_iter, device=device)
    reporter = _Reporter("autoencoder", n_iter, bs, progress, progress_every_s)
    for it in range(n_iter):
        loss = _reconstruction_loss(model, G_fwd, E_fwd, amp, sampler.next(bs), sampler.last_noise())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
        losses[it] = loss.detach()
        if reporter.due(it + 1):
            reporter.report(it + 1, {"autoencoder_loss": float(losses[it])})
    return losses


def _critic_step(model: WGAN, G_fwd, opt_d, real: torch.Tensor, noise, z: torch.Tensor, config: WGANConfig,
                 gen_rng: torch.Generator, amp, cl: bool) -> torch.Tensor:
    """One WGAN-GP critic update on a real batch against G(z). Returns (critic loss, Wasserstein estimate,
    gradient penalty), detached."""
    D, bs, device = model.critic, len(real), real.device
    with torch.no_grad(), amp:
        fake = G_fwd(z)
    # observed with the noise of other real images of the batch (a permutation: the same distribution)
    fake = model.observed(fake.float(), None if noise is None else noise[torch.randperm(
        bs, generator=gen_rng, device=device)])
    if cl:
        fake = fake.contiguous(memory_format=torch.channels_last)
    m = config.gp_samples or bs
    alpha = torch.rand(m, 1, 1, 1, generator=gen_rng, device=device)
    x_hat = (alpha * real[:m] + (1 - alpha) * fake[:m]).requires_grad_(True)
    with amp:
        scores = D(torch.cat([real, fake])).float()
        d_hat = D(x_hat).float()
    (grad,) = torch.autograd.grad(d_hat.sum(), x_hat, create_graph=True)
    gp = ((grad.float().flatten(1).norm(2, dim=1) - 1) ** 2).mean()
    w_dist = scores[:bs].mean() - scores[bs:].mean()
    loss_d = -w_dist + config.gp_weight * gp
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    return torch.stack([loss_d.detach(), w_dist.detach(), gp.detach()])


def train_gan(images, config: WGANConfig | None = None, device=None, progress: ProgressFn | None = None,
              progress_every_s: float = 15.0, model: WGAN | None = None,
              sources: Sequence[str] | None = None,
              on_iteration: Callable[[int, WGAN], Any] | None = None, noise=None,
              ) -> tuple[WGAN, dict[str, np.ndarray], float, float]:
    """WGAN-GP on ``images`` (uint8 (N, 3, 96, 96)). Returns (model, history, seconds, real images/s).

    ``on_iteration(iteration, model)``, when given, is called after every generator iteration (1-based), e.g. to
    keep snapshots; it must not change the model.
    """
    config = config or (model.config if model is not None else WGANConfig())
    model, device, bf16, cl = _prepare(model, config, device)
    sampler = _as_sampler(images, config, device, cl, config.seed, sources, noise)
    gen_rng = torch.Generator(device=device).manual_seed(config.seed + 1)
    torch.manual_seed(config.seed + 2)  # the generator's training noise
    G, D = model.generator, model.critic
    G.train()
    D.train()
    G_fwd = _maybe_compile(G, config.compile, device)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr, betas=config.betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr, betas=config.betas)
    bs, n_iter = config.batch_size, config.generator_iterations
    rec_w = float(config.reconstruction_weight)
    E = model.encoder
    E_fwd = _maybe_compile(E, config.compile, device)
    opt_e = torch.optim.Adam(E.parameters(), lr=config.lr, betas=config.betas) if rec_w > 0 else None
    keys = ("critic_loss", "wasserstein", "gradient_penalty", "generator_loss")
    if rec_w > 0:
        keys += ("reconstruction_loss",)
    hist = {k: torch.zeros(n_iter, device=device) for k in keys}
    amp = _autocast(device, bf16)
    if config.autoencoder_iterations:
        hist["autoencoder_loss"] = _warm_start(model, sampler, config, device, amp, G_fwd, E_fwd, progress,
                                               progress_every_s)
    reporter = _Reporter("wgan", n_iter, bs * config.critic_steps, progress, progress_every_s)

    def sample_z(n):
        return model.sample_latent(n, generator=gen_rng)

    for it in range(n_iter):
        # --- critic ---------------------------------------------------------------------------------
        _set_requires_grad(D, True)
        acc = torch.zeros(3, device=device)
        for _ in range(config.critic_steps):
            real = sampler.next(bs)
            noise = sampler.last_noise()
            acc += _critic_step(model, G_fwd, opt_d, real, noise, sample_z(bs), config, gen_rng, amp, cl)
        acc /= config.critic_steps
        # --- generator ------------------------------------------------------------------------------
        _set_requires_grad(D, False)
        with amp:
            loss_g = -D(model.observed(G_fwd(sample_z(bs)).float(), sampler.last_noise())).float().mean()
        loss = loss_g
        if rec_w > 0:  # the last critic step's real batch, reconstructed
            rec_loss = _reconstruction_loss(model, G_fwd, E_fwd, amp, real.float(), noise)
            loss = loss_g + rec_w * rec_loss
            hist["reconstruction_loss"][it] = rec_loss.detach()
            opt_e.zero_grad(set_to_none=True)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        if rec_w > 0:
            opt_e.step()
        hist["critic_loss"][it], hist["wasserstein"][it], hist["gradient_penalty"][it] = acc
        hist["generator_loss"][it] = loss_g.detach()
        step = it + 1
        if reporter.due(step):
            reporter.report(step, {k: float(hist[k][it]) for k in keys})
        if on_iteration is not None:
            on_iteration(step, model)
    _set_requires_grad(D, True)
    _sync(device)
    seconds = reporter.elapsed
    history = {k: v.float().cpu().numpy() for k, v in hist.items()}
    bad = [k for k, v in history.items() if not np.all(np.isfinite(v))]
    if bad:
        raise TrainingDivergedError(f"wgan training produced non-finite {bad}; try a lower learning rate")
    return model, history, seconds, n_iter * bs * config.critic_steps / max(seconds, 1e-9)


# -------------------------------------------------------------------------------------------------------
# encoder, izi_f
# -------------------------------------------------------------------------------------------------------
def train_encoder(images, model: WGAN, config: WGANConfig | None = None, device=None,
                  progress: ProgressFn | None = None, progress_every_s: float = 15.0,
                  sources: Sequence[str] | None = None, noise=None) -> tuple[WGAN, dict[str, np.ndarray], float, float]:
    """f-AnoGAN izi_f encoder training with G and D frozen. Returns (model, history, seconds, images/s).

    With an observation model the image term compares x with the *expected* observation of G(E(x)) (what a
    perfect model would predict for the pixel, the sky's clipped-noise mean included), and the feature term the
    critic's features of x with those of a noisy observation of G(E(x)) (what the critic was trained to see).
    The encoder's learning rate follows a cosine schedule to zero, so the last iterations settle.
    """
    config = config or model.config
    model, device, bf16, cl = _prepare(model, config, device)
    sampler = _as_sampler(images, config, device, cl, config.seed + 3, sources, noise)
    G, D, E = model.generator, model.critic, model.encoder
    if config.encoder_init_from_critic:
        E.convs.load_state_dict(D.convs.state_dict())
    G.eval()
    D.eval()
    E.train()
    _set_requires_grad(G, False)
    _set_requires_grad(D, False)
    G_fwd = _maybe_compile(G, config.compile, device)
    E_fwd = _maybe_compile(E, config.compile, device)
    opt = torch.optim.Adam(E.parameters(), lr=config.encoder_lr, betas=config.betas)
    bs, n_iter = config.encoder_batch_size, config.encoder_iterations
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, n_iter))
    keys = ("encoder_loss", "image_loss", "feature_loss")
    hist = {k: torch.zeros(n_iter, device=device) for k in keys}
    reporter = _Reporter("encoder", n_iter, bs, progress, progress_every_s)
    amp = _autocast(device, bf16)
    try:
        for it in range(n_iter):
            x = sampler.next(bs)
            noise = sampler.last_noise()
            with amp:
                rec = G_fwd(E_fwd(x))
            rec = rec.float()
            predicted, _ = model.expected(rec, noise, exact=True)
            seen = model.observed(rec, noise)
            with amp:
                both = D.features(torch.cat([x, seen])).float()
            f_real, f_rec = both[:bs].detach(), both[bs:]
            img = F.mse_loss(predicted, x)
            feat = F.mse_loss(f_rec, f_real)
            loss = img + config.kappa * feat
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
            hist["encoder_loss"][it], hist["image_loss"][it], hist["feature_loss"][it] = (
                loss.detach(), img.detach(), feat.detach())
            step = it + 1
            if reporter.due(step):
                reporter.report(step, {k: float(hist[k][it]) for k in keys})
    finally:
        _set_requires_grad(G, True)
        _set_requires_grad(D, True)
    _sync(device)
    seconds = reporter.elapsed
    history = {k: v.float().cpu().numpy() for k, v in hist.items()}
    if not all(np.all(np.isfinite(v)) for v in history.values()):
        raise TrainingDivergedError("encoder training produced non-finite losses; try a lower encoder_lr")
    return model, history, seconds, n_iter * bs / max(seconds, 1e-9)


def train(images, config: WGANConfig | None = None, device=None, progress: ProgressFn | None = None,
          progress_every_s: float = 15.0, sources: Sequence[str] | None = None, noise=None,
          holdout: np.ndarray | None = None) -> TrainResult:
    """Both phases from scratch: WGAN-GP, then the izi_f encoder. ``images``: uint8 (N, 3, 96, 96) or a list.

    ``device``: None/"auto" picks CUDA when present, else CPU (``result.device`` says which).
    ``sources``: names of the arrays (file paths) for error messages. ``noise``: the sky noise of every image
    ((N, 3) flux sigma, channel order i, r, g; or a list like ``images``), needed by the observation model.
    ``holdout``: indices (into the concatenated images) never shown to either phase: the model's validation set.
    """
    config = config or WGANConfig()
    model, dev, bf16, cl = _prepare(None, config, device)
    sampler = _as_sampler(images, config, dev, cl, config.seed, sources, noise, holdout)
    model, gan_hist, gan_s, gan_rate = train_gan(sampler, config, dev, progress, progress_every_s, model)
    sampler.reseed(config.seed + 3)
    model, enc_hist, enc_s, enc_rate = train_encoder(sampler, model, config, dev, progress, progress_every_s)
    model.eval()
    return TrainResult(
        wgan=model,
        history={**gan_hist, **enc_hist},
        device=device_name(dev),
        precision="bf16" if bf16 else "fp32",
        channels_last=cl,
        seconds={"wgan": gan_s, "encoder": enc_s},
        images_per_s={"wgan": gan_rate, "encoder": enc_rate},
        n_images=len(sampler.allowed),
    )

"""The wGAN of the Weird & Wonderful method: generator, critic and encoder (see MODEL.md), and their config.

The reference design (Storey-Fisher et al. 2021, after f-AnoGAN, Schlegl et al. 2019), for 96 x 96 x 3 images
and a 128-d latent space, no normalisation layers anywhere:

- ``Generator``: Linear 128 -> 512 x 6 x 6, ReLU; four transposed convolutions, kernel 5, stride 2
  (512 -> 256 -> 128 -> 64 -> 3, i.e. 12, 24, 48, 96 px), ReLU between, sigmoid out; Gaussian noise
  (sigma 0.1) after the second upsampling while training.
- ``Critic``: four convolutions, kernel 5, stride 2, LeakyReLU 0.2 (3 -> 64 -> 128 -> 256 -> 512, down to 6 x 6);
  ``features(x)`` is the flattened 6 x 6 x 512 activation (the f(x) of the feature score), then Linear -> 1.
- ``Encoder``: the critic's convolution stack, then Linear -> 128 and tanh.

``WGANConfig`` holds the architecture *and* the training hyperparameters with the reference values as defaults;
``base_channels`` (64 in the reference) scales every layer's width, so ``WGANConfig.preset("cpu")`` is the same
design at a quarter of the width (latent still 128) that trains in minutes on a laptop CPU.

This module is plain PyTorch: no Dagster, no file formats (``ww_assets.model.checkpoints``), no training loop
(``ww_assets.model.training``), no scores (``ww_assets.scores.anomaly``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

__all__ = [
    "WGANConfig",
    "Generator",
    "Critic",
    "Encoder",
    "WGAN",
    "ImageDataError",
    "check_images",
    "resolve_device",
    "PRESETS",
]


@dataclass(frozen=True)
class WGANConfig:
    """Everything that defines a model and how it was trained. Defaults are the reference design (MODEL.md).

    Architecture
        image_size: side of the square input in pixels (96); must be a multiple of 16 (four stride-2 layers).
        channels: colour channels (3: Lupton RGB of i, r, g).
        latent_dim: size of z (128).
        base_channels: width of the critic's first convolution (64); the critic goes x1, x2, x4, x8 and the
            generator mirrors it. Smaller values give the same design at a fraction of the cost.
        kernel_size: convolution kernel (5).
        leaky_slope: LeakyReLU slope in the critic and encoder (0.2).
        generator_noise: sigma of the Gaussian noise added after the generator's second upsampling while
            training (0.1; 0 switches it off).
        latent_prior: distribution of z for the generator: "uniform" on [-1, 1] (matches the encoder's tanh,
            as in f-AnoGAN) or "normal".
        upsample: "transposed" (the reference: transposed convolutions, kernel 5, stride 2; kernel sizes not
            divisible by the stride draw a checkerboard, Odena et al. 2016) or "resize" (nearest-neighbour x2,
            then a kernel-5 convolution: the same receptive field, no checkerboard).
        output: "sigmoid" (the reference: the RGB image in [0, 1]) or "flux": a linear output, the noise-free image
            on the Lupton scale but signed (``observation.lupton_to_flux`` gives its flux), no saturation: a
            noise-free sky is exactly zero flux with a live gradient (a sigmoid must saturate to draw it, and then
            learns nothing). Per-channel stretched fluxes train far slower: Lupton's colour-preserving mapping
            couples the channels through their mean.
        observation: "none" (the reference: G draws the observed image, noise and all) or "lupton_noise" (needs
            output "flux"): G draws the noise-free sky and the critic sees it through the survey's noise and the
            Lupton mapping (``ww_assets.model.observation``); a reconstruction is then the expected observation
            E[x | G(E(x))].
        noise_corr: lag-1 correlation of neighbouring pixels' sky noise used by the observation (0: white).

    WGAN-GP training
        batch_size (32), generator_iterations (about 10,000 in the reference), critic_steps per generator
        step (5), gp_weight (10), lr (1e-4), betas ((0.5, 0.9)).
        augment: show the critic and the encoder each real image under a random flip / quarter turn (a galaxy has
            no preferred orientation); off in the reference, which had a million images.
        gp_samples: how many of each batch's interpolates the gradient penalty is taken on (0: all): an unbiased
            estimate of the same expectation for a fraction of its cost (the double backward dominates on CPUs).
        reconstruction_weight: 0 in the reference. Above 0, the encoder is trained together with the generator
            during the WGAN phase, and the generator's loss adds this weight times MSE(x, E[x | G(E(x))]) on each
            real batch (a VAE/GAN-style hybrid): the critic makes G(z) look real, the reconstruction term makes G
            cover every galaxy rather than a few modes. With MSE on [0, 1] pixels, about 1000 makes the two
            gradients comparable (the critic's gradient norm is held near 1 by the penalty).
        autoencoder_iterations (0: none), autoencoder_lr: a warm start before the WGAN phase: G and E trained as
            an autoencoder on the same reconstruction loss (Adam, cosine schedule), so the adversarial phase
            starts from a generator that already draws galaxies.

    Encoder training (f-AnoGAN izi_f, G and D frozen)
        encoder_iterations, encoder_batch_size, encoder_lr, kappa (weight of the feature residual, 1).
        encoder_init_from_critic: start the encoder's convolutions from the trained critic's (it shares their
            architecture); off in the reference.

    Runtime
        seed: fixes initial weights and every random draw (bit-reproducible on CPU).
        precision: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "fp32" or "bf16".
        channels_last: "auto" (on CUDA), "on" or "off".
        compile: torch.compile the networks where it is safe (CUDA only; never the critic under the gradient
            penalty, whose double backward torch.compile does not support).
    """

    # architecture
    image_size: int = 96
    channels: int = 3
    latent_dim: int = 128
    base_channels: int = 64
    kernel_size: int = 5
    leaky_slope: float = 0.2
    generator_noise: float = 0.1
    latent_prior: str = "uniform"
    upsample: str = "transposed"
    output: str = "sigmoid"
    observation: str = "none"
    noise_corr: float = 0.0
    # WGAN-GP
    batch_size: int = 32
    generator_iterations: int = 10_000
    critic_steps: int = 5
    gp_weight: float = 10.0
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.9)
    augment: bool = False
    gp_samples: int = 0
    reconstruction_weight: float = 0.0
    autoencoder_iterations: int = 0
    autoencoder_lr: float = 1e-3
    # encoder, izi_f
    encoder_iterations: int = 10_000
    encoder_batch_size: int = 32
    encoder_lr: float = 1e-4
    kappa: float = 1.0
    encoder_init_from_critic: bool = False
    # runtime
    seed: int = 20211
    precision: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    name: str = "reference"

    def __post_init__(self) -> None:
        problems = []
        if self.image_size <= 0 or self.image_size % 16:
            problems.append(f"image_size must be a positive multiple of 16, got {self.image_size}")
        for key in ("channels", "latent_dim", "base_channels", "batch_size", "critic_steps", "encoder_batch_size"):
            if int(getattr(self, key)) < 1:
                problems.append(f"{key} must be >= 1, got {getattr(self, key)}")
        if float(self.reconstruction_weight) < 0:
            problems.append(f"reconstruction_weight must be >= 0, got {self.reconstruction_weight}")
        for key in ("generator_iterations", "encoder_iterations", "autoencoder_iterations"):
            if int(getattr(self, key)) < 0:
                problems.append(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.kernel_size < 3 or self.kernel_size % 2 == 0:
            problems.append(f"kernel_size must be odd and >= 3, got {self.kernel_size}")
        if self.latent_prior not in ("uniform", "normal"):
            problems.append(f"latent_prior must be 'uniform' or 'normal', got {self.latent_prior!r}")
        for key, allowed in (("upsample", ("transposed", "resize")), ("output", ("sigmoid", "flux")),
                             ("observation", ("none", "lupton_noise"))):
            if getattr(self, key) not in allowed:
                problems.append(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if self.observation == "lupton_noise" and self.output != "flux":
            problems.append("observation 'lupton_noise' needs output 'flux' (G draws noise-free fluxes)")
        if not 0 <= float(self.noise_corr) < 0.5:
            problems.append(f"noise_corr must be in [0, 0.5), got {self.noise_corr}")
        if int(self.gp_samples) < 0:
            problems.append(f"gp_samples must be >= 0, got {self.gp_samples}")
        if self.precision not in ("auto", "fp32", "bf16"):
            problems.append(f"precision must be 'auto', 'fp32' or 'bf16', got {self.precision!r}")
        if self.channels_last not in ("auto", "on", "off"):
            problems.append(f"channels_last must be 'auto', 'on' or 'off', got {self.channels_last!r}")
        if len(tuple(self.betas)) != 2:
            problems.append(f"betas must be two numbers, got {self.betas!r}")
        if problems:
            raise ValueError("invalid WGANConfig: " + "; ".join(problems))
        object.__setattr__(self, "betas", tuple(float(b) for b in self.betas))

    # --- derived -------------------------------------------------------------------------------------
    @property
    def widths(self) -> tuple[int, int, int, int]:
        """Channels of the critic's (and encoder's) four convolutions."""
        b = self.base_channels
        return (b, 2 * b, 4 * b, 8 * b)

    @property
    def generator_widths(self) -> tuple[int, int, int, int]:
        """Channels of the generator's projection and first three transposed convolutions (512-256-128-64)."""
        b = self.base_channels
        return (8 * b, 4 * b, 2 * b, b)

    @property
    def start_size(self) -> int:
        """Side of the smallest feature map (6 for 96 px)."""
        return self.image_size // 16

    @property
    def feature_dim(self) -> int:
        """Length of the critic's feature vector f(x) (6 * 6 * 512 = 18,432 in the reference)."""
        return self.widths[-1] * self.start_size**2

    # --- (de)serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WGANConfig":
        """Build from a dict (a checkpoint card); unknown keys are an error, missing keys take the defaults."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown WGANConfig fields: {unknown}")
        values = dict(data)
        if "betas" in values:
            values["betas"] = tuple(values["betas"])
        return cls(**values)

    def replace(self, **changes: Any) -> "WGANConfig":
        return dataclasses.replace(self, **changes)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "WGANConfig":
        """A named configuration: "reference" (GPU, about 10k generator iterations), "cpu" (the demo's
        CPU-sized model), "ci" (seconds, for tests)."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
        return dataclasses.replace(base, **overrides) if overrides else base

    def architecture_dict(self) -> dict[str, Any]:
        """The fields that decide the tensors' shapes and the forward pass (what a checkpoint must agree on)."""
        keys = ("image_size", "channels", "latent_dim", "base_channels", "kernel_size", "leaky_slope",
                "generator_noise", "latent_prior", "upsample", "output", "observation", "noise_corr")
        return {k: getattr(self, k) for k in keys}


PRESETS: dict[str, WGANConfig] = {
    # The published design and schedule. Meant for a GPU (bf16 autocast + channels-last by default there).
    "reference": WGANConfig(),
    # The same design at an eighth of the width (8-16-32-64 channels, latent 128) with what makes it learn on noisy
    # Lupton cutouts (MODEL.md; BENCHMARKS.md "Why the wGAN did not learn"): resize upsampling (no checkerboard),
    # a flux output seen through the survey's noise and the Lupton mapping (the generator draws the noise-free
    # galaxy; a generator that must draw the noise too spends itself on it), an autoencoder warm start and a
    # reconstruction term in the WGAN phase. About 25 minutes on two CPU cores.
    "cpu": WGANConfig(
        name="cpu",
        base_channels=8,
        generator_noise=0.0,
        upsample="resize",
        output="flux",
        observation="lupton_noise",
        noise_corr=0.4,
        batch_size=32,
        generator_iterations=400,
        critic_steps=5,
        lr=1e-4,
        reconstruction_weight=1000.0,
        autoencoder_iterations=600,
        autoencoder_lr=1e-3,
        encoder_iterations=200,
        encoder_batch_size=32,
        encoder_lr=1e-4,
        encoder_init_from_critic=False,
    ),
    # Seconds on any CPU: for tests and CI only; its scores mean nothing.
    "ci": WGANConfig(
        name="ci",
        base_channels=4,
        batch_size=8,
        generator_iterations=4,
        critic_steps=2,
        encoder_iterations=4,
        encoder_batch_size=8,
        encoder_init_from_critic=True,
    ),
}


# -------------------------------------------------------------------------------------------------------
# modules
# -------------------------------------------------------------------------------------------------------
def _conv_stack(cfg: WGANConfig) -> nn.ModuleDict:
    k, p = cfg.kernel_size, cfg.kernel_size // 2
    chans = (cfg.channels, *cfg.widths)
    return nn.ModuleDict(
        {f"conv{i + 1}": nn.Conv2d(chans[i], chans[i + 1], k, stride=2, padding=p) for i in range(4)}
    )


class Generator(nn.Module):
    """z (N, latent_dim) -> image (N, channels, image_size, image_size) in [0, 1]."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        w = config.generator_widths
        k, p = config.kernel_size, config.kernel_size // 2
        self.fc = nn.Linear(config.latent_dim, w[0] * config.start_size**2)
        chans = (*w, config.channels)
        for i in range(4):
            if config.upsample == "transposed":
                # stride 2 with padding k//2 and output_padding 1 doubles the side exactly: 6 -> 12 -> 24 -> 48 -> 96
                layer = nn.ConvTranspose2d(chans[i], chans[i + 1], k, stride=2, padding=p, output_padding=1)
            else:
                layer = nn.Conv2d(chans[i], chans[i + 1], k, stride=1, padding=p)  # after a nearest x2 resize
            self.add_module(f"up{i + 1}", layer)

    def _up(self, layer: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if self.config.upsample == "resize":
            h = nn.functional.interpolate(h, scale_factor=2, mode="nearest")
        return layer(h)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        h = torch.relu(self.fc(z)).view(z.shape[0], cfg.generator_widths[0], cfg.start_size, cfg.start_size)
        h = torch.relu(self._up(self.up1, h))
        h = torch.relu(self._up(self.up2, h))
        if self.training and cfg.generator_noise > 0:
            h = h + cfg.generator_noise * torch.randn_like(h)
        h = torch.relu(self._up(self.up3, h))
        h = self._up(self.up4, h)
        return torch.sigmoid(h) if cfg.output == "sigmoid" else h


class Critic(nn.Module):
    """The WGAN critic (the release calls it the discriminator). ``features(x)`` is f(x) of the feature score."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        self.convs = _conv_stack(config)
        self.fc = nn.Linear(config.feature_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened activations of the last convolution, (N, feature_dim)."""
        slope = self.config.leaky_slope
        for conv in self.convs.values():
            x = nn.functional.leaky_relu(conv(x), slope)
        # reshape (not view): channels-last activations are not contiguous in NCHW order
        return x.reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x)).squeeze(1)

    def features_and_score(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.fc(f).squeeze(1)


class Encoder(nn.Module):
    """image -> z: the critic's convolution stack, Linear -> latent_dim, tanh (the latent localiser)."""

    def __init__(self, config: WGANConfig):
        super().__init__()
        self.config = config
        self.convs = _conv_stack(config)
        self.fc = nn.Linear(config.feature_dim, config.latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.config.leaky_slope
        for conv in self.convs.values():
            x = nn.functional.leaky_relu(conv(x), slope)
        return torch.tanh(self.fc(x.reshape(x.shape[0], -1)))


class WGAN(nn.Module):
    """The three networks and their config, moved and switched to eval together.

    >>> model = WGAN(WGANConfig.preset("ci")).eval()
    >>> model.generator(model.sample_latent(2)).shape
    torch.Size([2, 3, 96, 96])
    """

    def __init__(self, config: WGANConfig | None = None):
        super().__init__()
        self.config = config or WGANConfig()
        self.generator = Generator(self.config)
        self.critic = Critic(self.config)
        self.encoder = Encoder(self.config)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of z from the generator's prior, on the model's device."""
        shape = (n, self.config.latent_dim)
        dev = self.device
        if self.config.latent_prior == "uniform":
            return torch.rand(shape, generator=generator, device=dev) * 2 - 1
        return torch.randn(shape, generator=generator, device=dev)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """G(E(x)): the generator's output for images in [0, 1] (see ``rgb`` and ``expected`` for images)."""
        return self.generator(self.encoder(x))

    def rgb(self, g: torch.Tensor) -> torch.Tensor:
        """The generator's output ``g`` as an RGB image in [0, 1] (for a "flux" generator: the noise-free
        Lupton image)."""
        if self.config.output == "sigmoid":
            return g
        from ww_assets.model.observation import lupton, lupton_to_flux

        return lupton(lupton_to_flux(g))

    def expected(self, g: torch.Tensor, noise: torch.Tensor | None, exact: bool = False):
        """(E[x | g], Var[x | g] or None): what the model predicts an observation of its output ``g`` looks like.
        With the observation model, the mean and variance of the observed pixel given the image's sky ``noise``
        (N, 3); without one, the generator's image itself (and no variance)."""
        if self.config.observation == "none":
            return g, None
        from ww_assets.model import observation as obs

        if noise is None:
            raise ImageDataError("this model's observation model needs each image's sky noise (N, 3)")
        flux = obs.lupton_to_flux(g.float())
        fn = obs.expected_and_variance_flux if exact else obs.fast_expected_and_variance_flux
        return fn(flux, noise.to(flux.device, flux.dtype))

    def observed(self, g: torch.Tensor, noise: torch.Tensor | None, generator=None) -> torch.Tensor:
        """What the critic sees of the generator's output: ``g`` itself, or a noisy observation of it."""
        if self.config.observation == "none" or noise is None:
            return g
        from ww_assets.model import observation as obs

        return obs.observe_flux(obs.lupton_to_flux(g.float()), noise.to(g.device, torch.float32),
                                self.config.noise_corr, generator=generator)

    def parts(self) -> dict[str, nn.Module]:
        """The three networks under the names the published release uses for its files."""
        return {"generator": self.generator, "discriminator": self.critic, "encoder": self.encoder}

    def extra_repr(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        return f"config={self.config.name!r}, base_channels={self.config.base_channels}, parameters={n:,}"


# -------------------------------------------------------------------------------------------------------
# input checks and device choice, shared by training and scoring
# -------------------------------------------------------------------------------------------------------
class ImageDataError(ValueError):
    """Images that cannot go into the networks: wrong shape, channels, dtype or range, NaN/inf."""


def check_images(images: Any, image_size: int = 96, channels: int = 3, source: str = "images",
                 check_values: bool = True) -> None:
    """Raise ImageDataError naming ``source`` unless ``images`` is (N, channels, size, size) uint8, or float in
    [0, 1] without NaN/inf. Channels-last arrays (N, size, size, channels) are refused with a hint."""
    shape = tuple(getattr(images, "shape", ()))
    dtype = getattr(images, "dtype", None)
    want = f"(N, {channels}, {image_size}, {image_size})"
    if len(shape) != 4:
        raise ImageDataError(f"{source}: expected an array of shape {want}, got shape {shape or type(images)}")
    if shape[1:] != (channels, image_size, image_size):
        hint = ""
        if shape[1:] == (image_size, image_size, channels):
            hint = " (channels last: transpose to channels first with .transpose(0, 3, 1, 2))"
        elif shape[2:] == (image_size, image_size):
            hint = f" ({shape[1]} channels; the model expects {channels}: Lupton RGB of i, r, g)"
        elif shape[1] == channels:
            hint = f" ({shape[2]} x {shape[3]} px; the model expects {image_size} x {image_size} cutouts)"
        raise ImageDataError(f"{source}: expected shape {want}, got {shape}{hint}")
    if shape[0] == 0:
        raise ImageDataError(f"{source}: no images (shape {shape})")
    is_torch = isinstance(images, torch.Tensor)
    if dtype in (np.uint8, torch.uint8):
        return
    floating = (is_torch and images.is_floating_point()) or (
        not is_torch and np.issubdtype(np.dtype(dtype), np.floating))
    if not floating:
        raise ImageDataError(f"{source}: expected uint8 (0-255) or float in [0, 1], got dtype {dtype}")
    if not check_values:
        return
    n_bad, n_nan, first_bad, lo, hi = 0, 0, -1, np.inf, -np.inf
    for start in range(0, shape[0], 4096):  # in chunks: the array may be a large memory map
        chunk = images[start:start + 4096]
        chunk = chunk.detach().float().cpu().numpy() if is_torch else np.asarray(chunk)
        finite = np.isfinite(chunk)
        bad = np.flatnonzero(~finite.reshape(len(chunk), -1).all(1))
        if len(bad):
            n_bad += len(bad)
            n_nan += int(np.isnan(chunk).sum())
            first_bad = start + int(bad[0]) if first_bad < 0 else first_bad
        elif n_bad == 0:
            lo, hi = min(lo, float(chunk.min())), max(hi, float(chunk.max()))
    if n_bad:
        raise ImageDataError(
            f"{source}: {n_bad} image(s) contain NaN/inf ({n_nan} NaN values), first at index {first_bad}; "
            "quarantine them before training or scoring")
    if lo < 0 or hi > 1:
        raise ImageDataError(f"{source}: float images must be in [0, 1] (uint8 / 255), got range [{lo:g}, {hi:g}]")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """"auto"/None -> the first CUDA GPU when there is one (else Apple MPS, else CPU); otherwise as given."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but this PyTorch ({torch.__version__}) sees no CUDA GPU")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def device_name(device: torch.device) -> str:
    """A human-readable name of the device ("cpu (2 threads)", "cuda:0 NVIDIA H100 80GB HBM3")."""
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def use_bf16(precision: str, device: torch.device) -> bool:
    if precision == "bf16":
        return True
    if precision == "fp32":
        return False
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def use_channels_last(setting: str | bool, device: torch.device) -> bool:
    if isinstance(setting, bool):
        return setting
    if setting == "on":
        return True
    if setting == "off":
        return False
    return device.type == "cuda"


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

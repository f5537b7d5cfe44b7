"""Getting the networks the pipeline scores with: load a checkpoint or train a preset, and describe the result.

``obtain_wgan`` follows ``ww_assets.model.selection``'s rule, loads weights only (a checkpoint is untrusted input)
or trains on the written cutouts, and returns the model with its card (what it is, where it came from, how it
was trained) and, when trained here, its loss curves. ``model_figures`` draws what a person needs to judge it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ww_assets.model.checkpoints import load_wgan, read_card
from ww_assets.model.data import file_fingerprint, load_training_images, sample_images
from ww_assets.model.networks import WGAN, WGANConfig, device_name
from ww_assets.model.selection import PRETRAINED_DIR, choose_checkpoint, resolve_preset
from ww_assets.model.training import TrainProgress, train
from ww_assets.storage import StorageLayout

__all__ = ["ModelBuild", "obtain_wgan", "model_figures", "reconstruction_check"]


@dataclass
class ModelBuild:
    """A model ready to save: the networks, their card, the training images used (memory maps), and figures."""

    wgan: WGAN
    card: dict[str, Any]
    arrays: list[np.ndarray]
    history: dict[str, np.ndarray] | None = None
    title: str = ""
    shipped_figures: dict[str, Path] = field(default_factory=dict)
    why: str = ""


def _load(checkpoint: str, layout: StorageLayout, device, batches, why: str, log) -> ModelBuild:
    log(f"loading checkpoint {checkpoint} (weights only) onto {device_name(device)}")
    model = load_wgan(checkpoint, device=device)
    try:
        arrays, _, _ = load_training_images(layout, batches, model.config.image_size, model.config.channels)
    except Exception as exc:  # figures only: a published release needs no images to load
        log(f"no images for the reconstruction figure ({exc})")
        arrays = []
    card = {"source": "checkpoint", "checkpoint": str(Path(checkpoint).expanduser().resolve()),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__, "device": device_name(device)}
    folder = Path(checkpoint)
    original = read_card(folder) if folder.is_dir() else None
    if original:
        card["original_card"] = {k: v for k, v in original.items() if k != "files"}
    shipped = {p.name: p for p in sorted(folder.glob("*.png")) if p.name != "reconstructions.png"} \
        if folder.is_dir() else {}
    return ModelBuild(model, card, arrays, title=f"wGAN loaded from {folder.name}", shipped_figures=shipped, why=why)


def _train(preset: str, overrides: dict, layout: StorageLayout, device, batches, why: str,
           progress: Callable[[TrainProgress], Any], progress_every_s: float, log) -> ModelBuild:
    cfg = WGANConfig.preset(preset, **overrides)
    arrays, used, paths = load_training_images(layout, batches, cfg.image_size, cfg.channels)
    n_images = sum(len(a) for a in arrays)
    log(f"training preset '{preset}' on {device_name(device)}: {n_images} images from {len(used)} batch(es) {used}; "
        f"{cfg.generator_iterations} generator iterations x {cfg.critic_steps} critic steps (batch "
        f"{cfg.batch_size}), then {cfg.encoder_iterations} encoder iterations; base width {cfg.base_channels}")
    result = train(arrays, cfg, device=device, progress=progress, progress_every_s=progress_every_s, sources=paths)
    card = {"source": "trained", "preset": preset,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **result.card(),
            "data": {"batches": used, "n_images": n_images, "files": [file_fingerprint(p) for p in paths]},
            "seconds_total": round(sum(result.seconds.values()), 1)}
    title = f"wGAN preset '{preset}' on {n_images} images, {result.device} ({sum(result.seconds.values()):.0f} s)"
    return ModelBuild(result.wgan, card, arrays, history=result.history, title=title, why=why)


def obtain_wgan(layout: StorageLayout, checkpoint: str, preset: str, device, batches: list[str] | None = None,
                overrides: dict | None = None, progress: Callable[[TrainProgress], Any] | None = None,
                progress_every_s: float = 15.0, log: Callable[[str], None] = lambda m: None,
                pretrained_dir: Path = PRETRAINED_DIR) -> ModelBuild:
    """Load ``checkpoint`` (a folder), or train ``preset`` ("auto": by device) when it says so (selection rule)."""
    chosen, why = choose_checkpoint(checkpoint, layout, device, batches, pretrained_dir)
    log(why)
    if chosen:
        return _load(str(Path(chosen).expanduser()), layout, device, batches, why, log)
    return _train(resolve_preset(preset, device), overrides or {}, layout, device, batches, why,
                  progress or (lambda p: None), progress_every_s, log)


def reconstruction_check(wgan: WGAN, arrays: list[np.ndarray], n: int = 256) -> tuple[float, float]:
    """(MSE of G(E(x)), MSE of the mean image) on up to n evenly spread images, images in [0, 1]."""
    from ww_assets.scores.anomaly import reconstruct

    real = sample_images(arrays, n)
    rec = reconstruct(wgan, real).astype(np.float64) / 255
    x = real.astype(np.float64) / 255
    return float(np.mean((x - rec) ** 2)), float(np.mean((x - x.mean(0, keepdims=True)) ** 2))


def model_figures(wgan: WGAN, arrays: list[np.ndarray], history: dict | None, title: str, folder: Path,
                  n_show: int = 8) -> dict[str, Path]:
    """Loss curves (when trained), real vs reconstructed, and generated samples, as PNG files in ``folder``."""
    from ww_assets.plotting.model import image_rows, loss_curves
    from ww_assets.scores.anomaly import reconstruct

    out = {}
    if history:
        out["loss_curves.png"] = loss_curves(history, folder / "loss_curves.png", title)
    wgan = wgan.eval()
    gen = torch.Generator(device=wgan.device).manual_seed(0)
    with torch.inference_mode():
        fake = wgan.generator(wgan.sample_latent(n_show, generator=gen)).float().clamp(0, 1)
    rows = []
    if arrays:
        real = sample_images(arrays, n_show)
        rows += [("real x", real), ("G(E(x))", reconstruct(wgan, real))]
    rows.append(("G(z), z ~ prior", (fake * 255).round().to(torch.uint8).cpu().numpy()))
    out["reconstructions.png"] = image_rows(
        rows, folder / "reconstructions.png",
        "Real images, their reconstructions G(E(x)), and random generated images" if arrays else
        "Random generated images G(z)")
    return out

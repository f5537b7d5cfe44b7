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
from ww_assets.model.data import file_fingerprint, gather, load_noise, load_training_images, spread_picks
from ww_assets.model.networks import WGAN, WGANConfig, device_name
from ww_assets.model.selection import PRETRAINED_DIR, choose_checkpoint, resolve_preset
from ww_assets.model.training import TrainProgress, train
from ww_assets.storage import StorageLayout

__all__ = ["ModelBuild", "obtain_wgan", "model_figures", "assess", "validation_split"]


@dataclass
class ModelBuild:
    """A model ready to save: the networks, their card, its validation images (held out of training, or every
    image for a loaded model) with their sky noise, and figures."""

    wgan: WGAN
    card: dict[str, Any]
    validation: np.ndarray          # uint8 (n, 3, H, W)
    validation_noise: np.ndarray    # (n, 3) flux sigma, channel order i, r, g
    history: dict[str, np.ndarray] | None = None
    title: str = ""
    shipped_figures: dict[str, Path] = field(default_factory=dict)
    why: str = ""

    @property
    def has_images(self) -> bool:
        return len(self.validation) > 0


#: at most this many images are held out of training to judge the model (and at least 5% of a small set)
MAX_VALIDATION = 512


def validation_split(n: int) -> np.ndarray:
    """Indices, evenly spread over the n training images, kept out of training: min(512, 5%); none below 200."""
    if n < 200:
        return np.zeros(0, dtype=np.int64)
    k = min(MAX_VALIDATION, max(16, n // 20))
    return spread_picks(n, k)


def _gather(arrays: list[np.ndarray], noise: list[np.ndarray], picks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return gather(arrays, picks), gather(noise, picks).astype(np.float32)


def _load(checkpoint: str, layout: StorageLayout, device, batches, why: str, log) -> ModelBuild:
    log(f"loading checkpoint {checkpoint} (weights only) onto {device_name(device)}")
    model = load_wgan(checkpoint, device=device)
    validation, validation_noise = np.zeros((0, 3, 96, 96), np.uint8), np.zeros((0, 3), np.float32)
    try:
        arrays, used, _ = load_training_images(layout, batches, model.config.image_size, model.config.channels)
        total = sum(len(a) for a in arrays)
        validation, validation_noise = _gather(arrays, load_noise(layout, used, arrays),
                                               spread_picks(total, MAX_VALIDATION))
    except Exception as exc:  # figures and checks only: a published release needs no images to load
        log(f"no images to judge the loaded model on ({exc})")
    card = {"source": "checkpoint", "checkpoint": str(Path(checkpoint).expanduser().resolve()),
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__, "device": device_name(device)}
    folder = Path(checkpoint)
    original = read_card(folder) if folder.is_dir() else None
    if original:
        card["original_card"] = {k: v for k, v in original.items() if k != "files"}
    shipped = {p.name: p for p in sorted(folder.glob("*.png")) if p.name != "reconstructions.png"} \
        if folder.is_dir() else {}
    card["validation"] = {"images": int(len(validation)), "held_out": "not known: the checkpoint's own card says "
                                                                   "what it was trained on"}
    return ModelBuild(model, card, validation, validation_noise, title=f"wGAN loaded from {folder.name}",
                      shipped_figures=shipped, why=why)


def _train(preset: str, overrides: dict, layout: StorageLayout, device, batches, why: str,
           progress: Callable[[TrainProgress], Any], progress_every_s: float, log) -> ModelBuild:
    cfg = WGANConfig.preset(preset, **overrides)
    arrays, used, paths = load_training_images(layout, batches, cfg.image_size, cfg.channels)
    n_images = sum(len(a) for a in arrays)
    log(f"training preset '{preset}' on {device_name(device)}: {n_images} images from {len(used)} batch(es) {used}; "
        f"{cfg.generator_iterations} generator iterations x {cfg.critic_steps} critic steps (batch "
        f"{cfg.batch_size}), then {cfg.encoder_iterations} encoder iterations; base width {cfg.base_channels}")
    noise = load_noise(layout, used, arrays)
    holdout = validation_split(n_images)
    log(f"{len(holdout)} images held out of training to judge the model")
    result = train(arrays, cfg, device=device, progress=progress, progress_every_s=progress_every_s, sources=paths,
                   noise=noise if cfg.observation != "none" else None, holdout=holdout)
    picks = holdout if len(holdout) else spread_picks(n_images, MAX_VALIDATION)
    validation, validation_noise = _gather(arrays, noise, picks)
    card = {"source": "trained", "preset": preset,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), **result.card(),
            "data": {"batches": used, "n_images": n_images, "files": [file_fingerprint(p) for p in paths]},
            "seconds_total": round(sum(result.seconds.values()), 1),
            "validation": {"images": int(len(picks)), "held_out": bool(len(holdout))}}
    title = f"wGAN preset '{preset}' on {n_images} images, {result.device} ({sum(result.seconds.values()):.0f} s)"
    return ModelBuild(result.wgan, card, validation, validation_noise, history=result.history, title=title, why=why)


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


def assess(build: ModelBuild, n_realism: int = 1000) -> dict[str, Any]:
    """The gates on the validation images: structure explained and realism (``ww_assets.model.quality``)."""
    from ww_assets.model.quality import REALISM_GATE, STRUCTURE_GATE, model_realism, model_structure_explained

    if not build.has_images:
        return {}
    se = model_structure_explained(build.wgan, build.validation, build.validation_noise)
    realism = model_realism(build.wgan, build.validation, build.validation_noise, n=min(n_realism,
                                                                                         len(build.validation)))
    return {"structure_explained": {**se.as_dict(), "gate": STRUCTURE_GATE, "passed": bool(se.value >= STRUCTURE_GATE)},
            "realism": {"auroc": realism, "gate": REALISM_GATE, "passed": bool(realism <= REALISM_GATE),
                        "n_images": int(min(n_realism, len(build.validation)))}}


def model_figures(build: ModelBuild, folder: Path, n_show: int = 8) -> dict[str, Path]:
    """Loss curves (when trained); validation images, their reconstructions and residual maps; a grid of G(z)."""
    from ww_assets.model.quality import generated, reconstructions
    from ww_assets.plotting.model import image_rows, loss_curves

    out = {}
    wgan = build.wgan.eval()
    if build.history:
        out["loss_curves.png"] = loss_curves(build.history, folder / "loss_curves.png", build.title)
    noise = build.validation_noise if build.has_images else np.full((n_show, 3), 0.05, np.float32)
    seen, clean = generated(wgan, 24, noise, seed=0)
    out["generated.png"] = image_rows([("G(z) (noise-free)", clean[:8]), ("", clean[8:16]), ("", clean[16:24]),
                                       ("G(z) as observed", seen[:8])], folder / "generated.png",
                                      "Random draws of the generator, z ~ prior")
    if build.has_images:
        picks = spread_picks(len(build.validation), n_show)
        real = build.validation[picks]
        _, rgb, resid = reconstructions(wgan, real, build.validation_noise[picks])
        out["reconstructions.png"] = image_rows(
            [("real x", real), ("G(E(x))", rgb), ("x - E[x|G(E(x))]", resid)], folder / "reconstructions.png",
            "Validation images, their reconstructions, and the residual in units of the pixel noise")
    return out

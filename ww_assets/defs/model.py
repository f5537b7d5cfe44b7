"""Dagster layer for the 'model' group: the `wgan` asset (generator, critic, encoder).

`wgan` either trains the networks on the image batches written by `cutouts` (``<root>/images/<batch>/
cutouts.npy``), or, when a checkpoint folder is configured, loads a published release's three weight files
(weights only) instead. Either way it writes ``<root>/models/wgan/`` whole and atomically: the three
``.safetensors`` files, ``card.json`` (config, data used, iterations, torch version, device, final losses) and the
PNG figures shown in the UI (loss curves, real vs reconstructed images, generated samples).

The networks and the training loop are ``ww_assets.model.networks`` / ``ww_assets.model.training``; files are
``ww_assets.model.checkpoints``. This module only picks the data, the device and the preset, logs progress, and reports.

Where the networks come from (config ``checkpoint``):

- a folder: load it (a published release, an earlier run, the shipped pretrained model);
- "none": train here with ``preset``;
- "auto" (default): ``WW_WGAN_CHECKPOINT`` when set (a folder, or "none"); otherwise, on a machine without a GPU
  whose training images are all the embedded simulated sample's, the shipped pretrained CPU model
  (``data/pretrained/wgan-cpu``: trained here on a *different* simulated sample, see its README) so the demo's
  scores mean something in seconds; otherwise train.

Presets (``ww_assets.model.networks.PRESETS``): "reference" (the published design and ~10k generator iterations, for a
GPU), "cpu" (an eighth of the width, latent still 128: a couple of minutes on a laptop), "ci" (seconds; scores
mean nothing). Preset "auto" = "reference" on CUDA, "cpu" otherwise; ``WW_WGAN_PRESET`` changes what "auto" means
for every run (e.g. ``WW_WGAN_PRESET=ci`` in tests).
"""

import datetime as _dt
import hashlib
import os
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from ww_assets.defs.metadata import png_markdown
from ww_assets.defs.resources import StorageResource
from ww_assets.storage import StorageLayout

CUTOUTS_FILE = "cutouts.npy"
CATALOG_FILE = "catalog.parquet"
# the small CPU model shipped with the repository (data/pretrained/wgan-cpu, see its README.md)
PRETRAINED_DIR = Path(__file__).resolve().parents[2] / "data" / "pretrained" / "wgan-cpu"


class WGANAssetConfig(dg.Config):
    """How `wgan` gets its networks.

    checkpoint: a folder holding the three weight files of a published release or an earlier run (generator,
        discriminator, encoder as .safetensors or .pt/.pth state dicts; loaded weights-only), "none" to train
        here, or "auto" (``WW_WGAN_CHECKPOINT`` if set; else the shipped pretrained CPU model when there is no
        GPU and every training image is the embedded sample's; else train).
    preset: for training: "auto" (reference on CUDA, cpu otherwise; ``WW_WGAN_PRESET`` overrides), "reference",
        "cpu", "ci".
    device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    batches: image batches to train on; empty = every batch with written cutouts.
    generator_iterations / encoder_iterations / seed: override the preset's (0 / negative: keep the preset's).
    log_every_s: seconds between progress lines in the run log.
    threads: PyTorch CPU threads (0: PyTorch's default, one per core); 1 is faster on a machine busy with
        other work.
    """

    checkpoint: str = "auto"
    preset: str = "auto"
    device: str = "auto"
    batches: list[str] = []
    generator_iterations: int = 0
    encoder_iterations: int = 0
    seed: int = -1
    log_every_s: float = 15.0
    threads: int = 0


# -------------------------------------------------------------------------------------------------------
# data
# -------------------------------------------------------------------------------------------------------
class TrainingDataError(ValueError):
    """No usable training images, or a cutouts file that cannot be used (names the file)."""


def available_batches(layout: StorageLayout) -> list[str]:
    """Batches whose cutouts have been written (``<root>/images/<batch>/cutouts.npy``), sorted."""
    root = layout.root / "images"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / CUTOUTS_FILE).is_file())


def load_training_images(layout: StorageLayout, batches: list[str] | None = None,
                         image_size: int = 96, channels: int = 3) -> tuple[list[np.ndarray], list[str], list[str]]:
    """Memory-mapped cutouts of the chosen batches: (arrays, batch names, file paths). Checked: uint8
    (N, 3, 96, 96), no NaN; a bad file raises TrainingDataError naming it."""
    from ww_assets.model.networks import ImageDataError, check_images

    found = available_batches(layout)
    chosen = list(batches) if batches else found
    if not chosen:
        raise TrainingDataError(
            f"no training images: no {layout.root / 'images'}/<batch>/{CUTOUTS_FILE}; materialise `cutouts` for "
            "at least one image batch first")
    missing = [b for b in chosen if b not in found]
    if missing:
        raise TrainingDataError(f"batches {missing} have no {CUTOUTS_FILE} under {layout.root / 'images'} "
                                f"(available: {found}); materialise `cutouts` for them first")
    arrays, paths, used = [], [], []
    for batch in chosen:
        path = layout.images_dir(batch) / CUTOUTS_FILE
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise TrainingDataError(f"{path}: cannot be read as a numpy array ({exc})") from exc
        try:
            check_images(arr, image_size, channels, source=str(path))
        except ImageDataError as exc:
            raise TrainingDataError(str(exc)) from exc
        if arr.dtype != np.uint8:
            raise TrainingDataError(f"{path}: expected uint8 Lupton RGB (0-255), got {arr.dtype}")
        if len(arr) == 0:
            continue
        arrays.append(arr)
        paths.append(str(path))
        used.append(batch)
    if not arrays:
        raise TrainingDataError(f"the chosen batches {chosen} hold no images (all quarantined?)")
    return arrays, used, paths


def _file_fingerprint(path: str) -> dict:
    st = os.stat(path)
    out = {"path": path, "bytes": st.st_size}
    if st.st_size <= (1 << 30):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
        out["sha256"] = h.hexdigest()
    return out


def images_are_the_sample(layout: StorageLayout, batches: list[str]) -> bool:
    """True when every image of ``batches`` was read from the embedded sample (catalog ``source_path``)."""
    import pandas as pd

    sample = str(layout.sample_dir.resolve())
    if not batches:
        return False
    for batch in batches:
        path = layout.images_dir(batch) / CATALOG_FILE
        if not path.is_file():
            return False
        try:
            sources = pd.read_parquet(path, columns=["source_path"])["source_path"].astype(str)
        except Exception:  # an unreadable or foreign catalog: not the sample
            return False
        if not sources.map(lambda p: str(Path(p).resolve()).startswith(sample + os.sep)).all():
            return False
    return True


def choose_checkpoint(setting: str, layout: StorageLayout, device, batches: list[str] | None) -> tuple[str, str]:
    """(checkpoint folder or "", why) for the config value ``setting`` ("auto", "none" or a folder)."""
    setting = (setting or "auto").strip()
    if setting.lower() == "auto":
        env = os.environ.get("WW_WGAN_CHECKPOINT", "").strip()
        if env:
            setting = env
        else:
            if device.type == "cuda":
                return "", "a GPU is present: training"
            chosen = list(batches) if batches else available_batches(layout)
            if not (PRETRAINED_DIR / "card.json").is_file():
                return "", f"no GPU, and no shipped pretrained model at {PRETRAINED_DIR}: training on the CPU"
            if images_are_the_sample(layout, chosen):
                return str(PRETRAINED_DIR), ("no GPU and the images are the embedded simulated sample: loading the "
                                             "shipped pretrained CPU model (trained on a different simulated "
                                             "sample); set checkpoint='none' to train here instead")
            return "", "no GPU and the images are not the embedded sample: training the CPU-sized model here"
    if setting.lower() in ("none", "", "train"):
        return "", "checkpoint='none': training"
    return setting, "checkpoint given in the config or WW_WGAN_CHECKPOINT"


def resolve_preset(name: str, device) -> str:
    if name == "auto":
        name = os.environ.get("WW_WGAN_PRESET", "auto") or "auto"
    if name == "auto":
        return "reference" if device.type == "cuda" else "cpu"
    return name


# -------------------------------------------------------------------------------------------------------
# figures
# -------------------------------------------------------------------------------------------------------
def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _smooth(values: np.ndarray, n: int) -> np.ndarray:
    if len(values) < 2 * n or n < 2:
        return values
    kernel = np.ones(n) / n
    return np.convolve(values, kernel, mode="valid")


def plot_loss_curves(history: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Critic / generator losses per generator iteration and the encoder's izi_f losses per encoder iteration."""
    fig = _figure(11, 3.8)
    axes = fig.subplots(1, 3)
    n_smooth = max(1, len(history.get("critic_loss", [])) // 50)
    ax = axes[0]
    for key, label in (("critic_loss", "critic loss D(fake) - D(real) + 10 GP"),
                       ("wasserstein", "Wasserstein estimate D(real) - D(fake)"),
                       ("generator_loss", "generator loss -D(G(z))")):
        v = history.get(key)
        if v is not None and len(v):
            s = _smooth(v, n_smooth)
            ax.plot(np.arange(len(s)) + (len(v) - len(s)) // 2 + 1, s, label=label, lw=1.2)
    ax.set_xlabel("generator iteration")
    ax.set_ylabel("loss (critic units)")
    ax.set_title("WGAN-GP", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    gp = history.get("gradient_penalty")
    if gp is not None and len(gp):
        s = _smooth(gp, n_smooth)
        ax.plot(np.arange(len(s)) + (len(gp) - len(s)) // 2 + 1, s, color="C3", lw=1.2)
        ax.set_yscale("log")
    ax.set_xlabel("generator iteration")
    ax.set_ylabel("gradient penalty (||grad D|| - 1)^2")
    ax.set_title("critic gradient penalty", fontsize=10)
    ax = axes[2]
    n_enc = max(1, len(history.get("encoder_loss", [])) // 50)
    for key, label in (("encoder_loss", "izi_f total"), ("image_loss", "image MSE(x, G(E(x)))"),
                       ("feature_loss", "feature MSE(f(x), f(G(E(x))))")):
        v = history.get(key)
        if v is not None and len(v):
            s = _smooth(v, n_enc)
            ax.plot(np.arange(len(s)) + (len(v) - len(s)) // 2 + 1, s, label=label, lw=1.2)
    ax.set_yscale("log")
    ax.set_xlabel("encoder iteration")
    ax.set_ylabel("mean squared error (images in [0, 1])")
    ax.set_title("encoder (izi_f, G and D frozen)", fontsize=10)
    ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, format="png")
    return path


def plot_image_rows(rows: list[tuple[str, np.ndarray]], path: Path, title: str) -> Path:
    """Rows of uint8 (n, 3, H, W) images, one labelled row each (real / reconstructed / generated)."""
    n = max(len(r[1]) for r in rows)
    fig = _figure(1.3 * n + 1.2, 1.4 * len(rows) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(rows), n))
    for r, (label, imgs) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(imgs):
                ax.imshow(np.transpose(imgs[c], (1, 2, 0)), origin="lower", interpolation="nearest")
            else:
                ax.axis("off")
            if c == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, format="png")
    return path


def _figures(wgan, arrays: list[np.ndarray], history: dict | None, title: str, folder: Path,
             n_show: int = 8) -> dict[str, Path]:
    """Loss curves (when trained), real vs reconstructed, and generated samples, as PNG files in ``folder``."""
    import torch

    from ww_assets.scores.anomaly import reconstruct

    out = {}
    if history:
        out["loss_curves.png"] = plot_loss_curves(history, folder / "loss_curves.png", title)
    wgan = wgan.eval()
    gen = torch.Generator(device=wgan.device).manual_seed(0)
    with torch.inference_mode():
        fake = wgan.generator(wgan.sample_latent(n_show, generator=gen)).float().clamp(0, 1)
    fake_u8 = (fake * 255).round().to(torch.uint8).cpu().numpy()
    rows = []
    if arrays:
        total = sum(len(a) for a in arrays)
        picks = np.linspace(0, total - 1, num=min(n_show, total)).astype(int)
        offsets = np.cumsum([0] + [len(a) for a in arrays])
        real = np.stack([np.asarray(arrays[np.searchsorted(offsets, i, side="right") - 1]
                                    [i - offsets[np.searchsorted(offsets, i, side="right") - 1]]) for i in picks])
        rec = reconstruct(wgan, real)
        rows += [("real x", real), ("G(E(x))", rec)]
    rows.append(("G(z), z ~ prior", fake_u8))
    out["reconstructions.png"] = plot_image_rows(
        rows, folder / "reconstructions.png",
        "Real images, their reconstructions G(E(x)), and random generated images" if arrays else
        "Random generated images G(z)")
    return out


def reconstruction_check(wgan, arrays: list[np.ndarray], n: int = 256) -> tuple[float, float]:
    """(MSE of G(E(x)), MSE of the mean image) on up to n evenly spread training images, images in [0, 1]."""
    from ww_assets.scores.anomaly import reconstruct

    total = sum(len(a) for a in arrays)
    picks = np.linspace(0, total - 1, num=min(n, total)).astype(int)
    offsets = np.cumsum([0] + [len(a) for a in arrays])
    which = np.searchsorted(offsets, picks, side="right") - 1
    real = np.stack([np.asarray(arrays[w][i - offsets[w]]) for w, i in zip(which, picks)])
    rec = reconstruct(wgan, real).astype(np.float64) / 255
    x = real.astype(np.float64) / 255
    return float(np.mean((x - rec) ** 2)), float(np.mean((x - x.mean(0, keepdims=True)) ** 2))


# -------------------------------------------------------------------------------------------------------
# the asset
# -------------------------------------------------------------------------------------------------------
@dg.asset(
    name="wgan",
    group_name="model",
    kinds={"pytorch"},
    pool="gpu",
    deps=["cutouts"],
    description=(
        "The wGAN of the W&W method: generator, critic (discriminator) and encoder, 96 x 96 x 3 images, latent 128. "
        "Trained here (WGAN-GP, gradient penalty 10, 5 critic steps per generator step; then the f-AnoGAN izi_f "
        "encoder with G and D frozen) on the image batches' cutouts, or loaded weights-only from a published "
        "release (config `checkpoint`). Written to models/wgan/: generator/discriminator/encoder .safetensors, "
        "card.json and figures. By default: trained with the reference schedule on a GPU; without a GPU, on the "
        "embedded sample, the shipped pretrained CPU model (data/pretrained/wgan-cpu, trained on other simulated "
        "galaxies) is loaded; otherwise a CPU-sized model (same design, an eighth of the width) is trained."),
    check_specs=[dg.AssetCheckSpec(
        "reconstructs_better_than_mean_image", asset="wgan",
        description="On up to 256 training images, G(E(x)) is closer to x (MSE) than the mean image is: the model "
                    "has learnt something about these galaxies.")],
)
def wgan(context: dg.AssetExecutionContext, config: WGANAssetConfig, storage: StorageResource):
    import torch

    from ww_assets.model.checkpoints import load_wgan, save_wgan
    from ww_assets.model.networks import WGANConfig as NetConfig
    from ww_assets.model.networks import device_name, parameter_count, resolve_device
    from ww_assets.model.training import train

    layout = storage.layout
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    checkpoint, why = choose_checkpoint(config.checkpoint, layout, device, config.batches or None)
    checkpoint = str(Path(checkpoint).expanduser()) if checkpoint else ""
    context.log.info(why)
    started = _dt.datetime.now(_dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="wgan-figures-") as tmpdir:
        tmp = Path(tmpdir)
        if checkpoint:
            context.log.info(f"loading checkpoint {checkpoint} (weights only) onto {device_name(device)}")
            model = load_wgan(checkpoint, device=device)
            try:
                arrays, batches, paths = load_training_images(layout, config.batches or None,
                                                              model.config.image_size, model.config.channels)
            except Exception as exc:  # figures only: loading a release needs no images
                context.log.info(f"no images for the reconstruction figure ({exc})")
                arrays, batches, paths = [], [], []
            card = {"source": "checkpoint", "checkpoint": str(Path(checkpoint).expanduser().resolve()),
                    "created_at": started.isoformat(timespec="seconds"), "torch_version": torch.__version__,
                    "device": device_name(device)}
            from ww_assets.model.checkpoints import read_card

            original = read_card(checkpoint) if Path(checkpoint).is_dir() else None
            if original:
                card["original_card"] = {k: v for k, v in original.items() if k != "files"}
            history = None
            title = f"wGAN loaded from {Path(checkpoint).name}"
            shipped_figures = {p.name: p for p in sorted(Path(checkpoint).glob("*.png"))
                               if p.name != "reconstructions.png"} if Path(checkpoint).is_dir() else {}
        else:
            preset = resolve_preset(config.preset, device)
            overrides = {}
            if config.generator_iterations > 0:
                overrides["generator_iterations"] = config.generator_iterations
            if config.encoder_iterations > 0:
                overrides["encoder_iterations"] = config.encoder_iterations
            if config.seed >= 0:
                overrides["seed"] = config.seed
            net_cfg = NetConfig.preset(preset, **overrides)
            arrays, batches, paths = load_training_images(layout, config.batches or None, net_cfg.image_size,
                                                          net_cfg.channels)
            n_images = sum(len(a) for a in arrays)
            context.log.info(
                f"training preset '{preset}' on {device_name(device)}: {n_images} images from {len(batches)} "
                f"batch(es) {batches}; {net_cfg.generator_iterations} generator iterations x "
                f"{net_cfg.critic_steps} critic steps (batch {net_cfg.batch_size}), then "
                f"{net_cfg.encoder_iterations} encoder iterations; base width {net_cfg.base_channels}")
            result = train(arrays, net_cfg, device=device, progress=lambda p: context.log.info(p.message()),
                           progress_every_s=config.log_every_s, sources=paths)
            model = result.wgan
            history = result.history
            card = {"source": "trained", "preset": preset, "created_at": started.isoformat(timespec="seconds"),
                    **result.card(),
                    "data": {"batches": batches, "n_images": n_images,
                             "files": [_file_fingerprint(p) for p in paths]}}
            title = (f"wGAN preset '{preset}' on {n_images} images, {result.device} "
                     f"({sum(result.seconds.values()):.0f} s)")
            shipped_figures = {}
        figures = {**shipped_figures, **_figures(model, arrays, history, title, tmp)}
        mse_model, mse_mean = reconstruction_check(model, arrays) if arrays else (float("nan"), float("nan"))
        card["reconstruction_mse"] = {"model": mse_model, "mean_image": mse_mean}
        save_wgan(model, layout.model_dir, card=card, extra_files={name: p for name, p in figures.items()})
        context.log.info(f"wrote {layout.model_dir}: {sorted(os.listdir(layout.model_dir))}")

        metadata = {
            "source": card["source"],
            "model_dir": dg.MetadataValue.path(str(layout.model_dir)),
            "device": card.get("device", device_name(device)),
            "parameters": int(parameter_count(model)),
            "base_channels": model.config.base_channels,
            "latent_dim": model.config.latent_dim,
            "reconstruction_mse": mse_model,
            "mean_image_mse": mse_mean,
        }
        if history is not None:
            metadata.update({
                "preset": card["preset"],
                "training_batches": dg.MetadataValue.json(card["data"]["batches"]),
                "n_training_images": card["data"]["n_images"],
                "generator_iterations": card["generator_iterations"],
                "encoder_iterations": card["encoder_iterations"],
                "train_seconds": round(sum(result.seconds.values()), 1),
                "wgan_images_per_s": round(result.images_per_s["wgan"], 1),
                "encoder_images_per_s": round(result.images_per_s["encoder"], 1),
                "precision": result.precision,
                "final_losses": dg.MetadataValue.json(card["final_losses"]),
            })
        else:
            metadata["checkpoint"] = card["checkpoint"]
            held_out = (card.get("original_card") or {}).get("held_out_demo_sample")
            if held_out:
                metadata["pretrained_held_out_auroc"] = dg.MetadataValue.json(held_out.get("auroc"))
        for name, path in figures.items():
            metadata[name.removesuffix(".png")] = png_markdown(path, alt=name)
    passed = bool(np.isfinite(mse_model) and mse_model < mse_mean) if arrays else True
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[dg.AssetCheckResult(
            check_name="reconstructs_better_than_mean_image", passed=passed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"reconstruction_mse": mse_model, "mean_image_mse": mse_mean,
                      "images": 0 if not arrays else min(256, sum(len(a) for a in arrays))})],
    )


defs = dg.Definitions(assets=[wgan])

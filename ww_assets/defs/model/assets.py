"""The model group: the ``wgan`` asset (generator, critic, encoder), loaded or trained by ``ww_assets.model.build``."""

import os
import tempfile
from pathlib import Path

import dagster as dg
import numpy as np

from ww_assets.defs.metadata import png_markdown
from ww_assets.defs.pools import GPU_OP_TAGS, GPU_POOL
from ww_assets.defs.resources import ModelSourceResource, StorageResource
from ww_assets.model.build import model_figures, obtain_wgan, reconstruction_check
from ww_assets.model.checkpoints import save_wgan


class WGANAssetConfig(dg.Config):
    """How ``wgan`` gets its networks (run config; the ``model`` resource and its environment variables give the
    defaults).

    checkpoint: "" (the model resource's setting, ``WW_WGAN_CHECKPOINT``, default auto), "auto", "none" (train
        here), or a folder holding a published release's / an earlier run's three weight files (weights only).
    preset: "" (the model resource's, ``WW_WGAN_PRESET``), "auto" (reference on CUDA, cpu otherwise),
        "reference", "cpu", "ci".
    device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    batches: image batches to train on; empty = every batch with written cutouts.
    generator_iterations / encoder_iterations / seed: override the preset's (0 / negative: keep the preset's).
    log_every_s: seconds between progress lines. threads: PyTorch CPU threads (0: PyTorch's default).
    """

    checkpoint: str = ""
    preset: str = ""
    device: str = "auto"
    batches: list[str] = []
    generator_iterations: int = 0
    encoder_iterations: int = 0
    seed: int = -1
    log_every_s: float = 15.0
    threads: int = 0

    def overrides(self) -> dict:
        out = {}
        if self.generator_iterations > 0:
            out["generator_iterations"] = self.generator_iterations
        if self.encoder_iterations > 0:
            out["encoder_iterations"] = self.encoder_iterations
        if self.seed >= 0:
            out["seed"] = self.seed
        return out


@dg.asset(
    name="wgan",
    kinds={"pytorch"},
    pool=GPU_POOL, op_tags=GPU_OP_TAGS,
    deps=["cutouts"],
    description=(
        "The wGAN of the W&W method: generator, critic (discriminator) and encoder, 96 x 96 x 3 images, latent 128. "
        "Trained here (WGAN-GP, then the f-AnoGAN izi_f encoder with G and D frozen) on the image batches' cutouts, "
        "or loaded weights-only from a checkpoint folder (a published release, an earlier run). Written to "
        "models/wgan/: generator/discriminator/encoder .safetensors, card.json and figures. Without a GPU, on the "
        "embedded sample, the shipped pretrained CPU model is loaded; otherwise a CPU-sized model is trained."),
    check_specs=[dg.AssetCheckSpec(
        "reconstructs_better_than_mean_image", asset="wgan",
        description="On up to 256 images, G(E(x)) is closer to x (MSE) than the mean image is.")],
)
def wgan(context: dg.AssetExecutionContext, config: WGANAssetConfig, storage: StorageResource,
         model: ModelSourceResource):
    import torch

    from ww_assets.model.networks import device_name, parameter_count, resolve_device

    layout = storage.layout
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    build = obtain_wgan(layout, config.checkpoint or model.checkpoint_setting(), config.preset or model.preset_setting(),
                        device, config.batches or None, config.overrides(),
                        progress=lambda p: context.log.info(p.message()), progress_every_s=config.log_every_s,
                        log=context.log.info, pretrained_dir=model.pretrained_dir())
    net, card = build.wgan, build.card
    with tempfile.TemporaryDirectory(prefix="wgan-figures-") as tmpdir:
        figures = {**build.shipped_figures, **model_figures(net, build.arrays, build.history, build.title,
                                                           Path(tmpdir))}
        mse_model, mse_mean = reconstruction_check(net, build.arrays) if build.arrays else (np.nan, np.nan)
        card["reconstruction_mse"] = {"model": mse_model, "mean_image": mse_mean}
        save_wgan(net, layout.model_dir, card=card, extra_files=figures)
    context.log.info(f"wrote {layout.model_dir}: {sorted(os.listdir(layout.model_dir))}")
    metadata = {
        "source": card["source"], "why": build.why,
        "model_dir": dg.MetadataValue.path(str(layout.model_dir)),
        "device": card.get("device", device_name(device)),
        "parameters": int(parameter_count(net)), "base_channels": net.config.base_channels,
        "latent_dim": net.config.latent_dim,
        "reconstruction_mse": float(mse_model), "mean_image_mse": float(mse_mean),
    }
    if build.history is not None:
        metadata.update({k: card[k] for k in ("preset", "generator_iterations", "encoder_iterations",
                                              "precision", "seconds_total")})
        metadata["n_training_images"] = card["data"]["n_images"]
        metadata["final_losses"] = dg.MetadataValue.json(card["final_losses"])
    else:
        metadata["checkpoint"] = card["checkpoint"]
        held_out = (card.get("original_card") or {}).get("held_out_demo_sample")
        if held_out:
            metadata["pretrained_held_out_auroc"] = dg.MetadataValue.json(held_out.get("auroc"))
    for name in figures:
        metadata[name.removesuffix(".png")] = png_markdown(layout.model_dir / name, alt=name)
    passed = bool(np.isfinite(mse_model) and mse_model < mse_mean) if build.arrays else True
    return dg.MaterializeResult(metadata=metadata, check_results=[dg.AssetCheckResult(
        check_name="reconstructs_better_than_mean_image", passed=passed, severity=dg.AssetCheckSeverity.WARN,
        metadata={"reconstruction_mse": float(mse_model), "mean_image_mse": float(mse_mean)})])

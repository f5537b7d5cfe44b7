"""Which networks the ``wgan`` asset uses: a checkpoint to load, or a preset to train, and why.

The rule, for the setting ``checkpoint``:

- a folder: load it (a published release, an earlier run, the shipped pretrained model), weights only;
- ``none``: train here with the preset;
- ``auto``: on a machine with a GPU, train; without one, when every training image is the embedded simulated
  sample's, load the shipped pretrained CPU model (``PRETRAINED_DIR``, package data, trained on a *different*
  simulated sample, see its README) so the demo's scores mean something in seconds; otherwise train the CPU preset.

Preset ``auto`` is ``reference`` on CUDA and ``cpu`` elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from ww_assets.model.checkpoints import CARD_FILE
from ww_assets.model.data import available_batches, images_are_the_sample
from ww_assets.storage import StorageLayout

__all__ = ["PRETRAINED_DIR", "choose_checkpoint", "resolve_preset"]

#: the small CPU model shipped inside the package (its README is the model card)
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained" / "wgan-cpu"


def choose_checkpoint(setting: str, layout: StorageLayout, device, batches: list[str] | None,
                      pretrained_dir: Path = PRETRAINED_DIR) -> tuple[str, str]:
    """(checkpoint folder or "" to train, why) for ``setting`` ("auto", "none" or a path)."""
    setting = (str(setting) if setting is not None else "auto").strip()
    if setting.lower() in ("none", "train", ""):
        return "", "checkpoint 'none': training"
    if setting.lower() != "auto":
        return setting, "checkpoint given (run config or WW_WGAN_CHECKPOINT)"
    if device.type == "cuda":
        return "", "a GPU is present: training"
    if not (pretrained_dir / CARD_FILE).is_file():
        return "", f"no GPU, and no shipped pretrained model at {pretrained_dir}: training on the CPU"
    if images_are_the_sample(layout, list(batches) if batches else available_batches(layout)):
        return str(pretrained_dir), ("no GPU and the images are the embedded simulated sample: loading the shipped "
                                     "pretrained CPU model (trained on a different simulated sample); set "
                                     "checkpoint 'none' to train here instead")
    return "", "no GPU and the images are not the embedded sample: training the CPU-sized model here"


def resolve_preset(name: str, device) -> str:
    """``auto`` -> ``reference`` on CUDA, ``cpu`` otherwise; any other name as given."""
    name = (name or "auto").strip().lower()
    if name == "auto":
        return "reference" if device.type == "cuda" else "cpu"
    return name

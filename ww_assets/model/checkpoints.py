"""Saving and loading the wGAN: three weight files (generator, discriminator, encoder) and a JSON card.

A checkpoint is untrusted input. Nothing here unpickles arbitrary objects: our own files are safetensors (plain
tensors, no code), and published ``.pt`` / ``.pth`` / ``.bin`` state dicts are read with
``torch.load(weights_only=True)``, which refuses any pickle that would build something other than tensors and
plain containers. Every problem (unreadable file, code in a pickle, missing or extra keys, wrong shapes, NaN
weights) is a ``CheckpointError`` naming the file.

    save_wgan(model, "data/models/wgan", card={"data": ...})     # atomic: the folder is replaced whole
    model = load_wgan("data/models/wgan", device="cuda")         # folder, or {"generator": path, ...}

Folder layout (ARCHITECTURE.md): ``generator.safetensors``, ``discriminator.safetensors``,
``encoder.safetensors``, ``card.json``. When loading, other names are found too: ``Generator.pt``,
``discriminator.pth``, ``critic.safetensors``, ``encoder.bin`` ...; the architecture comes from ``card.json`` when
present, else from the safetensors metadata, else it is read off the tensor shapes.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch

from ww_assets.model.networks import WGAN, WGANConfig, resolve_device
from ww_assets.storage import atomic_dir

__all__ = ["save_wgan", "load_wgan", "read_card", "find_checkpoint_files", "CheckpointError", "PART_FILES",
           "CARD_FILE", "FORMAT"]

FORMAT = "ww-wgan"
FORMAT_VERSION = 1
PART_FILES = {
    "generator": "generator.safetensors",
    "discriminator": "discriminator.safetensors",
    "encoder": "encoder.safetensors",
}
CARD_FILE = "card.json"
# names a part may go by in a published release (lower-cased file stem)
_ALIASES = {
    "generator": ("generator", "gen", "g", "netg"),
    "discriminator": ("discriminator", "critic", "disc", "d", "netd"),
    "encoder": ("encoder", "enc", "e", "nete"),
}
_EXTENSIONS = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "weights")
_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: unreadable, not weights-only, or not matching the networks."""


# -------------------------------------------------------------------------------------------------------
# save
# -------------------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_wgan(wgan: WGAN, folder: str | os.PathLike[str], card: Mapping[str, Any] | None = None,
              extra_files: Mapping[str, str | os.PathLike[str]] | None = None) -> Path:
    """Write the three safetensors files and ``card.json`` to ``folder``, replacing it whole (atomically).

    ``card`` is recorded as given (it must be JSON-serialisable) plus the format, the config and each file's
    SHA-256 and parameter count. ``extra_files`` ({name: path}) are copied in with them (e.g. plots).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    config = wgan.config
    with atomic_dir(folder) as tmp:
        files = {}
        for part, module in wgan.parts().items():
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
            path = tmp / PART_FILES[part]
            # one metadata entry: safetensors writes several in arbitrary order, which would make the bytes
            # (and the SHA-256 on the card) differ between two saves of the same weights
            save_file(tensors, str(path), metadata={FORMAT: json.dumps(
                {"format_version": FORMAT_VERSION, "part": part, "config": config.to_dict()}, sort_keys=True)})
            files[part] = {"file": PART_FILES[part], "sha256": _sha256(path),
                           "parameters": int(sum(t.numel() for t in tensors.values()))}
        full = {"format": FORMAT, "format_version": FORMAT_VERSION, **dict(card or {}),
                "config": config.to_dict(), "files": files}
        try:
            text = json.dumps(full, indent=2, sort_keys=False, default=_json_default)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"card for {folder} is not JSON-serialisable: {exc}") from exc
        (tmp / CARD_FILE).write_text(text + "\n")
        for name, src in (extra_files or {}).items():
            if Path(name).name != name or name in PART_FILES.values() or name == CARD_FILE:
                raise ValueError(f"extra file name {name!r} must be a plain file name not used by the checkpoint")
            shutil.copyfile(src, tmp / name)
    return folder


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


# -------------------------------------------------------------------------------------------------------
# load
# -------------------------------------------------------------------------------------------------------
def read_card(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The folder's card.json as a dict, or None when there is none."""
    path = Path(folder) / CARD_FILE
    if not path.exists():
        return None
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON card: {exc}") from exc
    if not isinstance(card, dict):
        raise CheckpointError(f"{path}: the card must be a JSON object, got {type(card).__name__}")
    return card


def find_checkpoint_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """{"generator": path, "discriminator": path, "encoder": path} found in ``folder`` (see module doc)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    candidates: dict[str, list[Path]] = {p: [] for p in PART_FILES}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in _EXTENSIONS:
            continue
        stem = path.stem.lower()
        for part, names in _ALIASES.items():
            if stem in names or any(stem.startswith(n + "_") or stem.endswith("_" + n) for n in names if len(n) > 2):
                candidates[part].append(path)
    found: dict[str, Path] = {}
    for part, paths in candidates.items():
        if not paths:
            raise CheckpointError(
                f"{folder}: no {part} checkpoint (looked for {PART_FILES[part]} or {part}.pt/.pth/.bin)")
        # prefer safetensors, then the canonical name
        paths.sort(key=lambda p: (p.suffix.lower() != ".safetensors", p.stem.lower() != part, p.name))
        found[part] = paths[0]
    return found


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and (safetensors) metadata from one file, weights only."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    metadata: dict[str, str] = {}
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                metadata = dict(fh.metadata() or {})
                state = {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises its own SafetensorError / OSError / ValueError
            raise CheckpointError(f"{path}: not a valid safetensors file ({type(exc).__name__}: {exc})") from exc
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"{path}: refused: the file is a pickle that is not weights-only (it would construct arbitrary "
                f"objects or run code when unpickled); only tensors and plain containers are accepted. "
                f"Detail: {first}") from exc
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot be read as a PyTorch state dict ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
        state = _unwrap(obj, path)
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: entries that are not tensors: {bad[:5]}")
    return state, metadata


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        key = str(key)
        for prefix in _PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def _infer_config(states: Mapping[str, Mapping[str, torch.Tensor]], paths: Mapping[str, Path]) -> WGANConfig:
    """Architecture read off the tensor shapes (for checkpoints without a card)."""
    try:
        conv1 = states["discriminator"]["convs.conv1.weight"]
        fc_d = states["discriminator"]["fc.weight"]
        fc_g = states["generator"]["fc.weight"]
    except KeyError as exc:
        part = "discriminator" if "fc.weight" in str(exc) or "conv" in str(exc) else "generator"
        raise CheckpointError(
            f"{paths.get(part, part)}: no card.json and cannot infer the architecture: missing key {exc}") from exc
    base, channels, k = int(conv1.shape[0]), int(conv1.shape[1]), int(conv1.shape[2])
    side = int(round((fc_d.shape[1] / (8 * base)) ** 0.5))
    if side * side * 8 * base != fc_d.shape[1]:
        raise CheckpointError(f"{paths['discriminator']}: fc.weight {tuple(fc_d.shape)} does not fit a square "
                              f"feature map of {8 * base} channels")
    return WGANConfig(name="inferred", image_size=16 * side, channels=channels, latent_dim=int(fc_g.shape[1]),
                      base_channels=base, kernel_size=k)


def _check_and_load(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path, part: str,
                    config: WGANConfig) -> None:
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(expected) & set(state)) if tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:5]))
    if problems:
        raise CheckpointError(
            f"{path}: {part} weights do not match the network (base_channels={config.base_channels}, "
            f"latent_dim={config.latent_dim}, image_size={config.image_size}): " + ", ".join(problems))
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise CheckpointError(f"{path}: {part} weights contain NaN/inf in {nonfinite[:5]}")
    with torch.no_grad():
        module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)


def load_wgan(source: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]], device=None,
              config: WGANConfig | None = None) -> WGAN:
    """Load the three networks, weights only, into a WGAN on ``device`` (None: CPU; "auto": GPU if any), eval mode.

    ``source``: a folder (ours or a published release), or {"generator": path, "discriminator": path,
    "encoder": path}. ``config`` overrides the architecture recorded in the card / files.
    """
    if isinstance(source, Mapping):
        missing = [p for p in PART_FILES if p not in source]
        if missing:
            raise CheckpointError(f"checkpoint files given for {sorted(source)}; missing {missing}")
        paths = {p: Path(source[p]) for p in PART_FILES}
        card = None
    else:
        paths = find_checkpoint_files(source)
        card = read_card(source)
    states, metas = {}, {}
    for part, path in paths.items():
        states[part], metas[part] = _read_state_dict(path)
    if config is None:
        cfg_dict = None
        if card is not None and isinstance(card.get("config"), Mapping):
            cfg_dict, where = card["config"], Path(source) / CARD_FILE
        elif FORMAT in metas["generator"] or "config" in metas["generator"]:
            where = paths["generator"]
            try:
                if FORMAT in metas["generator"]:
                    cfg_dict = json.loads(metas["generator"][FORMAT])["config"]
                else:  # files written before the metadata became one entry (the shipped wgan-cpu)
                    cfg_dict = json.loads(metas["generator"]["config"])
            except (ValueError, KeyError, TypeError) as exc:
                raise CheckpointError(f"{where}: unreadable config in the file's metadata: {exc}") from exc
        if cfg_dict is not None:
            try:
                config = WGANConfig.from_dict(cfg_dict)
            except (TypeError, ValueError) as exc:
                raise CheckpointError(f"{where}: invalid model config: {exc}") from exc
        else:
            config = _infer_config(states, paths)
    if card is not None:
        for part, info in (card.get("files") or {}).items():
            if part in paths and isinstance(info, Mapping) and info.get("sha256") and \
                    paths[part].name == info.get("file") and _sha256(paths[part]) != info["sha256"]:
                raise CheckpointError(f"{paths[part]}: SHA-256 differs from the one in {CARD_FILE} "
                                      "(file changed or corrupted after it was written)")
    model = WGAN(config)
    for part, module in model.parts().items():
        _check_and_load(module, states[part], paths[part], part, config)
    dev = torch.device("cpu") if device is None else resolve_device(device)
    return model.to(dev).eval()


def model_fingerprint(model_dir: str | os.PathLike[str]) -> str:
    """A short hash of the three weight files (from card.json's SHA-256s when present): scores of one model share
    it, so they can be normalised together and told apart from another model's."""
    card = read_card(model_dir) or {}
    shas = [str((card.get("files") or {}).get(p, {}).get("sha256", "")) for p in PART_FILES]
    if not all(shas):
        shas = [f"{part}:{_sha256(path)}" for part, path in sorted(find_checkpoint_files(model_dir).items())]
    return hashlib.sha256("|".join(shas).encode()).hexdigest()[:16]

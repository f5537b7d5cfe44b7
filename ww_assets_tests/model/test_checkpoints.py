"""Checkpoints: bit-identical round trip, published .pt state dicts, and untrusted files refused with a clear error."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from ww_assets.model.checkpoints import (
    CARD_FILE,
    PART_FILES,
    CheckpointError,
    find_checkpoint_files,
    load_wgan,
    read_card,
    save_wgan,
)
from ww_assets.model.networks import WGAN, WGANConfig
from ww_assets.scores.anomaly import ScoreConfig, score_images

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def model() -> WGAN:
    torch.manual_seed(11)
    return WGAN(WGANConfig.preset("ci", seed=11)).eval()


@pytest.fixture
def pt_release(tmp_path, model):
    """A published-style release: three .pt state dicts, no card."""
    folder = tmp_path / "release"
    folder.mkdir()
    for part, module in model.parts().items():
        torch.save(module.state_dict(), folder / f"{part.capitalize()}.pt")
    return folder


def _same_weights(a: WGAN, b: WGAN) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert sa[key].dtype == sb[key].dtype and torch.equal(sa[key], sb[key]), key


def test_save_load_round_trip_is_bit_identical(tmp_path, model):
    folder = save_wgan(model, tmp_path / "wgan", card={"data": {"batches": ["b0"]}, "note": "test"})
    assert {p.name for p in folder.iterdir()} == set(PART_FILES.values()) | {CARD_FILE}
    loaded = load_wgan(folder)
    _same_weights(model, loaded)
    assert loaded.config == model.config and not loaded.training
    x = np.random.default_rng(0).integers(0, 256, (5, 3, 96, 96), dtype=np.uint8)
    a, b = score_images(model, x, ScoreConfig()), score_images(loaded, x, ScoreConfig())
    assert np.array_equal(a.anomaly_score, b.anomaly_score) and np.array_equal(a.latents, b.latents)
    card = read_card(folder)
    assert card["note"] == "test" and card["config"] == model.config.to_dict()
    assert set(card["files"]) == set(PART_FILES)
    assert all(len(v["sha256"]) == 64 and v["parameters"] > 0 for v in card["files"].values())
    # a second save replaces the folder whole (nothing stale left) and writes the same bytes
    (folder / "stale.txt").write_text("old")
    save_wgan(model, folder, card={})
    assert not (folder / "stale.txt").exists()
    assert read_card(folder)["files"] == card["files"]
    # without the card, the architecture comes from the files' own metadata
    (folder / CARD_FILE).unlink()
    _same_weights(model, load_wgan(folder))


def test_channels_last_model_saves_the_same_weights(tmp_path, model):
    cl = WGAN(model.config)
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    _same_weights(model, load_wgan(save_wgan(cl, tmp_path / "cl")))


def test_published_pt_state_dicts_load(tmp_path, model, pt_release):
    assert {k: v.name for k, v in find_checkpoint_files(pt_release).items()} == {
        "generator": "Generator.pt", "discriminator": "Discriminator.pt", "encoder": "Encoder.pt"}
    loaded = load_wgan(pt_release)  # no card: the architecture is read off the shapes
    _same_weights(model, loaded)
    assert loaded.config.base_channels == model.config.base_channels and loaded.config.name == "inferred"
    # wrapped ({"state_dict": ...}) with DataParallel prefixes, given file by file
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    files = {}
    for part, module in model.parts().items():
        files[part] = wrapped / f"{part}_10000.pth"
        torch.save({"state_dict": {f"module.{k}": v for k, v in module.state_dict().items()}, "epoch": 3},
                   files[part])
    _same_weights(model, load_wgan(files, config=model.config))


class _RunsCode:
    """Unpickling this calls exec(): the classic malicious-checkpoint payload."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"import pathlib; pathlib.Path({self.marker!r}).write_text('pwned')",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("style", ["torch.save", "raw pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path, model, pt_release, style):
    marker = tmp_path / f"pwned-{style.replace(' ', '_')}.txt"
    evil = pt_release / "Generator.pt"
    payload = {**model.generator.state_dict(), "fc.bias": _RunsCode(marker)}
    if style == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload))
    # the file really is malicious: an unrestricted unpickle runs the payload (harmless here: writes a marker)
    if style == "torch.save":
        torch.load(evil, weights_only=False)
    else:
        with open(evil, "rb") as fh:
            pickle.load(fh)
    assert marker.read_text() == "pwned"
    marker.unlink()
    with pytest.raises(CheckpointError, match="refused") as err:
        load_wgan(pt_release)
    assert str(evil) in str(err.value) and "weights-only" in str(err.value)
    assert not marker.exists()  # nothing ran


def test_missing_unexpected_and_mismatched_keys_name_the_file(tmp_path, model, pt_release):
    gen = pt_release / "Generator.pt"
    state = model.generator.state_dict()
    torch.save({k: v for k, v in state.items() if k != "up2.weight"}, gen)
    with pytest.raises(CheckpointError, match=r"Generator\.pt: generator weights do not match.*missing keys "
                                              r"\['up2\.weight'\]"):
        load_wgan(pt_release, config=model.config)
    torch.save({**state, "extra.weight": torch.zeros(1)}, gen)
    with pytest.raises(CheckpointError, match=r"unexpected keys \['extra\.weight'\]"):
        load_wgan(pt_release, config=model.config)
    torch.save(state, gen)
    wider = model.config.replace(base_channels=8)
    with pytest.raises(CheckpointError,
                       match=r"shape mismatch fc\.bias: file \(1152,\) vs model \(2304,\); fc\.weight"):
        load_wgan(pt_release, config=wider)
    torch.save({**state, "up1.bias": torch.full_like(state["up1.bias"], float("nan"))}, gen)
    with pytest.raises(CheckpointError, match=r"Generator\.pt: generator weights contain NaN"):
        load_wgan(pt_release, config=model.config)
    torch.save([1, 2, 3], gen)
    with pytest.raises(CheckpointError, match=r"Generator\.pt: expected a state dict"):
        load_wgan(pt_release, config=model.config)


def test_corrupt_tampered_and_missing_files(tmp_path, model):
    folder = save_wgan(model, tmp_path / "wgan", card={})
    enc = folder / PART_FILES["encoder"]
    data = enc.read_bytes()
    enc.write_bytes(b"not a safetensors file at all")
    with pytest.raises(CheckpointError, match=r"encoder\.safetensors: not a valid safetensors file"):
        load_wgan(folder)
    # valid safetensors, but not the file the card was written with
    tensors = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    tensors["fc.bias"] += 1
    save_file(tensors, str(enc))
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        load_wgan(folder)
    enc.write_bytes(data)
    load_wgan(folder)
    enc.unlink()
    with pytest.raises(CheckpointError, match="no encoder checkpoint"):
        load_wgan(folder)
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        load_wgan(tmp_path / "nowhere")
    (tmp_path / "badcard").mkdir()
    save_wgan(model, tmp_path / "badcard", card={})
    card = json.loads((tmp_path / "badcard" / CARD_FILE).read_text())
    card["config"]["latent_dims"] = 3
    (tmp_path / "badcard" / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"card\.json: invalid model config: unknown WGANConfig fields"):
        load_wgan(tmp_path / "badcard")
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_wgan(model, tmp_path / "x", card={"bad": object()})
    assert not (tmp_path / "x").exists()  # nothing half-written

"""The ``wgan`` asset: trains on the written cutouts, or loads a checkpoint; names a bad file; the "auto" rule.

Where the networks come from is the ``model`` resource (``ModelSourceResource``: checkpoint, preset and the shipped
pretrained model that "auto" may load), built here with plain values; the environment is only set where the test
is about the environment (WW_WGAN_CHECKPOINT).
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import torch

from ww_assets.defs.model.assets import wgan
from ww_assets.defs.resources import ModelSourceResource, StorageResource
from ww_assets.images.batch import BatchCollector
from ww_assets.images.cutouts import write_cutout_batch
from ww_assets.model.checkpoints import PART_FILES, load_wgan, read_card, save_wgan
from ww_assets.model.networks import WGAN
from ww_assets.model.selection import choose_checkpoint
from ww_assets.storage import StorageLayout
from ww_assets_tests.support.models import TINY, blobs

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return blobs(48)


def write_batch(layout: StorageLayout, batch: str, arr: np.ndarray, sources: list[str] | None = None) -> Path:
    """Write one image batch as the cutouts asset does (cutouts.npy + catalog.parquet + quarantine.parquet), the
    catalog's source_path saying where each image was read from (by default: a survey folder, not the sample)."""
    ids = [str(i) for i in range(len(arr))]
    collector = BatchCollector(arr.shape[-1], {})
    collector.add_rgb(ids, sources or [f"/survey/{batch}/{i}.fits" for i in ids], arr)
    write_cutout_batch(collector.result(batch), layout.images_dir(batch))
    return layout.cutouts_file(batch)


def resources(storage_root: Path, **model) -> dict:
    return {"storage": StorageResource(root=str(storage_root)), "model": ModelSourceResource(preset="ci", **model)}


def test_wgan_asset_trains_writes_and_reloads(storage_root, images):
    layout = StorageLayout(storage_root)
    write_batch(layout, "batch_000", images[:24])
    write_batch(layout, "batch_001", images[24:])
    res = resources(storage_root)                                   # checkpoint "auto", not the sample: train
    result = dg.materialize([wgan], resources=res)
    assert result.success
    names = set(p.name for p in layout.model_dir.iterdir())
    assert set(PART_FILES.values()) | {"card.json", "loss_curves.png", "reconstructions.png", "generated.png"} <= names
    card = read_card(layout.model_dir)
    assert card["source"] == "trained" and card["preset"] == "ci"
    assert card["data"]["batches"] == ["batch_000", "batch_001"] and card["data"]["n_images"] == 48
    assert len(card["data"]["files"][0]["sha256"]) == 64
    mat = result.asset_materializations_for_node("wgan")[0]
    md = mat.metadata
    assert md["preset"].value == "ci" and md["n_training_images"].value == 48
    assert md["loss_curves"].value.startswith("![loss_curves.png](data:image/webp;base64,")
    assert len(md["loss_curves"].value) < 1000  # inline in the UI, nothing large in the instance database
    assert "reconstructions" in md
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"structure_explained", "realism"}
    # a 6-iteration model judged by the gates: numbers reported, and (rightly) not good enough
    assert not checks["structure_explained"].passed and 0.5 <= checks["realism"].metadata["auroc"].value <= 1
    assert card["quality"]["structure_explained"]["n_images"] == 48 and card["validation"]["held_out"] is False
    model = load_wgan(layout.model_dir)

    # loading a release folder instead of training: .pt state dicts, weights only
    release = storage_root.parent / "release"
    release.mkdir()
    for part, module in model.parts().items():
        torch.save(module.state_dict(), release / f"{part.capitalize()}.pt")
    result = dg.materialize([wgan], resources=res, run_config={"ops": {"wgan": {"config": {
        "checkpoint": str(release)}}}})
    assert result.success
    card = read_card(layout.model_dir)
    assert card["source"] == "checkpoint" and card["checkpoint"] == str(release.resolve())
    again = load_wgan(layout.model_dir)
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def _failure_text(result) -> str:
    err = result.failure_data_for_node("wgan").error
    parts = []
    while err is not None:
        parts.append(err.message)
        err = err.cause
    return "\n".join(parts)


def test_wgan_asset_names_the_bad_file(storage_root, images):
    res = resources(storage_root)
    result = dg.materialize([wgan], resources=res, raise_on_error=False)
    assert not result.success  # no cutouts at all
    assert "materialise `cutouts`" in _failure_text(result)
    # a cutouts file the images stage would never write (floats, a NaN): written by hand on purpose
    bad = images[:4].astype(np.float32) / 255
    bad[2, 0, 5, 5] = np.nan
    path = StorageLayout(storage_root).cutouts_file("batch_bad")
    path.parent.mkdir(parents=True)
    np.save(path, bad)
    result = dg.materialize([wgan], resources=res, raise_on_error=False)
    msg = _failure_text(result)
    assert not result.success and str(path) in msg and "NaN" in msg


@pytest.fixture
def shipped(tmp_path) -> Path:
    """A stand-in for the shipped pretrained CPU model, with a card like the real one's."""
    folder = tmp_path / "shipped"
    torch.manual_seed(0)
    save_wgan(WGAN(TINY), folder, card={"source": "pretrained", "held_out_demo_sample": {"auroc": {"x": 1}}})
    return folder


def write_sample_batch(layout: StorageLayout, arr: np.ndarray) -> None:
    """batch_000 as the cutouts asset writes it when it read the embedded sample's FITS files."""
    write_batch(layout, "batch_000", arr,
                [str(layout.sample_dir / "cutouts" / "batch_000" / f"{i}_g.fits") for i in range(len(arr))])


def test_wgan_asset_auto_loads_the_shipped_model_only_for_the_sample(storage_root, images, shipped, tmp_path,
                                                                     monkeypatch):
    from ww_assets.defs.resources import resources as project_resources
    from ww_assets.settings import SettingError

    layout = StorageLayout(storage_root)
    write_sample_batch(layout, images[:16])
    res = resources(storage_root, pretrained=str(shipped))
    device = torch.device("cpu")
    pretrained = res["model"].pretrained_dir()
    assert choose_checkpoint("auto", layout, device, None, pretrained)[0] == str(shipped)
    assert choose_checkpoint("none", layout, device, None, pretrained)[0] == ""
    # a checkpoint set in the environment (WW_WGAN_CHECKPOINT) is what the asset uses instead of "auto" ...
    given = tmp_path / "some_release"
    given.mkdir()
    monkeypatch.setenv("WW_WGAN_CHECKPOINT", str(given))
    from_env = project_resources().resources["model"]
    assert choose_checkpoint(from_env.checkpoint_setting(), layout, device, None, pretrained)[0] == str(given)
    # ... and one that does not exist is refused, naming the variable
    monkeypatch.setenv("WW_WGAN_CHECKPOINT", "/some/release")
    with pytest.raises(SettingError, match="WW_WGAN_CHECKPOINT='/some/release'"):
        project_resources().resources["model"].checkpoint_setting()
    monkeypatch.delenv("WW_WGAN_CHECKPOINT")

    result = dg.materialize([wgan], resources=res)
    assert result.success
    card = read_card(layout.model_dir)
    assert card["source"] == "checkpoint" and card["checkpoint"] == str(shipped.resolve())
    assert card["original_card"]["held_out_demo_sample"]["auroc"] == {"x": 1}

    # images that are not the sample's: auto trains
    write_batch(layout, "batch_000", images[:16])
    assert choose_checkpoint("auto", layout, device, None, pretrained)[0] == ""
    result = dg.materialize([wgan], resources=res)
    assert result.success and read_card(layout.model_dir)["source"] == "trained"


def test_wgan_asset_reports_the_shipped_models_held_out_auroc(storage_root, images, shipped):
    write_sample_batch(StorageLayout(storage_root), images[:16])
    result = dg.materialize([wgan], resources=resources(storage_root, pretrained=str(shipped)))
    assert result.success
    md = result.asset_materializations_for_node("wgan")[0].metadata
    assert md["source"].value == "checkpoint"
    assert md["pretrained_held_out_auroc"].value == {"x": 1}

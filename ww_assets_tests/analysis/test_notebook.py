"""notebooks/explore.ipynb runs, cell by cell, against a storage root made by materialising the catalogue and
everything upstream of it on the tiny embedded sample, through the code location itself (its resources and IO
manager), so the notebook cannot rot."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from ww_assets_tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow          # end to end: the tiny sample through every asset the catalogue needs (~1.5 min CPU)

NOTEBOOK = REPO_ROOT / "notebooks" / "explore.ipynb"
#: faster than the defaults, same code paths
FAST = {"latent_umap": {"n_epochs": 50}, "consensus_vs_score": {"n_boot": 200}}


@pytest.fixture(scope="module")
def sample_root(tiny_sample, tmp_path_factory):
    """A storage root with the catalogue and everything upstream materialised on the tiny sample, phase by phase
    as ``make demo`` does (``ww_assets.demo.plan_phases``), with the code location's definitions."""
    import dagster as dg

    from ww_assets.demo import plan_phases
    from ww_assets.defs.images.partitions import image_batches

    root = tmp_path_factory.mktemp("notebook") / "data"
    shutil.copytree(tiny_sample, root / "sample")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WW_DATA_ROOT", str(root))
        mp.setenv("WW_SAMPLE_SIZE", "tiny")
        mp.setenv("WW_SAMPLE_SEED", "20211")
        from ww_assets.definitions import _definitions

        defs = _definitions()                       # built here, so its resources read this storage root
        graph = defs.resolve_asset_graph()
        needed, todo = {dg.AssetKey("catalogue")}, [dg.AssetKey("catalogue")]     # the catalogue and its ancestors
        while todo:
            for parent in graph.get(todo.pop()).parent_keys:
                if parent not in needed:
                    needed.add(parent)
                    todo.append(parent)
        job = defs.resolve_implicit_global_asset_job_def()
        instance = dg.DagsterInstance.ephemeral()
        batches = sorted(p.name for p in (root / "sample" / "cutouts").iterdir() if p.is_dir())
        instance.add_dynamic_partitions(image_batches.name, batches)
        for keys, partitioned in plan_phases(graph):
            keys = [k for k in keys if k in needed]
            if not keys:
                continue
            names = {k.to_user_string() for k in keys}
            config = {"ops": {op: {"config": c} for op, c in FAST.items() if op in names}}
            for pk in batches if partitioned else [None]:
                result = job.execute_in_process(instance=instance, asset_selection=keys, partition_key=pk,
                                                run_config=config, raise_on_error=True)
                assert result.success
    return root


def test_the_catalogue_of_the_sample(sample_root):
    from ww_assets.analysis.load import load

    cat = load("catalogue", sample_root)
    truth = pd.read_csv(sample_root / "sample" / "truth.csv", dtype={"object_id": str})
    assert set(cat["object_id"]) == set(truth["object_id"])           # every image of the sample, once
    assert (cat["position_source"] == "catalog").all() and cat[["ra", "dec"]].notna().all().all()
    assert cat["subject_id"].notna().sum() > 0 and (cat["shown"] > 0).sum() > 0
    assert (cat["neighbour_ids"] != "").all()


def test_notebook_runs_against_the_sample(sample_root, monkeypatch, tmp_path):
    import nbclient
    import nbformat

    monkeypatch.setenv("WW_DATA_ROOT", str(sample_root))              # the kernel inherits the environment
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code")   # committed without outputs
    assert nb.cells[1].source.splitlines()[:2] == ['import ww_assets', 'cat = ww_assets.load("catalogue")']
    client = nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                                                  # raises CellExecutionError if a cell fails
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) == 1
    tables = [o["data"]["text/html"] for o in outputs if "text/html" in o.get("data", {})]
    assert len(tables) == 3                                            # head, and both disagreement tables
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "High machine score, low volunteer interest" in text and "High volunteer interest" in text
    ids = set(pd.read_parquet(Path(sample_root) / "analysis" / "catalogue.parquet")["object_id"])
    assert sum(i in tables[1] for i in ids) == 10 and sum(i in tables[2] for i in ids) == 10

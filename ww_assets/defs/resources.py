"""Every resource the assets use, defined once, with the environment variables they come from.

Resource settings that a user sets in the environment are passed as ``dg.EnvVar``: the UI shows which variable a
value comes from, and Dagster reads it when a run starts, not when the code location loads, so a bad value stops
the runs that need it, not the location. Each value is checked with ``ww_assets.settings`` when it is used, and
the error names the variable and the value.
"""

from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import dagster as dg
from dagster_duckdb import DuckDBResource
from pydantic import Field

from ww_assets import settings
from ww_assets.images.lupton import IMAGE_SIZE
from ww_assets.images.sources import ImageSourceError
from ww_assets.scores.release import discover_release_runs
from ww_assets.storage import StorageLayout


def resolved(value):
    """A field's value: inside a run Dagster has already read an EnvVar; outside one (the demo, a test building a
    layout) it is read here."""
    return value.get_value() if isinstance(value, dg.EnvVar) else value


def from_env(name: str):
    """``dg.EnvVar(name)`` when the variable is set, else the setting's default (None when it has none)."""
    return dg.EnvVar(name) if settings.is_set(name) else settings.SETTINGS[name].default


class StorageResource(dg.ConfigurableResource):
    """The storage root every asset writes under (``data/`` by default; ``WW_DATA_ROOT``).

    On more than one machine, point it at storage all steps can see (a shared volume); nothing else is assumed to
    be shared between steps.
    """

    root: str = Field(default=settings.SETTINGS["WW_DATA_ROOT"].default, description="storage root folder")

    @property
    def layout(self) -> StorageLayout:
        return StorageLayout(settings.check_value("WW_DATA_ROOT", resolved(self.root), "resource storage.root"))


class SampleResource(dg.ConfigurableResource):
    """The embedded sample: simulated HSC-like cutouts and W&W exports, generated from a seed on first use.

    ``size``: tiny, small, medium, large or a number of images (``WW_SAMPLE_SIZE``); ``seed`` fixes every byte
    (``WW_SAMPLE_SEED``). Built once under ``<storage root>/sample``, rebuilt only if size or seed change.
    """

    size: str = Field(default=settings.SETTINGS["WW_SAMPLE_SIZE"].default, description="sample size")
    seed: str = Field(default=settings.SETTINGS["WW_SAMPLE_SEED"].default, description="sample seed")

    def spec(self) -> tuple[str | int, int]:
        """(size, seed), checked; SettingError naming WW_SAMPLE_SIZE / WW_SAMPLE_SEED when bad."""
        return (settings.check_value("WW_SAMPLE_SIZE", resolved(self.size), "resource sample.size"),
                settings.check_value("WW_SAMPLE_SEED", resolved(self.seed), "resource sample.seed"))

    def ensure(self, layout: StorageLayout) -> Path:
        from ww_assets.simulation.sample import ensure_sample

        size, seed = self.spec()
        ensure_sample(layout.sample_dir, size=size, seed=seed)
        return layout.sample_dir


class WarehouseResource(DuckDBResource):
    """The DuckDB warehouse (``<storage root>/warehouse.duckdb``) with its memory limit and threads
    (``WW_DUCKDB_MEMORY_LIMIT``, ``WW_DUCKDB_THREADS``; DuckDB's defaults when unset: 80% of RAM, every core).
    A full consensus build sizes its partitions from the memory limit, so a small limit costs time, not a failure."""

    memory_limit: Optional[str] = Field(default=None, description="DuckDB memory_limit, e.g. 4GB")
    threads: Optional[str] = Field(default=None, description="DuckDB threads")

    def duckdb_config(self) -> dict:
        config = dict(self.connection_config)
        if resolved(self.memory_limit):
            config["memory_limit"] = settings.check_value("WW_DUCKDB_MEMORY_LIMIT", resolved(self.memory_limit),
                                                          "resource duckdb.memory_limit")
        if resolved(self.threads):
            config["threads"] = settings.check_value("WW_DUCKDB_THREADS", resolved(self.threads), "resource duckdb.threads")
        return config

    @contextmanager
    def get_connection(self):
        with DuckDBResource(database=self.database, connection_config=self.duckdb_config()).get_connection() as con:
            yield con


class ImageSourceResource(dg.ConfigurableResource):
    """Where the image batches come from.

    ``source``: ``sample`` for the embedded sample's ``cutouts/<batch>/`` folders, or a folder whose sub-folders
    are batches of real cutouts (per-band FITS g/r/i, FITS cubes, npy/HDF5 arrays, PNG/JPG thumbnails;
    ``WW_IMAGES_SOURCE``). ``release``: optional folder of the published W&W release (score CSV + (N, 128) latent
    npy per run; ``WW_RELEASE_DIR``): each run becomes a ``release-<name>`` batch whose scores are loaded as they
    are. ``settle_seconds``: the sensor waits until a batch folder has not changed for this long, so a folder
    still being copied is not scored half-way.
    """

    source: str = Field(default="sample", description="sample, or a folder of batch sub-folders")
    release: Optional[str] = Field(default=None, description="folder of the published W&W release")
    settle_seconds: float = Field(default=30.0, ge=0)
    image_size: int = Field(default=IMAGE_SIZE)

    @property
    def is_sample(self) -> bool:
        return str(settings.check_value("WW_IMAGES_SOURCE", resolved(self.source), "resource images.source")) == "sample"

    def images_root(self, layout: StorageLayout, sample: SampleResource | None = None) -> Path:
        """The folder whose sub-folders are batches; for the sample, built first when ``sample`` is given."""
        if self.is_sample:
            if sample is not None:
                sample.ensure(layout)
            root = layout.sample_dir / "cutouts"
            if not root.is_dir():
                raise ImageSourceError(
                    f"images.source = 'sample', but the embedded sample has no cutouts folder at {root}; build it "
                    "first (`make demo`, or materialise `cutouts`)")
            return root
        return settings.check_value("WW_IMAGES_SOURCE", resolved(self.source), "resource images.source")

    def sample_built(self, layout: StorageLayout) -> bool:
        return (layout.sample_dir / "cutouts").is_dir()

    def release_dir(self) -> Path | None:
        if not resolved(self.release):
            return None
        return settings.check_value("WW_RELEASE_DIR", resolved(self.release), "resource images.release")

    def batch_folder(self, batch: str, layout: StorageLayout, sample: SampleResource | None = None) -> Path:
        folder = self.images_root(layout, sample) / batch
        if not folder.is_dir():
            raise ImageSourceError(f"image batch {batch!r}: no folder {folder} under images.source = {resolved(self.source)!r}")
        return folder

    def release_run(self, batch: str):
        """The (csv, npy) pair of a ``release-*`` batch, or None when there is no release folder or no such run."""
        release = self.release_dir()
        if release is None:
            return None
        runs, _ = discover_release_runs(release)
        return next((r for r in runs if r.batch == batch), None)


class ModelSourceResource(dg.ConfigurableResource):
    """Where the ``wgan`` asset's networks come from when its run config says ``auto``: ``checkpoint`` is
    ``auto``, ``none`` (train here) or a checkpoint folder (``WW_WGAN_CHECKPOINT``); ``preset`` is the training
    preset, ``auto`` meaning reference on a GPU and cpu elsewhere (``WW_WGAN_PRESET``)."""

    checkpoint: str = Field(default="auto")
    preset: str = Field(default="auto")
    pretrained: str = Field(default="", description="the shipped model 'auto' may load (default: the package's)")

    def pretrained_dir(self) -> Path:
        from ww_assets.model.selection import PRETRAINED_DIR

        return Path(self.pretrained) if self.pretrained else PRETRAINED_DIR

    def checkpoint_setting(self) -> str:
        return str(settings.check_value("WW_WGAN_CHECKPOINT", resolved(self.checkpoint), "resource model.checkpoint"))

    def preset_setting(self) -> str:
        return settings.check_value("WW_WGAN_PRESET", resolved(self.preset), "resource model.preset")


ZOONIVERSE_SOURCES = ("sample", "export_folder", "live")


class ZooniverseResource(dg.ConfigurableResource):
    """Where volunteer data comes from: the embedded sample, a folder of downloaded exports, or a live project.

    ``source``: sample | export_folder | live (``WW_ZOONIVERSE_SOURCE``; when unset: live when a project is set,
    export_folder when a folder is set, else sample). ``project``: id or owner/slug (``WW_ZOONIVERSE_PROJECT``).
    ``export_folder`` (``WW_ZOONIVERSE_EXPORT_FOLDER``). Credentials are never resource fields: panoptes-client and
    ``ww_assets.zooniverse.connection`` read them from the environment. Real volunteer data needs
    ``WW_PSEUDONYM_KEY``.
    """

    source: Optional[str] = Field(default=None, description="sample | export_folder | live")
    export_folder: Optional[str] = Field(default=None, description="folder of hand-downloaded exports")
    project: Optional[str] = Field(default=None, description="live: project id or slug 'owner/name'")
    panoptes_endpoint: Optional[str] = Field(default=None, description="live: Panoptes API root")
    talk_endpoint: Optional[str] = Field(default=None, description="live: Talk API root")
    generate_exports: str = Field(default="auto", description="live: auto | always | never")
    max_export_age_hours: float = Field(default=24.0, description="live: reuse ready exports younger than this")
    wait_timeout_s: float = Field(default=900.0, gt=0, description="live: wait this long for a new export")
    http_timeout_s: float = Field(default=60.0, gt=0, description="live: time-out of each HTTP call / chunk")
    attempts: int = Field(default=5, ge=1, description="live: tries per call on 5xx / 429 / time-outs")
    backoff_s: float = Field(default=2.0, ge=0, description="live: retry n >= 2 waits backoff_s * 2^(n-1) + jitter")
    talk_poll_s: float = Field(default=5.0, gt=0, description="live: Talk data-request polling interval")
    keep_classification_metadata: bool = Field(
        default=False, description="keep the allow-listed classification metadata JSON (about doubles ingest time)")
    reread_unchanged: bool = Field(
        default=False, description="read an export file again even when this exact file was ingested before")
    task: str = Field(default=settings.SETTINGS["WW_ZOONIVERSE_TASK"].default,
                      description="the workflow task whose annotation values are the clicks (WW_ZOONIVERSE_TASK)")

    def resolved_source(self) -> str:
        if resolved(self.source):
            return settings.check_value("WW_ZOONIVERSE_SOURCE", resolved(self.source), "resource zooniverse.source")
        return "live" if resolved(self.project) else "export_folder" if resolved(self.export_folder) else "sample"

    def open_source(self, layout: StorageLayout, sample: SampleResource):
        """A source object with ``fetch(kind) -> FetchedExport`` and ``close()``."""
        from ww_assets.zooniverse.export_folder import ExportFolderSource

        source = self.resolved_source()
        if source == "sample":
            return ExportFolderSource(sample.ensure(layout) / "exports", source="sample")
        if source == "export_folder":
            if not resolved(self.export_folder):
                raise dg.Failure("zooniverse.source is 'export_folder' but no folder is configured: set "
                                 "WW_ZOONIVERSE_EXPORT_FOLDER (or the resource's export_folder)")
            folder = settings.check_value("WW_ZOONIVERSE_EXPORT_FOLDER", resolved(self.export_folder),
                                          "resource zooniverse.export_folder")
            return ExportFolderSource(folder, source="export_folder")
        if not resolved(self.project):
            raise dg.Failure("zooniverse.source is 'live' but no project is configured: set WW_ZOONIVERSE_PROJECT "
                             "to the project id or slug")
        from ww_assets.zooniverse.live import LiveSettings, LiveSource

        project = settings.check_value("WW_ZOONIVERSE_PROJECT", resolved(self.project), "resource zooniverse.project")
        live = LiveSettings(
            project=project, panoptes_endpoint=self.panoptes_endpoint, talk_endpoint=self.talk_endpoint,
            generate=self.generate_exports, max_export_age_hours=self.max_export_age_hours,
            wait_timeout_s=self.wait_timeout_s, http_timeout_s=self.http_timeout_s, attempts=self.attempts,
            backoff_s=self.backoff_s, talk_poll_s=self.talk_poll_s)
        return LiveSource(live, layout.downloads_dir)

    def pseudonym_key(self) -> str:
        """The pseudonym key for this source (raises with instructions when real data has none)."""
        from ww_assets.zooniverse.pseudonym import pseudonym_key

        return pseudonym_key(self.resolved_source())


@dg.definitions
def resources() -> dg.Definitions:
    """The resources, keyed as the assets ask for them. Only the storage root is read while loading (the
    warehouse path follows from it); every other value is an EnvVar resolved when a run starts."""
    root = settings.get("WW_DATA_ROOT")
    return dg.Definitions(resources={
        "storage": StorageResource(root=from_env("WW_DATA_ROOT")),
        "sample": SampleResource(size=from_env("WW_SAMPLE_SIZE"), seed=from_env("WW_SAMPLE_SEED")),
        "duckdb": WarehouseResource(database=str(StorageLayout(root).warehouse),
                                    memory_limit=from_env("WW_DUCKDB_MEMORY_LIMIT"),
                                    threads=from_env("WW_DUCKDB_THREADS")),
        "images": ImageSourceResource(source=from_env("WW_IMAGES_SOURCE"), release=from_env("WW_RELEASE_DIR")),
        "model": ModelSourceResource(checkpoint=from_env("WW_WGAN_CHECKPOINT"), preset=from_env("WW_WGAN_PRESET")),
        "zooniverse": ZooniverseResource(
            source=from_env("WW_ZOONIVERSE_SOURCE"), project=from_env("WW_ZOONIVERSE_PROJECT"),
            export_folder=from_env("WW_ZOONIVERSE_EXPORT_FOLDER"),
            talk_endpoint=from_env("WW_ZOONIVERSE_TALK_ENDPOINT"), task=from_env("WW_ZOONIVERSE_TASK")),
    })

"""Dagster layer for the 'images' group: image batches as dynamic partitions, the `cutouts` asset, the image
source resource, and the sensor that registers and scores new batches.

A *batch* is a folder of cutouts (any format ``ww_assets.images.cutouts`` reads) under the image source, or a CSV/npy
pair of the published release (``release-<name>``: scores only, no images). Each batch is one partition of
``image_batches``.
"""


import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from ww_assets.images import cutouts as imaging
from ww_assets.images.lupton import IMAGE_SIZE
from ww_assets.defs.resources import SampleResource, StorageResource
from ww_assets.scores.release import ReleaseError, discover_release_runs, is_release_batch
from ww_assets.storage import StorageLayout, atomic_dir

IMAGE_BATCHES = dg.DynamicPartitionsDefinition(name="image_batches")
image_batches = IMAGE_BATCHES  # the name the architecture uses

_BATCH_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-+=@]*$")
SCORING_ASSETS = ("cutouts", "anomaly_scores", "latent_vectors")
RELEASE_ASSETS = ("anomaly_scores", "latent_vectors")


class ImageSourceError(ValueError):
    """The image source is misconfigured (a folder that does not exist) or a batch cannot be found."""


class ImageSourceResource(dg.ConfigurableResource):
    """Where the image batches come from.

    ``source``: ``"sample"`` (default) for the embedded sample's ``cutouts/<batch>/`` folders, or a folder whose
    sub-folders are batches of real cutouts (per-band FITS g/r/i, FITS cubes, npy/HDF5 arrays, PNG/JPG
    thumbnails; see ``ww_assets.images.cutouts``). ``release``: optional folder of the published W&W release (score
    CSV + (N, 128) latent npy per run); each run becomes a ``release-<name>`` batch whose scores are loaded as
    they are. ``settle_seconds``: the sensor waits until a batch folder has not changed for this long, so a
    folder still being copied is not scored half-way. Environment defaults: ``WW_IMAGES_SOURCE``,
    ``WW_RELEASE_DIR``.
    """

    source: str = "sample"
    release: str | None = None
    settle_seconds: float = 30.0
    image_size: int = IMAGE_SIZE

    def images_root(self, layout: StorageLayout, sample: SampleResource | None = None) -> Path:
        """The folder whose sub-folders are batches. For the sample, builds it first when ``sample`` is given."""
        if self.source.strip().lower() == "sample":
            if sample is not None:
                built = sample.ensure(layout)
                sample_dir = Path(built) if isinstance(built, (str, os.PathLike)) else layout.sample_dir
            else:
                sample_dir = layout.sample_dir
            root = sample_dir / "cutouts"
            if not root.is_dir():
                raise ImageSourceError(
                    f"images.source = 'sample', but the embedded sample has no cutouts folder at {root}; "
                    "build it first (the `sample` resource's ensure, or `make demo`)")
            return root
        root = Path(self.source).expanduser()
        if not root.is_dir():
            raise ImageSourceError(f"images.source (resource 'images', env WW_IMAGES_SOURCE) = {self.source!r}: "
                                   "folder does not exist; give 'sample' or a folder of batch sub-folders")
        return root.resolve()

    def release_dir(self) -> Path | None:
        if not self.release:
            return None
        path = Path(self.release).expanduser()
        if not path.is_dir():
            raise ImageSourceError(f"images.release (resource 'images', env WW_RELEASE_DIR) = {self.release!r}: "
                                   "folder does not exist")
        return path.resolve()

    def batch_folder(self, batch: str, layout: StorageLayout, sample: SampleResource | None = None) -> Path:
        folder = self.images_root(layout, sample) / batch
        if not folder.is_dir():
            raise ImageSourceError(f"image batch {batch!r}: no folder {folder} under images.source = "
                                   f"{self.source!r}")
        return folder

    def release_run(self, batch: str):
        """The (csv, npy) pair of a ``release-*`` batch, or None when there is no release folder or no such run."""
        release = self.release_dir()
        if release is None:
            return None
        runs, _ = discover_release_runs(release)
        return next((r for r in runs if r.batch == batch), None)


# --------------------------------------------------------------------------------------------------------------
# Discovering batches (used by the sensor and the demo)
# --------------------------------------------------------------------------------------------------------------

@dataclass
class SourceScan:
    """Batches found at the source: name -> (fingerprint, newest mtime, kind), and problems that were skipped."""

    batches: dict[str, tuple[str, float, str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _fingerprint(paths: list[Path]) -> tuple[str, float]:
    digest = hashlib.sha256()
    newest = 0.0
    for path in sorted(paths):
        st = path.stat()
        newest = max(newest, st.st_mtime)
        digest.update(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16], newest


def scan_sources(images: ImageSourceResource, layout: StorageLayout,
                 sample: SampleResource | None = None) -> SourceScan:
    """Every batch folder under the image source and every run in the release folder, with a fingerprint.

    Folders whose names cannot be partition keys, and clashes between a folder and a release run, are reported
    in ``problems`` and left out.
    """
    scan = SourceScan()
    root = images.images_root(layout, sample) if (images.source.strip().lower() != "sample" or sample is not None
                                                   or (layout.sample_dir / "cutouts").is_dir()) else None
    if root is not None:
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            if not _BATCH_NAME_RE.match(folder.name) or "..." in folder.name:
                scan.problems.append(f"{folder}: folder name is not usable as a batch name "
                                     "(letters, digits and _ . - + = @ only)")
                continue
            files = imaging.list_batch_files(folder)
            if not files:
                continue
            fp, newest = _fingerprint(files)
            scan.batches[folder.name] = (fp, newest, "images")
    release = images.release_dir()
    if release is not None:
        try:
            runs, _orphans = discover_release_runs(release)
        except ReleaseError as exc:
            scan.problems.append(str(exc))
            runs = []
        for run in runs:
            if run.batch in scan.batches:
                scan.problems.append(f"release run {run.csv} is named {run.batch!r}, like an image batch folder; "
                                     "rename one of them")
                del scan.batches[run.batch]
                continue
            fp, newest = _fingerprint([run.csv, run.npy])
            scan.batches[run.batch] = (fp, newest, "release")
    return scan


def discover_image_batches(images_resource: ImageSourceResource, layout: StorageLayout,
                           sample: SampleResource | None = None) -> list[str]:
    """The names of every image batch (and release run) at the source, sorted. Raises on problems.

    With ``source='sample'`` the sample is built first when ``sample`` is given; without it the sample must
    already exist under the storage root.
    """
    scan = scan_sources(images_resource, layout, sample)
    if scan.problems:
        raise ImageSourceError("cannot register image batches: " + "; ".join(scan.problems))
    return sorted(scan.batches)


# --------------------------------------------------------------------------------------------------------------
# The cutouts asset
# --------------------------------------------------------------------------------------------------------------

@dg.asset(
    partitions_def=IMAGE_BATCHES,
    group_name="images",
    kinds={"numpy", "parquet", "astropy"},
    check_specs=[dg.AssetCheckSpec("cutouts_usable", asset="cutouts",
                                   description="The batch has usable images, and at most 5% were quarantined.")],
    description=(
        "Cutouts of one image batch as the model sees them: g, r, i fluxes -> Lupton RGB (astropy "
        "make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0)), uint8 (N, 3, 96, 96) in "
        "images/<batch>/cutouts.npy, one catalog row per image (catalog.parquet: image_id, batch, row, "
        "source_path, ra, dec) and every image that could not be used with its reason (quarantine.parquet). "
        "Release batches (release-*) carry no images: their folder holds an empty batch."
    ),
)
def cutouts(context: dg.AssetExecutionContext, storage: StorageResource, sample: SampleResource,
            images: ImageSourceResource):
    batch = context.partition_key
    layout = storage.layout
    run = images.release_run(batch) if is_release_batch(batch) else None
    if run is not None:
        # A published-release batch has scores and latents but no images: record an empty, valid batch so every
        # reader of images/<batch>/ sees the same files.
        context.log.info(f"{batch} is a published-release batch ({run.csv.name}): no images to read")
        with atomic_dir(layout.images_dir(batch)) as tmp:
            imaging.write_cutout_batch(imaging.empty_batch(batch, images.image_size), tmp)
        yield dg.MaterializeResult(metadata={"images": dg.MetadataValue.int(0),
                                             "release_run": dg.MetadataValue.path(str(run.csv))})
        yield dg.AssetCheckResult(check_name="cutouts_usable", passed=True,
                                  description="published-release batch: scores only, no images expected")
        return
    folder = images.batch_folder(batch, layout, sample)
    started = time.monotonic()

    logged = [0]

    def progress(done: int, total: int) -> None:
        if done - logged[0] >= 2000 or done == total:
            logged[0] = done
            rate = done / max(1e-9, time.monotonic() - started)
            context.log.info(f"{batch}: read {done}/{total} objects ({rate:,.0f} objects/s)")

    result = imaging.read_cutout_folder(folder, batch, size=images.image_size, progress=progress)
    out_dir = layout.images_dir(batch)
    with atomic_dir(out_dir) as tmp:
        imaging.write_cutout_batch(result, tmp)
        if len(result):
            from ww_assets.plotting.figures import gallery

            k = min(16, len(result))
            gallery(result.images[:k], [str(x) for x in result.catalog["image_id"].iloc[:k]], tmp / "preview.png",
                    title=f"Batch {batch}: first {k} cutouts (Lupton RGB of i, r, g; 96 x 96 px at 0.168\"/px, "
                          "north up)", ncols=8)
    seconds = time.monotonic() - started
    n_ok, n_bad = len(result), len(result.quarantine)
    context.log.info(f"{batch}: {n_ok} images ready, {n_bad} quarantined, in {seconds:.1f} s")
    if result.ignored_files:
        context.log.warning(f"{batch}: {len(result.ignored_files)} file(s) not read (not cutouts), e.g. "
                            f"{Path(result.ignored_files[0]).name}")
    metadata = {
        "images": dg.MetadataValue.int(n_ok),
        "quarantined": dg.MetadataValue.int(n_bad),
        "quarantine_reasons": dg.MetadataValue.json(result.reason_counts()),
        "ignored_files": dg.MetadataValue.int(len(result.ignored_files)),
        "source_folder": dg.MetadataValue.path(str(folder)),
        "output_folder": dg.MetadataValue.path(str(out_dir)),
        "seconds": dg.MetadataValue.float(round(seconds, 2)),
        "lupton": dg.MetadataValue.text("make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0); red=i green=r blue=g"),
    }
    if not result.quarantine.empty:
        from ww_assets.defs.metadata import table_markdown

        metadata["quarantine_preview"] = table_markdown(result.quarantine, max_rows=10)
    if (out_dir / "preview.png").exists():
        from ww_assets.defs.metadata import png_markdown

        metadata["preview"] = png_markdown(out_dir / "preview.png", alt=f"first cutouts of {batch}")
    yield dg.MaterializeResult(metadata=metadata)
    total = n_ok + n_bad
    fraction = n_bad / total if total else 1.0
    yield dg.AssetCheckResult(
        check_name="cutouts_usable",
        passed=n_ok > 0 and fraction <= 0.05,
        severity=dg.AssetCheckSeverity.ERROR if n_ok == 0 else dg.AssetCheckSeverity.WARN,
        metadata={"images": n_ok, "quarantined": n_bad, "quarantined_fraction": round(fraction, 4)},
        description=None if n_ok else f"no usable images in {folder}; see {out_dir / imaging.QUARANTINE_FILE}",
    )


# --------------------------------------------------------------------------------------------------------------
# The job and the sensor
# --------------------------------------------------------------------------------------------------------------

score_image_batches = dg.define_asset_job(
    "score_image_batches",
    selection=dg.AssetSelection.assets(*SCORING_ASSETS),
    description="Read one image batch's cutouts, then score them (anomaly_scores + latent_vectors).",
)


def _sensor_default_status() -> dg.DefaultSensorStatus:
    # On by default only when the user pointed the pipeline at real data; the embedded sample is registered by
    # the demo, and a user can switch the sensor on in the UI.
    configured = os.environ.get("WW_IMAGES_SOURCE", "sample").strip().lower() not in ("", "sample") \
        or bool(os.environ.get("WW_RELEASE_DIR"))
    return dg.DefaultSensorStatus.RUNNING if configured else dg.DefaultSensorStatus.STOPPED


def evaluate_new_batches(instance: dg.DagsterInstance, cursor: str | None, images: ImageSourceResource,
                         layout: StorageLayout, sample: SampleResource | None, now: float | None = None):
    """The sensor's decision, as a plain function: (SensorResult or SkipReason, log lines)."""
    now = time.time() if now is None else now
    scan = scan_sources(images, layout, sample)
    seen: dict[str, str] = json.loads(cursor) if cursor else {}
    registered = set(instance.get_dynamic_partitions(IMAGE_BATCHES.name))
    try:
        scored = set(instance.get_materialized_partitions(dg.AssetKey("anomaly_scores")))
    except Exception:  # noqa: BLE001 - an instance without the asset yet
        scored = set()
    to_add, requests, settling = [], [], []
    new_cursor = dict(seen)
    for batch, (fp, newest, kind) in sorted(scan.batches.items()):
        if now - newest < images.settle_seconds:
            settling.append(batch)
            continue
        if batch not in registered:
            to_add.append(batch)
        if seen.get(batch) == fp:
            continue
        new_cursor[batch] = fp
        if batch not in seen and batch in scored:
            continue   # scored before the sensor knew it (e.g. by the demo): remember it, do not re-score
        assets = SCORING_ASSETS if kind == "images" else RELEASE_ASSETS
        requests.append(dg.RunRequest(run_key=f"{batch}:{fp}", partition_key=batch,
                                      asset_selection=[dg.AssetKey(a) for a in assets],
                                      tags={"ww/batch": batch,
                                            "ww/trigger": "new" if batch not in seen else "changed"}))
    logs = list(scan.problems)
    if images.source.strip().lower() == "sample" and not (layout.sample_dir / "cutouts").is_dir():
        logs.append(f"images.source is 'sample' and no sample is built yet under {layout.sample_dir} "
                    "(`make demo` builds it)")
    if settling:
        logs.append(f"waiting for {len(settling)} batch folder(s) still changing: {', '.join(settling[:5])}")
    if not to_add and not requests:
        return dg.SkipReason("no new or changed image batches" + (f" ({'; '.join(logs)})" if logs else "")), logs
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[IMAGE_BATCHES.build_add_request(to_add)] if to_add else [],
        cursor=json.dumps(new_cursor, sort_keys=True),
    ), logs


@dg.sensor(
    name="new_image_batches",
    job=score_image_batches,
    minimum_interval_seconds=60,
    default_status=_sensor_default_status(),
    description=(
        "Watches the image source for new (or changed) batch folders and the release folder for new CSV/npy "
        "pairs; adds each as an image_batches partition and requests its cutouts + scoring run. Batches that "
        "were scored before the sensor first saw them are remembered, not re-scored. Running by default only "
        "when WW_IMAGES_SOURCE or WW_RELEASE_DIR is set."
    ),
)
def new_image_batches(context: dg.SensorEvaluationContext, storage: StorageResource, images: ImageSourceResource):
    # The sensor never builds the embedded sample (minutes of simulation in a sensor tick): with source "sample"
    # it registers the sample's batches once something (the demo, a cutouts run) has built it.
    result, logs = evaluate_new_batches(context.instance, context.cursor, images, storage.layout, None)
    for line in logs:
        context.log.warning(line)
    return result


defs = dg.Definitions(
    assets=[cutouts],
    jobs=[score_image_batches],
    sensors=[new_image_batches],
    resources={"images": ImageSourceResource(source=os.environ.get("WW_IMAGES_SOURCE", "sample") or "sample",
                                             release=os.environ.get("WW_RELEASE_DIR") or None)},
)

"""The images group: the ``cutouts`` of each image batch as the model sees them (``ww_assets.images``)."""

import time
from pathlib import Path

import dagster as dg

from ww_assets.defs.images.partitions import image_batches
from ww_assets.defs.metadata import png_markdown, table_markdown
from ww_assets.defs.resources import ImageSourceResource, SampleResource, StorageResource
from ww_assets.images.cutouts import empty_batch, read_cutout_folder, write_cutout_batch
from ww_assets.images.lupton import IMAGE_SIZE
from ww_assets.plotting.galleries import gallery
from ww_assets.scores.release import is_release_batch
from ww_assets.storage import BATCH_PREVIEW_FILE, atomic_dir

#: the share of a batch's images that may be quarantined before the check warns
QUARANTINE_WARN_FRACTION = 0.05
#: above this share (or with no usable image) the check fails as an error and, being blocking, stops the batch's
#: scoring in the same run: a batch that is mostly unreadable is a wrong folder or a broken transfer, not data
QUARANTINE_BLOCK_FRACTION = 0.5


def _progress(context, batch: str, started: float):
    logged = [0]

    def progress(done: int, total: int) -> None:
        if done - logged[0] >= 2000 or done == total:
            logged[0] = done
            rate = done / max(1e-9, time.monotonic() - started)
            context.log.info(f"{batch}: read {done}/{total} objects ({rate:,.0f} objects/s)")

    return progress


@dg.asset(
    partitions_def=image_batches,
    kinds={"numpy", "parquet", "astropy"},
    check_specs=[dg.AssetCheckSpec("cutouts_usable", asset="cutouts", blocking=True, description=(
        f"The batch has usable images, and at most {QUARANTINE_WARN_FRACTION:.0%} were quarantined (a warning "
        f"above that). Blocking: with no usable image or more than {QUARANTINE_BLOCK_FRACTION:.0%} quarantined it "
        "fails as an error and the batch is not scored."))],
    description=(
        "Cutouts of one image batch as the model sees them: g, r, i fluxes -> Lupton RGB (astropy "
        f"make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0)), uint8 (N, 3, {IMAGE_SIZE}, {IMAGE_SIZE}) in "
        "images/<batch>/cutouts.npy; one catalog row per image (catalog.parquet: image_id, batch, row, "
        "source_path, ra, dec and the sky noise of each band measured on the fluxes); every image that could not "
        "be used, with its reason (quarantine.parquet). Release batches (release-*) carry no images."),
)
def cutouts(context: dg.AssetExecutionContext, storage: StorageResource, sample: SampleResource,
            images: ImageSourceResource):
    batch, layout = context.partition_key, storage.layout
    run = images.release_run(batch) if is_release_batch(batch) else None
    if run is not None:
        context.log.info(f"{batch} is a published-release batch ({run.csv.name}): no images to read")
        with atomic_dir(layout.images_dir(batch)) as tmp:
            write_cutout_batch(empty_batch(batch, images.image_size), tmp)
        yield dg.MaterializeResult(metadata={"images": 0, "release_run": dg.MetadataValue.path(str(run.csv))})
        yield dg.AssetCheckResult(check_name="cutouts_usable", passed=True,
                                  description="published-release batch: scores only, no images expected")
        return
    folder = images.batch_folder(batch, layout, sample)
    started = time.monotonic()
    result = read_cutout_folder(folder, batch, size=images.image_size, progress=_progress(context, batch, started))
    out_dir = layout.images_dir(batch)
    with atomic_dir(out_dir) as tmp:
        write_cutout_batch(result, tmp)
        if len(result):
            k = min(16, len(result))
            gallery(result.images[:k], [str(x) for x in result.catalog["image_id"].iloc[:k]], tmp / BATCH_PREVIEW_FILE,
                    title=f"Batch {batch}: first {k} of {len(result)} cutouts (Lupton RGB of i, r, g; "
                          f"{IMAGE_SIZE} x {IMAGE_SIZE} px at 0.168\"/px, north up)", ncols=8)
    n_ok, n_bad = len(result), len(result.quarantine)
    context.log.info(f"{batch}: {n_ok} images ready, {n_bad} quarantined, in {time.monotonic() - started:.1f} s")
    if result.ignored_files:
        context.log.warning(f"{batch}: {len(result.ignored_files)} file(s) not read (not cutouts), e.g. "
                            f"{Path(result.ignored_files[0]).name}")
    metadata = {
        "images": n_ok, "quarantined": n_bad, "ignored_files": len(result.ignored_files),
        "quarantine_reasons": dg.MetadataValue.json(result.reason_counts()),
        "source_folder": dg.MetadataValue.path(str(folder)), "output_folder": dg.MetadataValue.path(str(out_dir)),
        "seconds": round(time.monotonic() - started, 2),
        "median_sky_sigma_i": float(result.catalog["sky_sigma_i"].median()) if n_ok else float("nan"),
    }
    if n_bad:
        metadata["quarantine_preview"] = table_markdown(result.quarantine, max_rows=10)
    if (out_dir / BATCH_PREVIEW_FILE).exists():
        metadata["preview"] = png_markdown(out_dir / BATCH_PREVIEW_FILE, alt=f"first cutouts of {batch}")
    yield dg.MaterializeResult(metadata=metadata)
    total = n_ok + n_bad
    fraction = n_bad / total if total else 1.0
    blocked = n_ok == 0 or fraction > QUARANTINE_BLOCK_FRACTION
    yield dg.AssetCheckResult(
        check_name="cutouts_usable", passed=n_ok > 0 and fraction <= QUARANTINE_WARN_FRACTION,
        severity=dg.AssetCheckSeverity.ERROR if blocked else dg.AssetCheckSeverity.WARN,
        metadata={"images": n_ok, "quarantined": n_bad, "quarantined_fraction": round(fraction, 4)},
        description=(f"{n_bad} of {total} images of {folder} quarantined: not scored; reasons in "
                     f"{layout.image_quarantine_file(batch)}") if blocked else None)

"""next_volunteer_round: the images to show volunteers next (``ww_assets.analysis.next_round``), uploaded to
Zooniverse when asked (``ww_assets.zooniverse.upload``)."""

from typing import Optional

import dagster as dg

from ww_assets.analysis.next_round import build_next_round
from ww_assets.defs.automation import FOLLOW_INPUTS
from ww_assets.defs.metadata import png_markdown
from ww_assets.defs.resources import StorageResource
from ww_assets.images.store import CutoutStore
from ww_assets.plotting.galleries import gallery


class NextRoundConfig(dg.Config):
    """How many images to send, the share drawn at random (exploration), PNG upscaling, and the live upload: with
    ``upload`` true, ``project_id`` and ``subject_set_name`` are needed and the credentials come from
    PANOPTES_USERNAME / PANOPTES_PASSWORD (or PANOPTES_CLIENT_ID / _SECRET); PANOPTES_ENDPOINT picks the server."""

    n_subjects: int = 200
    exploration: float = 0.1
    seed: int = 20211
    image_scale: int = 1
    round_name: Optional[str] = None
    upload: bool = False
    project_id: Optional[int] = None
    subject_set_name: Optional[str] = None


@dg.asset(kinds={"zooniverse", "csv"}, deps=["consensus_vs_score", "cutouts"], automation_condition=FOLLOW_INPUTS, description=(
    "The next volunteer round: images not yet Zooniverse subjects, ranked by the interest model's predicted "
    "volunteer interest (anomaly score when no model could be fitted), with a random 'exploration' share. Writes "
    "analysis/next_round/ (manifest.csv + one PNG per subject, the Zooniverse uploader's manifest format; machine "
    "fields are '#'-hidden from volunteers) and, when upload is set, creates the subject set and uploads it."))
def next_volunteer_round(context: dg.AssetExecutionContext, config: NextRoundConfig, storage: StorageResource):
    layout = storage.layout
    if config.upload and (config.project_id is None or not config.subject_set_name):
        raise dg.Failure("upload=True needs project_id and subject_set_name in the config")
    out = build_next_round(layout, config.n_subjects, exploration=config.exploration, seed=config.seed,
                           image_scale=config.image_scale, round_name=config.round_name, log=context.log.info)
    picks = out.picks
    top = picks.head(16)
    imgs, _ = CutoutStore(layout).stack(top)
    preview = gallery(imgs, [f"#{r['rank']} {r['selection']}\n{r['image_id']}" for _, r in top.iterrows()],
                      layout.plot_file("next_round_preview"),
                      title=f"Next volunteer round: first {len(top)} of {len(picks)} picks")
    metadata = {
        "subjects": len(picks), "exploit": int((picks["selection"] == "exploit").sum()),
        "explore": int((picks["selection"] == "explore").sum()),
        "ranking_basis": str(picks["ranking_basis"].iloc[0]), "round_name": out.round_name,
        "manifest": dg.MetadataValue.path(str(out.manifest)), "preview": png_markdown(preview, alt="next round"),
        "uploaded": config.upload,
    }
    if config.upload:
        from ww_assets.zooniverse.upload import connect_from_env, upload_manifest

        connect_from_env()
        up = upload_manifest(out.manifest, project_id=config.project_id, subject_set_name=config.subject_set_name,
                             log=context.log.info)
        metadata.update({"subject_set_id": str(up.subject_set_id), "subjects_created": up.created,
                         "subjects_already_there": up.skipped_existing})
    return dg.MaterializeResult(metadata=metadata)

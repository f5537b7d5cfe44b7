"""The embedded sample: simulated HSC-like cutouts with injected oddities, and simulated W&W volunteers.

``build_sample(out_dir, size="small", seed=20211, **overrides)`` writes (atomically: built in a hidden folder
beside ``out_dir`` and renamed into place, replacing an existing sample whole)::

    sample.json                     size, seed, generator version, settings, counts per label, volunteer counts
    truth.csv                       object_id, batch, label, is_odd, is_artifact, is_subject, subject_id, ra, dec,
                                    i_mag, g_r, r_i, half_light_arcsec, psf_fwhm_i_arcsec, n_neighbours
                                    (evaluation only: nothing in the pipeline may read it to score)
    exports/                        the Zooniverse export files, exactly as a project owner downloads them
        weird-and-wonderful-classifications.csv
        weird-and-wonderful-subjects.csv
        weird-and-wonderful-workflows.csv
        project-17317-comments.json     Talk comments (JSON array)
        project-17317-tags.json         Talk tags (JSON array)
    cutouts/<batch>/<object_id>_<band>.fits     cutout_format "fits" (tiny, small): one file per band g, r, i;
                                    primary HDU, 96 x 96 float32, header FILTER (HSC-G/R/I), BAND, OBJECT, RA, DEC,
                                    PIXSCALE=0.168, MAGZERO=27.0, BUNIT, SEEING and a TAN WCS
    cutouts/<batch>/bands_gri.npy   cutout_format "npy" (medium, large): float32 (N, 3, 96, 96), bands g, r, i,
    cutouts/<batch>/catalog.csv     with the row order of catalog.csv (object_id, ra, dec)
    thumbnails/<object_id>.png      the Lupton RGB image volunteers saw (subjects only; not for "large"):
                                    make_lupton_rgb(i, r, g, Q=15, stretch=0.5, minimum=0), rows flipped so north is
                                    up, as astropy writes it with ``filename=`` (origin="lower")

Batches are ``batch_000``, ``batch_001``, ... Pixel values are fluxes with ``mag = 27 - 2.5 log10(flux)``.

Sizes (``SAMPLE_SIZES``): tiny 2 x 48 (unit tests; at least two images of every label, so oddities are
over-represented), small 4 x 256 (the demo), medium 10 x 1000 and large 100 x 1000 (benchmarks, npy cutouts; large
has no thumbnails). An int size, or ``n_images=``, gives that many images in batches of the size's batch_size.
Label rates otherwise (``galaxies.DEFAULT_RATES``): merger 1.0%, ring 0.6%, lens 0.5%, compact_starforming 0.7%,
edge_on 0.7%, irregular 0.5% (4.0% astrophysical oddities); satellite_trail 0.6%, star_spike 0.6%, bad_column 0.4%,
edge_cut 0.4% (2.0% artifacts); the rest normal. About 70% of the images of every label become subjects
(stratified: every kind is both shown and left unseen); the rest are never shown to volunteers.

Determinism: the same (size, seed, settings, generator version) gives the same bytes in every file. Each image is
drawn from its own streams (``SeedSequence(seed, spawn_key=(1, index))``), so the number of worker processes does
not matter. No timestamps of the build are written anywhere.

``ensure_sample(out_dir, size, seed)`` returns at once when ``out_dir/sample.json`` matches; otherwise it builds,
holding a lock file beside ``out_dir`` so concurrent callers build once. CLI::

    python -m ww_assets.simulation --size small --seed 20211 --out data/sample

Modules (this package imports none of them): ``sample`` (build_sample, ensure_sample, GENERATOR_VERSION),
``sizes`` (SAMPLE_SIZES), ``galaxies`` (GalSim cutouts and the labels), ``volunteers`` (simulated volunteers and
their exports), ``novel`` (oddities the sample does not contain, for tests of generality), ``scale_exports``
(exports at benchmark scale).
"""

"""The image batches: one dynamic partition per batch folder (or published-release run), added by the
``new_image_batches`` sensor or the demo."""

import dagster as dg

image_batches = dg.DynamicPartitionsDefinition(name="image_batches")

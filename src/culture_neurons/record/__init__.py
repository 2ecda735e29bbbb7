"""Recording (stages record and attribute in `culture_neurons.stages`): answer the
identification split once, recording per-item activation statistics into a resumable Zarr store
(`store`), and aggregate them per culture for selection (`aggregate`)."""

"""Selection (stages select and stability in `culture_neurons.stages`): score neurons from the
per-culture aggregates with a selector (`selectors`: RND, LAP, LAPE, MAD, CAS) and store the top
share per culture as masks (`masks`)."""

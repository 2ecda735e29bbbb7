"""The embedded demo: synthetic cultures in the CVQA schema (`generate`) and the tiny VLM the
workflow trains on them (`model`; stages make_demo and train_demo in `culture_neurons.stages`)."""

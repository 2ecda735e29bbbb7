"""Ablation (stages in `culture_neurons.stages`: ablate, ablate_shard, control_effect): answer the
evaluation split with each source culture's neurons deactivated."""

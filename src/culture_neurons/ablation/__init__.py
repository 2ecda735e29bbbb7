"""Ablate stage: answer the evaluation split with each source culture's neurons deactivated."""

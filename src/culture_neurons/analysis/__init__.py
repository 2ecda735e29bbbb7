"""Analyses (their stages live in `culture_neurons.stages`): accuracy change and flip-rate
matrices with bootstrap intervals (`metrics`), the paper's Table 2 (`tables`), heatmaps and layer
distributions (`figures`)."""

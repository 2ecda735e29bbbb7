"""The neuron atlas: what each selected neuron fires on, browsable offline.

``choose`` picks each culture's top neurons from the selectors' rankings, ``scan`` reads their
per-item statistics from the activation store in one pass, ``profile`` turns those into top and
bottom items and per-culture activation profiles with intervals, ``thumbnails`` writes small
images once, ``render`` writes the static HTML site and ``export`` the JSONL export.
"""

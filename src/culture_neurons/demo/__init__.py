"""The embedded demo: synthetic cultures in the CVQA schema (`generate`) and the tiny VLM the
workflow trains on them (`model`, stage `train`)."""

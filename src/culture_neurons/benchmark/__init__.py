"""`culture-neurons bench`: the engine, recording, selectors and store measured (`bench`)."""

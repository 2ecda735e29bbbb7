"""Planning a run: the work of each model job and the resources it asks for."""

"""Data (stages download_*, prepare_data, prepare_task in `culture_neurons.stages`): read CVQA
(`cvqa`), group country–language pairs into cultures (`grouping`), split 50/50 per pair
(`split`), load images (`images`); `prepare` validates and writes the items table."""

#!/usr/bin/env bash
# Snakemake runs this once after creating the environment: install this checkout's package (the
# `culture-neurons` command the rules call) without letting pip add dependencies: the environment's
# conda packages are the ones this kind of rule needs. workflow/rules/common.smk exports the path.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e "${CULTURE_NEURONS_CHECKOUT:?set by workflow/rules/common.smk}"

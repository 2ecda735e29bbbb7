#!/bin/bash
# usage: dry_run_capture.sh CHECKOUT OUTDIR: dry-run job lists of every shipped config (run it on a
# fresh clone: existing results/ change the planned disk and memory sizes)
set -u
here=$(dirname "$(readlink -f "$0")"); out=$(readlink -f "$2"); cd "$1"; mkdir -p "$out"
export PYTHONPATH="$1/src" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { name=$1; shift; timeout 600 snakemake -n -p --forceall --cores 1 "$@" > "$out/$name.txt" 2>&1; echo "$name rc=$?" >> "$out/rc.txt"; }
: > "$out/rc.txt"
run demo
run demo-profile --profile profiles/slurm
run paper --configfile configs/paper.yaml --profile profiles/slurm
run paper-noprofile --configfile configs/paper.yaml
run smollm2 --configfile configs/smollm2.yaml --profile profiles/slurm
run demo-blind --configfile config.yaml configs/demo-blind.yaml --profile profiles/slurm
run train-demo --configfile config.yaml configs/train-demo.yaml --profile profiles/slurm
run slurm-overlay --configfile config.yaml tests/slurm/overlay.yaml --profile profiles/slurm
run shards --configfile config.yaml "$here/shards.yaml" --profile profiles/slurm

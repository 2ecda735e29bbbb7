#!/usr/bin/env bash
# The demo workflow through a real Slurm cluster of one node on this machine:
#
#   sudo bash tests/slurm/run_one_node.sh        (root: it installs packages and runs daemons)
#
# 1. installs Debian's slurmctld, slurmd, slurm-client and munge (skipped when present) and the
#    executor plugin (pyproject's `slurm` extra) when missing;
# 2. writes /etc/slurm/slurm.conf from tests/slurm/slurm.conf.in (never over one it did not
#    write; removed at the end), every other file under a fresh work folder (accounting off,
#    jobcomp/filetxt as the job list, proctrack/linuxproc, task/none: no cgroups), starts munged,
#    slurmctld and slurmd and waits until the node is idle;
# 3. runs the demo in a fresh copy of this checkout with `snakemake --profile profiles/slurm`
#    and config.yaml trimmed by tests/slurm/overlay.yaml (every rule, fewer repeats), injecting
#    four faults into that one run (tests/slurm/inject_faults.py): `scancel` of
#    record while it writes its store's chunks, `scancel` of an ablate job while it
#    writes its partial folder's chunks, the node dying (slurmd and the jobs' processes killed)
#    under an ablate job, SIGKILL of Snakemake itself with jobs in the
#    queue; each rerun is the same command (after `snakemake --unlock` where needed);
# 4. runs it locally (`snakemake --cores N`, same config files) in another fresh copy, or takes
#    a finished local run's folder from CULTURE_NEURONS_LOCAL_RUN;
# 5. compares the two results/ trees (tests/slurm/compare_runs.py) and prints the Slurm job list
#    (tests/slurm/job_list.py), both wall times and, per fault, what was injected, the recovery
#    time and the comparison of the hit job's outputs (also in WORK/faults.txt);
# 6. stops the daemons it started, by pid (also on failure or interruption).
#
# Environment: CULTURE_NEURONS_SLURM_WORK (work folder, default a new one under /tmp),
# CULTURE_NEURONS_LOCAL_RUN (a finished local run to compare with), CULTURE_NEURONS_SLURM_TIMEOUT
# (seconds for each run, default 3600), CULTURE_NEURONS_SLURM_CONFIGFILES (the runs' config files,
# default "config.yaml tests/slurm/overlay.yaml"; "config.yaml" for the full demo),
# CULTURE_NEURONS_SLURM_PORTS ("ctld slurmd", default "16817 16818"), CULTURE_NEURONS_SLURM_FAULTS
# (1, default: inject the faults; 0: one plain run).
# Exit status: 0 equal (and every fault injected and recovered from), 1 different or failed,
# 77 skipped (not root, or the packages cannot be installed).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/tests/slurm"
TIMEOUT=${CULTURE_NEURONS_SLURM_TIMEOUT:-3600}
FAULTS=${CULTURE_NEURONS_SLURM_FAULTS:-1}
read -r -a CONFIGFILES <<<"${CULTURE_NEURONS_SLURM_CONFIGFILES:-config.yaml tests/slurm/overlay.yaml}"
read -r CTLD_PORT SLURMD_PORT <<<"${CULTURE_NEURONS_SLURM_PORTS:-16817 16818}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1

say() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "run_one_node.sh needs root (apt-get, munged/slurmctld/slurmd as root); skipped" >&2
    exit 77
fi

# ---------------------------------------------------------------------------------- 1. install
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null \
    || ! command -v sbatch >/dev/null || ! command -v munged >/dev/null; then
    say "installing slurmctld slurmd slurm-client munge (apt)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; }; then
        echo "could not install Slurm and munge with apt-get; skipped" >&2
        exit 77
    fi
fi
if ! python3 -c "import snakemake_executor_plugin_slurm" 2>/dev/null; then
    plugin=$(python3 -c 'import sys, tomllib; print(*tomllib.load(open(sys.argv[1], "rb"))["project"]["optional-dependencies"]["slurm"])' "$ROOT/pyproject.toml")
    say "installing $plugin (pip)"
    if ! python3 -m pip install -q "$plugin"; then
        echo "could not install $plugin; skipped" >&2
        exit 77
    fi
fi
say "$(slurmctld -V), $(munged -V 2>&1 | head -1), executor plugin $(python3 -c 'import importlib.metadata as m; print(m.version("snakemake-executor-plugin-slurm"))')"

# ---------------------------------------------------------------------------------- 2. cluster
WORK=${CULTURE_NEURONS_SLURM_WORK:-$(mktemp -d /tmp/culture-neurons-slurm.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
CLUSTER="$WORK/cluster"
rm -rf "$CLUSTER"
mkdir -p "$CLUSTER"/{state,spool,log,munge,munge-key}
# munged wants its socket's folders reachable by everyone and its key private.
chmod 755 "$WORK" "$CLUSTER" "$CLUSTER/munge"
chmod 700 "$CLUSTER/munge-key"
dd if=/dev/urandom of="$CLUSTER/munge-key/munge.key" bs=1024 count=1 status=none
chmod 400 "$CLUSTER/munge-key/munge.key"

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(($(awk '/^MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024))
# The config goes where Slurm looks by default: the executor's job step runs its `srun` with
# every SLURM_* variable but the job's identity removed (SLURM_CONF too), so a config named only
# by SLURM_CONF is lost inside the jobs. An existing config that is not ours is left alone.
CONF=/etc/slurm/slurm.conf
MARK="# written by culture-neurons tests/slurm/run_one_node.sh"
if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "$CONF exists (a real Slurm installation?); not replacing it" >&2
    exit 1
fi
unset SLURM_CONF
mkdir -p /etc/slurm
{
    echo "$MARK ($CLUSTER)"
    sed -e "s|@DIR@|$CLUSTER|g" -e "s|@HOST@|$host|g" -e "s|@USER@|$(id -un)|g" \
        -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem_mb|g" \
        -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" "$HERE/slurm.conf.in"
} >"$CONF"
cp "$CONF" "$CLUSTER/slurm.conf"

STARTED=()  # "name pidfile" of each daemon started, stopped in reverse order
stop_daemons() {
    local status=$?
    trap - EXIT INT TERM
    if [ -f "$CLUSTER/slurmctld.pid" ]; then
        # Jobs left running (a failed or interrupted run) go first.
        mapfile -t left < <(squeue -h -o %i 2>/dev/null || true)
        [ "${#left[@]}" -gt 0 ] && scancel "${left[@]}" 2>/dev/null || true
    fi
    local i name pidfile pid
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        read -r name pidfile <<<"${STARTED[i]}"
        pid=$(cat "$pidfile" 2>/dev/null || true)
        # Only our daemon: the pid from our pidfile, still running our program.
        if [ -n "$pid" ] && grep -qa "$name" "/proc/$pid/cmdline" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
            say "stopped $name (pid $pid)"
        fi
    done
    grep -qF "$MARK ($CLUSTER)" "$CONF" 2>/dev/null && rm -f "$CONF"
    exit "$status"
}
trap stop_daemons EXIT
trap 'exit 130' INT TERM

munged --socket="$CLUSTER/munge/munge.socket.2" --key-file="$CLUSTER/munge-key/munge.key" \
    --pid-file="$CLUSTER/munge/munged.pid" --seed-file="$CLUSTER/munge-key/munged.seed" \
    --log-file="$CLUSTER/log/munged.log"
STARTED+=("munged $CLUSTER/munge/munged.pid")
slurmctld -f "$CONF"
STARTED+=("slurmctld $CLUSTER/slurmctld.pid")
slurmd -f "$CONF"
STARTED+=("slurmd $CLUSTER/slurmd.pid")
for _ in $(seq 60); do
    [ "$(sinfo -h -o %T 2>/dev/null)" = idle ] && break
    sleep 1
done
if [ "$(sinfo -h -o %T 2>/dev/null)" != idle ]; then
    say "the node did not become idle; logs in $CLUSTER/log"
    sinfo || true
    tail -n 20 "$CLUSTER"/log/*.log || true
    exit 1
fi
say "cluster up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %T')"

# ------------------------------------------------------------------------------ 3. Slurm run
fresh_copy() {  # tracked and untracked-but-not-ignored files: no results, no .snakemake
    rm -rf "$1"
    mkdir -p "$1"
    if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$ROOT" ls-files -z -co --exclude-standard | (cd "$ROOT" && tar --null -T - -cf -) \
            | tar -xf - -C "$1"
    else
        tar -C "$ROOT" --exclude=./results --exclude=./.snakemake --exclude=./logs -cf - . \
            | tar -xf - -C "$1"
    fi
}
run_in() {  # run_in COPY LOG ARGS...: the workflow in COPY, importing the package from COPY/src
    local copy=$1 log=$2
    shift 2
    (cd "$copy" && PYTHONPATH="$copy/src${PYTHONPATH:+:$PYTHONPATH}" \
        timeout "$TIMEOUT" snakemake "$@") >"$log" 2>&1
}

fresh_copy "$WORK/slurm-run"
start=$(date +%s)
# Status polls every 5 s from the first job on (the plugin's default waits 40 s; same profile).
slurm_args=(--profile profiles/slurm --slurm-init-seconds-before-status-checks 5
    --configfile "${CONFIGFILES[@]}")
if [ "$FAULTS" = 0 ]; then
    say "Slurm run: snakemake --profile profiles/slurm (log $WORK/slurm-run.log)"
    if ! run_in "$WORK/slurm-run" "$WORK/slurm-run.log" "${slurm_args[@]}"; then
        say "the Slurm run failed:"
        tail -n 40 "$WORK/slurm-run.log"
        exit 1
    fi
else
    say "Slurm run with faults injected (logs $WORK/slurm-run.N.log, queue $WORK/faults-detail.log)"
    rm -f "$WORK"/slurm-run.*.log "$WORK/faults-detail.log" "$WORK/faults.json" "$WORK/faults.txt"
    faulted=0
    CULTURE_NEURONS_SLURM_TIMEOUT=$TIMEOUT python3 "$HERE/inject_faults.py" run "$WORK/slurm-run" \
        "$WORK" "$CLUSTER" -- "${slurm_args[@]}" || faulted=$?
    if [ "$faulted" != 0 ]; then
        # The report still says which fault failed and what the runs got to.
        python3 "$HERE/inject_faults.py" report "$WORK" - "$WORK/slurm-run" || true
        say "the Slurm run with faults failed (details above; $WORK/faults.json):"
        last_log=$(printf '%s\n' "$WORK"/slurm-run.*.log | sort -V | tail -n 1)
        tail -n 40 "$last_log" 2>/dev/null || true
        exit 1
    fi
fi
slurm_s=$(($(date +%s) - start))
say "Slurm run finished in ${slurm_s} s"

# ------------------------------------------------------------------------------ 4. local run
if [ -n "${CULTURE_NEURONS_LOCAL_RUN:-}" ]; then
    local_run=$(cd "$CULTURE_NEURONS_LOCAL_RUN" && pwd)
    local_s="(given: $local_run)"
else
    local_run="$WORK/local-run"
    fresh_copy "$local_run"
    say "local run: snakemake --cores $cpus --configfile ${CONFIGFILES[*]} (log $WORK/local-run.log)"
    start=$(date +%s)
    if ! run_in "$local_run" "$WORK/local-run.log" --cores "$cpus" --configfile "${CONFIGFILES[@]}"; then
        say "the local run failed:"
        tail -n 40 "$WORK/local-run.log"
        exit 1
    fi
    local_s="$(($(date +%s) - start)) s"
fi

# ------------------------------------------------------------------------------ 5. report
echo
echo "== Slurm jobs (snakemake log + jobcomp/filetxt; no accounting) =="
python3 "$HERE/job_list.py" "$WORK/slurm-run.log" "$CLUSTER/log/jobcomp.txt" | tee "$WORK/slurm-jobs.txt"
echo
echo "== local vs Slurm results =="
compared=0
python3 -W ignore "$HERE/compare_runs.py" "$local_run" "$WORK/slurm-run" | tee "$WORK/comparison.txt" \
    || compared=$?
if [ "$FAULTS" != 0 ]; then
    echo
    echo "== faults (also in $WORK/faults.txt) =="
    python3 "$HERE/inject_faults.py" report "$WORK" "$local_run" "$WORK/slurm-run" || compared=1
fi
echo
echo "wall time: Slurm run ${slurm_s} s ($(grep -c 'has been submitted with SLURM jobid' "$WORK/slurm-run.log") Slurm jobs), local run ${local_s}"
echo "work folder: $WORK"
exit "$compared"

"""The Slurm run of tests/slurm/run_one_node.sh with four faults injected into it.

    python tests/slurm/inject_faults.py run COPY WORK CLUSTER -- SNAKEMAKE_ARGS...
    python tests/slurm/inject_faults.py report WORK LOCAL_RUN SLURM_RUN

`run` starts `snakemake SNAKEMAKE_ARGS` in COPY (the checkout copy the Slurm run uses), watches
the queue (squeue every 0.5 s) and injects, each once, in this order:

1. `scancel` of a `record` job while it is RUNNING and its partial activation store
   has at least one chunk flagged in `chunk_done` and at least one not;
2. `scancel` of an `ablate` (or `ablate_intervention`) job while it is RUNNING and its partial
   folder (`results/.../{selector}.partial/`) holds at least one finished chunk and not all; its
   rerun must log that it resumed that folder;
3. the node dying under a running `ablate` (or `ablate_intervention`) job whose rule command has
   started: slurmd, every slurmstepd and every process of the node's jobs are SIGKILLed; slurmd
   stays dead until slurmctld marks the node down (SlurmdTimeout), is then started again, and the
   node is resumed with scontrol if it did not return to service by itself;
4. SIGKILL of the Snakemake process itself, once fault 3's job has completed again, while jobs
   of the run are queued or running; the run's leftover jobs are then cancelled
   (`scancel --name <run ID>`, so no old job writes an output while the rerun writes it again)
   and the lock is removed (`snakemake --unlock`).

A run that ends in failure after a fault (or is killed by fault 4) is rerun with the same
arguments, at most MAX_RUNS runs in all; a run that fails without a fault, a fault whose moment
never comes (the job finished first), a fault that did not take (e.g. the job was not
cancelled), jobs left in the queue at the end: all fail the test, loudly. What happened goes to
WORK/faults.json (and the queue's state changes to WORK/faults-detail.log); each run's log is
WORK/slurm-run.N.log.

`report` compares, per fault, the outputs of the job(s) it hit (compare_runs.py with those
paths) and writes WORK/faults.txt: what was injected and when, the recovery time and the
comparison. Exit status 1 when a fault failed or a comparison differs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MAX_RUNS = 5
POLL_S = 0.5
# Slurm states of a job that still holds or waits for resources (squeue's default listing).
ACTIVE = {
    "PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
    "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED",
}  # fmt: skip
ABLATE_RULES = ("ablate", "ablate_intervention")
COMMENT = re.compile(r"^rule_(.+?)(?:_wildcards_(.*))?$")
SUBMITTED = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+)")
RUN_ID = re.compile(r"SLURM run ID: (\S+)")


class FaultError(Exception):
    """A fault that could not be injected or did not have its effect: the test fails."""


def stamp() -> str:
    return time.strftime("%H:%M:%S")


def say(message: str) -> None:
    print(f"[{stamp()}] {message}", flush=True)


def command(*args: str, check: bool = True, timeout: float = 60) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
        raise FaultError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


# ------------------------------------------------------------------------------------ queue
class Queue:
    """Every job squeue has shown (finished ones stay listed for MinJobAge), with the time of each
    state it was seen in."""

    def __init__(self, detail_log: Path):
        self.jobs: dict[str, dict] = {}
        self.detail = detail_log.open("a")

    def poll(self) -> bool:
        try:
            out = subprocess.run(
                ["squeue", "-h", "--states=all", "-o", "%i|%T|%k|%j|%r"],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
        if out.returncode:  # slurmctld busy or briefly unreachable: the next poll asks again
            return False
        for line in out.stdout.splitlines():
            jobid, state, comment, name, reason = (line.split("|") + [""] * 5)[:5]
            match = COMMENT.match(comment)
            job = self.jobs.setdefault(
                jobid,
                {
                    "comment": comment,
                    "rule": match.group(1) if match else "",
                    "wildcards": (match.group(2) or "") if match else "",
                    "name": name,
                    "states": [],
                },
            )
            if not job["states"] or job["states"][-1][1] != state:
                job["states"].append((time.time(), state))
                self.detail.write(f"{stamp()} job {jobid} {job['comment']} {state} ({reason})\n")
                self.detail.flush()
        return True

    def state(self, jobid: str) -> str:
        job = self.jobs.get(jobid)
        return job["states"][-1][1] if job else ""

    def with_rule(self, rules: tuple[str, ...], state: str | None = None) -> list[str]:
        return [
            j
            for j, job in sorted(self.jobs.items(), key=lambda kv: int(kv[0]))
            if job["rule"] in rules and (state is None or job["states"][-1][1] == state)
        ]

    def active(self, name: str | None = None) -> dict[str, str]:
        return {
            j: job["states"][-1][1]
            for j, job in self.jobs.items()
            if job["states"][-1][1] in ACTIVE and (name is None or job["name"] == name)
        }

    def completed_after(self, comment: str, since: float) -> tuple[str, float] | None:
        """The first job with this comment seen COMPLETED after `since`: (jobid, time)."""
        found = []
        for jobid, job in self.jobs.items():
            if job["comment"] != comment:
                continue
            for t, state in job["states"]:
                if state == "COMPLETED" and t >= since:
                    found.append((t, jobid))
        if not found:
            return None
        t, jobid = min(found)
        return jobid, t

    def history(self, jobid: str, since: float = 0.0) -> str:
        return " -> ".join(
            f"{state} {time.strftime('%H:%M:%S', time.localtime(t))}"
            for t, state in self.jobs.get(jobid, {}).get("states", [])
            if t >= since - 1
        )


# ------------------------------------------------------------------------------- processes
def live_processes() -> dict[int, tuple[bytes, bytes]]:
    """pid -> (cmdline, environ) of every process that is not a zombie."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if stat[stat.rindex(")") + 2] in "ZX":
                continue
            found[int(entry.name)] = (
                (entry / "cmdline").read_bytes(),
                (entry / "environ").read_bytes(),
            )
        except (OSError, ValueError):
            continue
    return found


def job_of(environ: bytes) -> str | None:
    for item in environ.split(b"\0"):
        if item.startswith(b"SLURM_JOB_ID="):
            return item.split(b"=", 1)[1].decode()
    return None


def node_processes() -> dict[int, str]:
    """The processes a dying node takes with it: every slurmstepd and every process of a job
    (pid -> what it is)."""
    found = {}
    for pid, (cmdline, environ) in live_processes().items():
        if pid == os.getpid():
            continue
        if cmdline.startswith(b"slurmstepd"):
            found[pid] = cmdline.replace(b"\0", b" ").decode(errors="replace").strip()
        elif (jobid := job_of(environ)) is not None:
            found[pid] = (
                f"job {jobid}: " + cmdline.replace(b"\0", b" ").decode(errors="replace")[:80]
            )
    return found


def rule_command_running(jobid: str, tool: bytes) -> bool:
    """Whether the rule's own command (e.g. `culture-neurons ... ablate`) runs inside the job."""
    return any(
        job_of(environ) == jobid and b"culture-neurons" in cmdline and tool in cmdline
        for cmdline, environ in live_processes().values()
    )


def daemon_pid(pidfile: Path, name: str) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
        if name.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    except (OSError, ValueError, IndexError):
        pass
    return None


# -------------------------------------------------------------------------- store and logs
def chunks_done(store: Path) -> tuple[int, int] | None:
    """(chunks flagged done, chunks) of a partial store; None while it cannot be read."""
    import zarr  # only here: the report needs none of it

    try:
        done = zarr.open_group(str(store), mode="r")["chunk_done"][:]
    except Exception:  # not laid out yet, or its flags file being rewritten right now
        return None
    return int(done.sum()), int(done.size)


def ablate_chunks(partial: Path) -> tuple[int, int] | None:
    """(chunks written, chunks) of an ablate job's partial folder (its manifest gives the
    count); None before the folder and its manifest exist."""
    try:
        work = next(partial.glob("work-*"))
        manifest = json.loads((work / "manifest.json").read_text())
    except (StopIteration, OSError, ValueError):
        return None
    chunks = -(-manifest["n_items"] // manifest["chunk_items"])
    return len(list(work.glob("chunk-*.parquet"))), chunks


def ablate_resumed(copy: Path, partial: str) -> str:
    """The line of an ablate job's log (logs/ablate/...) saying it resumed ``partial``."""
    for log in sorted((copy / "logs" / "ablate").rglob("*.log")):
        found = re.findall(
            rf"resuming {re.escape(partial)}/work-.*", log.read_text(errors="replace")
        )
        if found:
            return found[-1]
    return f"no 'resuming {partial}' line under logs/ablate"


def job_outputs(log_text: str) -> dict[str, list[str]]:
    """Slurm job id -> the outputs of the Snakemake job it ran, from a Snakemake log."""
    outputs_of, current = {}, []
    for line in log_text.splitlines():
        stripped = line.strip()
        if re.match(r"^(local)?rule \S+:$", line):
            current = []
        elif stripped.startswith("output: "):
            current = [p.strip() for p in stripped[len("output: ") :].split(",") if p.strip()]
        elif stripped.startswith("jobid: "):
            outputs_of[stripped[len("jobid: ") :]] = current
    return {slurm: outputs_of.get(job, []) for job, slurm in SUBMITTED.findall(log_text)}


def incomplete_markers(copy: Path) -> list[str]:
    """The outputs Snakemake has marked incomplete (.snakemake/incomplete, base64 file names)."""
    root = copy / ".snakemake" / "incomplete"
    found = []
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name == "migration_underway":
                continue
            parts = Path(dirpath, name).relative_to(root).parts
            encoded = "".join(p.lstrip("@") for p in parts)
            try:
                found.append(base64.urlsafe_b64decode(encoded).decode())
            except ValueError:
                found.append(encoded)
    return sorted(found)


def locks(copy: Path) -> list[str]:
    return sorted(p.name for p in (copy / ".snakemake" / "locks").glob("*"))


# ---------------------------------------------------------------------------------- driver
class Driver:
    def __init__(self, copy: Path, work: Path, cluster: Path, args: list[str]):
        self.copy, self.work, self.cluster, self.args = copy, work, cluster, args
        self.queue = Queue(work / "faults-detail.log")
        self.timeout = float(os.environ.get("CULTURE_NEURONS_SLURM_TIMEOUT", 3600))
        self.conf = os.environ.get("SLURM_CONF_PATH", "/etc/slurm/slurm.conf")
        self.faults: list[dict] = [
            {"fault": 1, "what": "scancel record while it writes chunks"},
            {"fault": 2, "what": "scancel ablate while its partial folder holds chunks"},
            {"fault": 3, "what": "node dies (slurmd + job processes SIGKILLed) under ablate"},
            {"fault": 4, "what": "SIGKILL of the Snakemake process with jobs queued/running"},
        ]  # fmt: skip
        for fault in self.faults:
            fault["done"] = False
        self.runs: list[dict] = []
        self.proc: subprocess.Popen | None = None
        self.run_id: str | None = None
        self.f2_seen: dict[str, float] = {}

    # .............................................................................. runs
    def start_run(self) -> None:
        n = len(self.runs) + 1
        log = self.work / f"slurm-run.{n}.log"
        env = dict(os.environ)
        env["PYTHONPATH"] = f"{self.copy}/src" + (
            f":{env['PYTHONPATH']}" if env.get("PYTHONPATH") else ""
        )
        say(f"Slurm run {n}: snakemake {' '.join(self.args)} (log {log})")
        self.proc = subprocess.Popen(
            ["snakemake", *self.args], cwd=self.copy, env=env,
            stdout=log.open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.run_id = None
        self.runs.append({"run": n, "log": str(log), "start": time.time(), "faults": []})

    def run_log(self) -> str:
        return Path(self.runs[-1]["log"]).read_text(errors="replace")

    def current_run_id(self) -> str | None:
        if self.run_id is None:
            found = RUN_ID.search(self.run_log())
            self.run_id = found.group(1) if found else None
        return self.run_id

    def main(self) -> int:
        started = time.time()
        try:
            self.start_run()
            while True:
                assert self.proc is not None
                if time.time() - self.runs[-1]["start"] > self.timeout:
                    self.proc.kill()
                    raise FaultError(f"Slurm run {len(self.runs)} ran past {self.timeout:.0f} s")
                self.queue.poll()
                self.arm_faults()
                rc = self.proc.poll()
                if rc is None:
                    time.sleep(0.2 if self.waiting_for_chunks() else POLL_S)
                    continue
                self.queue.poll()
                run = self.runs[-1]
                run.update(end=time.time(), rc=rc, run_id=self.current_run_id())
                say(
                    f"Slurm run {run['run']} ended: exit {rc} after "
                    f"{run['end'] - run['start']:.0f} s"
                )
                if rc == 0:
                    missing = [f for f in self.faults if not f["done"]]
                    if missing:
                        raise FaultError(
                            "the workflow finished but fault(s) "
                            + ", ".join(f"{f['fault']} ({f['what']})" for f in missing)
                            + " never found their moment: see faults-detail.log"
                        )
                    break
                if not run["faults"]:
                    tail = "\n".join(self.run_log().splitlines()[-30:])
                    raise FaultError(f"Slurm run {run['run']} failed without a fault:\n{tail}")
                if len(self.runs) >= MAX_RUNS:
                    raise FaultError(f"still not finished after {MAX_RUNS} runs")
                if locks(self.copy):
                    self.unlock()
                self.start_run()
            self.check_queue_empty()
            ok = True
        except FaultError as error:
            say(f"FAULT TEST FAILED: {error}")
            ok = False
            self.error = str(error)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
            self.save(time.time() - started, ok)
        return 0 if ok else 1

    def unlock(self) -> None:
        env = dict(os.environ, PYTHONPATH=f"{self.copy}/src")
        result = subprocess.run(
            ["snakemake", "--unlock"], cwd=self.copy, env=env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        if result.returncode:
            raise FaultError(f"snakemake --unlock failed:\n{result.stdout}{result.stderr}")
        say(f"snakemake --unlock: removed lock(s); left: {locks(self.copy) or 'none'}")

    def check_queue_empty(self) -> None:
        for _ in range(60):
            left = command("squeue", "-h", "-o", "%i %T %k").strip()
            if not left:
                say("squeue is empty: no job left queued or running")
                return
            time.sleep(1)
        raise FaultError(f"jobs left in the queue after the last run:\n{left}")

    def save(self, seconds: float, ok: bool) -> None:
        t0 = self.runs[0]["start"] if self.runs else time.time()
        outputs: dict[str, list[str]] = {}
        for run in self.runs:
            outputs.update(job_outputs(Path(run["log"]).read_text(errors="replace")))
        for fault in self.faults:
            # compare_runs.py sees results/ only (every rule's outputs are there).
            fault["outputs"] = sorted(
                {
                    p
                    for j in fault.get("jobs", [])
                    for p in outputs.get(j, [])
                    if p.startswith("results/")
                }
            )
        state = {
            "ok": ok,
            "error": getattr(self, "error", None),
            "seconds": round(seconds),
            "t0": t0,
            "runs": [
                {k: round(v - t0) if k in ("start", "end") else v for k, v in r.items()}
                for r in self.runs
            ],
            "faults": self.faults,
        }  # fmt: skip
        (self.work / "faults.json").write_text(json.dumps(state, indent=1))
        with (self.work / "slurm-run.log").open("w") as joined:  # job_list.py reads one log
            for run in self.runs:
                joined.write(Path(run["log"]).read_text(errors="replace"))

    # ............................................................................ faults
    def next_fault(self) -> dict | None:
        return next((f for f in self.faults if not f["done"]), None)

    def waiting_for_chunks(self) -> bool:
        fault = self.next_fault()
        rules = {1: ("record",), 2: ABLATE_RULES}.get(fault["fault"]) if fault else None
        return bool(rules and self.queue.with_rule(rules, "RUNNING"))

    def arm_faults(self) -> None:
        self.watch_recoveries()
        fault = self.next_fault()
        if fault is None or self.proc is None or self.proc.poll() is not None:
            return
        if fault["fault"] == 1:
            self.fault_cancel_record(fault)
        elif fault["fault"] == 2:
            self.fault_cancel_ablate(fault)
        elif fault["fault"] == 3:
            self.fault_node_dies(fault)
        elif fault["fault"] == 4 and "recovered_s" in self.faults[2]:
            self.fault_kill_snakemake(fault)

    def injected(self, fault: dict, **details) -> None:
        fault.update(done=True, run=len(self.runs), at=stamp(), t=time.time(), **details)
        self.runs[-1]["faults"].append(fault["fault"])

    def watch_recoveries(self) -> None:
        for fault in self.faults:
            if not fault["done"] or "recovered_s" in fault or "comment" not in fault:
                continue
            found = self.queue.completed_after(fault["comment"], fault["t"])
            if found:
                jobid, t = found
                fault.update(
                    recovered_s=round(t - fault["t"]),
                    recovered_by=jobid,
                    recovered_run=len(self.runs),
                )
                fault["history"] = {
                    j: self.queue.history(j, fault["t"]) for j in {*fault["jobs"], jobid}
                }
                if fault["fault"] == 1:  # the rerun's own word that it resumed the store
                    log = self.copy / "logs" / "record" / f"{fault['model']}.log"
                    text = log.read_text(errors="replace") if log.exists() else ""
                    resumed = re.findall(r"resuming .*", text)
                    fault["resumed"] = resumed[-1] if resumed else f"no 'resuming' line in {log}"
                if fault["fault"] == 2:  # the rerun's own word that it resumed the partial folder
                    fault["resumed"] = ablate_resumed(self.copy, fault["partial"])
                say(f"fault {fault['fault']} recovered: job {jobid} ({fault['comment']}) COMPLETED "
                    f"{fault['recovered_s']} s after the injection (run "
                    f"{len(self.runs)})")  # fmt: skip

    def fault_cancel_record(self, fault: dict) -> None:
        jobs = self.queue.with_rule(("record",))
        states = [self.queue.state(j) for j in jobs]
        if "COMPLETED" in states and not ACTIVE & set(states):
            raise FaultError(
                f"fault 1 not injected: record job(s) {jobs} completed before a "
                "partial store was seen with a finished chunk and an unfinished one"
            )
        for jobid in jobs:
            job = self.queue.jobs[jobid]
            if job["states"][-1][1] != "RUNNING":
                continue
            model = job["wildcards"]
            store = self.copy / "results" / model / "activations.partial.zarr"
            progress = chunks_done(store)
            if progress is None or not 0 < progress[0] < progress[1]:
                continue
            command("scancel", jobid)
            say(f"fault 1: scancel {jobid} (record, {model}): {progress[0]} of "
                f"{progress[1]} chunks done in {store.relative_to(self.copy)}")  # fmt: skip
            self.injected(
                fault, jobs=[jobid], comment=job["comment"], model=model, chunks_done=progress[0],
                chunks=progress[1], store=str(store.relative_to(self.copy)),
            )  # fmt: skip
            self.verify_cancelled(fault, jobid, store)
            return

    def verify_cancelled(self, fault: dict, jobid: str, store: Path) -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            self.queue.poll()
            if self.queue.state(jobid) not in ACTIVE | {""}:
                break
            time.sleep(POLL_S)
        state = self.queue.state(jobid)
        after = chunks_done(store)
        fault.update(state_after=state, chunks_done_after=after[0] if after else None)
        if state != "CANCELLED":
            raise FaultError(
                f"fault 1: job {jobid} is {state or 'gone'} after scancel, not CANCELLED"
            )
        if not store.exists() or after is None or after[0] >= after[1]:
            raise FaultError(f"fault 1: the partial store {store} was finished anyway ({after})")
        say(
            f"fault 1: job {jobid} CANCELLED; partial store left with {after[0]} of {after[1]} "
            "chunks"
        )

    def fault_cancel_ablate(self, fault: dict) -> None:
        outputs = None
        for jobid in self.queue.with_rule(ABLATE_RULES, "RUNNING"):
            if outputs is None:
                outputs = job_outputs(self.run_log())
            ablations = next(iter(outputs.get(jobid, [])), None)
            if not ablations:
                continue
            partial = self.copy / (ablations + ".partial")
            progress = ablate_chunks(partial)
            if progress is None or not 0 < progress[0] < progress[1]:
                continue
            job = self.queue.jobs[jobid]
            command("scancel", jobid)
            say(f"fault 2: scancel {jobid} ({job['rule']}, {ablations}): {progress[0]} of "
                f"{progress[1]} chunks done in {partial.relative_to(self.copy)}")  # fmt: skip
            self.injected(
                fault, jobs=[jobid], comment=job["comment"], chunks_done=progress[0],
                chunks=progress[1], partial=str(partial.relative_to(self.copy)),
            )  # fmt: skip
            deadline = time.time() + 60
            while time.time() < deadline and self.queue.state(jobid) in ACTIVE | {""}:
                time.sleep(POLL_S)
                self.queue.poll()
            state, after = self.queue.state(jobid), ablate_chunks(partial)
            fault.update(state_after=state, chunks_done_after=after[0] if after else None)
            if state != "CANCELLED":
                raise FaultError(
                    f"fault 2: job {jobid} is {state or 'gone'} after scancel, not CANCELLED"
                )
            if after is None or after[0] >= after[1] or (self.copy / ablations).exists():
                raise FaultError(f"fault 2: {ablations} was finished anyway ({after})")
            say(f"fault 2: job {jobid} CANCELLED; {partial.name} left with {after[0]} of "
                f"{after[1]} chunks")  # fmt: skip
            return

    def fault_node_dies(self, fault: dict) -> None:
        running = self.queue.with_rule(ABLATE_RULES, "RUNNING")
        ready = []
        for jobid in running:
            if rule_command_running(jobid, b"ablate"):
                # Seen at two polls at least 1 s apart: the rule command is under way, not starting.
                first = self.f2_seen.setdefault(jobid, time.time())
                if time.time() - first >= 1.0:
                    ready.append(jobid)
        if not ready:
            return
        jobid = ready[0]
        job = self.queue.jobs[jobid]
        ctld_log = self.cluster / "log" / "slurmctld.log"
        ctld_offset = ctld_log.stat().st_size if ctld_log.exists() else 0
        slurmd = daemon_pid(self.cluster / "slurmd.pid", "slurmd")
        if slurmd is None:
            raise FaultError("fault 3: no running slurmd found from its pidfile")
        node = command("squeue", "-h", "-j", jobid, "-o", "%N").strip()
        on_node = self.queue.active()
        killed: dict[int, str] = {}
        os.kill(slurmd, signal.SIGKILL)
        # Twice: a process forked while the first round was being killed goes in the second.
        for _ in range(2):
            victims = node_processes()
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            killed.update(victims)
            time.sleep(0.2)
        t = time.time()
        say(f"fault 3: node {node} died under ablate job {jobid} ({job['wildcards']}): slurmd "
            f"(pid {slurmd}) and {len(killed)} job processes SIGKILLed")  # fmt: skip
        self.injected(
            fault, jobs=[jobid], comment=job["comment"], node=node,
            jobs_on_node={j: s for j, s in on_node.items() if s == "RUNNING"},
            killed=len(killed), slurmd_pid=slurmd,
        )  # fmt: skip
        fault["t"] = t
        left = [p for p, what in node_processes().items() if f"job {jobid}:" in what]
        if left or daemon_pid(self.cluster / "slurmd.pid", "slurmd"):
            raise FaultError(f"fault 3: still alive after the kill: slurmd or job processes {left}")
        node_states = self.wait_node(node, lambda s: "down" in s, 240, "slurmctld to mark it down")
        fault["node_states_dead"] = node_states
        fault["job_state_when_down"] = self.queue.state(jobid)
        subprocess.run(["slurmd", "-f", self.conf], check=True, timeout=60)
        say(
            "fault 3: slurmd started again (pid "
            f"{daemon_pid(self.cluster / 'slurmd.pid', 'slurmd')})"
        )
        try:
            states = self.wait_node(node, lambda s: "down" not in s and "drain" not in s, 30, "")
            fault["resumed_with_scontrol"] = False
        except FaultError:
            command("scontrol", "update", f"nodename={node}", "state=resume")
            say(f"fault 3: node {node} resumed with scontrol")
            states = self.wait_node(node, lambda s: "down" not in s and "drain" not in s, 60,
                                    "the node to return to service")  # fmt: skip
            fault["resumed_with_scontrol"] = True
        fault["node_states_back"] = states
        fault["back_s"] = round(time.time() - t)
        fault["slurmctld_log"] = [
            line for line in ctld_log.read_text(errors="replace")[ctld_offset:].splitlines()
            if re.search(rf"JobId={jobid}\b|{node}\b|equeue", line)
        ][:12]  # fmt: skip

    def wait_node(self, node: str, done, seconds: float, what: str) -> list[str]:
        """Polls the node's state (and the queue) until `done(state)`; the states seen."""
        seen: list[str] = []
        deadline = time.time() + seconds
        while time.time() < deadline:
            self.queue.poll()
            state = command("sinfo", "-h", "-n", node, "-o", "%T", check=False).strip()
            if state and (not seen or seen[-1].split(" ")[0] != state):
                seen.append(f"{state} {stamp()}")
            if state and done(state):
                return seen
            time.sleep(POLL_S)
        raise FaultError(f"fault 3: timed out after {seconds:.0f} s waiting for "
                         f"{what or 'the node'} "
                         f"(node states seen: {seen})")  # fmt: skip

    def fault_kill_snakemake(self, fault: dict) -> None:
        assert self.proc is not None
        run_id = self.current_run_id()
        active = self.queue.active(run_id)
        if not run_id or "RUNNING" not in active.values():
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        t = time.time()
        self.queue.poll()
        still = self.queue.active(run_id)
        say(f"fault 4: Snakemake (pid {self.proc.pid}) SIGKILLed with {len(active)} job(s) of run "
            f"{run_id} queued/running: {active}")  # fmt: skip
        self.injected(
            fault, jobs=sorted(still, key=int), pid=self.proc.pid, run_id=run_id,
            jobs_when_killed=active, jobs_after_kill=still, locks=locks(self.copy),
            incomplete=incomplete_markers(self.copy),
        )  # fmt: skip
        fault["t"] = t
        if not still:
            raise FaultError("fault 4: no job of the killed run was left queued/running")
        if not fault["locks"]:
            say("fault 4: note: no lock left in .snakemake/locks")
        # Left alone, these jobs would go on writing outputs that the rerun (rerun-incomplete)
        # submits again: two jobs on the same files at once.
        command("scancel", "--name", run_id)
        deadline = time.time() + 120
        while self.queue.active(run_id) and time.time() < deadline:
            time.sleep(POLL_S)
            self.queue.poll()
        if self.queue.active(run_id):
            raise FaultError(
                f"fault 4: jobs of the killed run still active: {self.queue.active(run_id)}"
            )
        for _ in range(50):  # their processes gone, so nothing writes while the rerun starts
            if not any(f"job {j}:" in w for w in node_processes().values() for j in still):
                break
            time.sleep(0.2)
        fault["cancelled"] = {j: self.queue.state(j) for j in still}
        fault["cancel_s"] = round(time.time() - t)
        say(f"fault 4: cancelled the killed run's jobs {fault['cancelled']}; "
            f"{len(fault['incomplete'])} output(s) marked incomplete, locks "
            f"{fault['locks']}")  # fmt: skip


# ---------------------------------------------------------------------------------- report
def compare(local: str, slurm: str, paths: list[str]) -> tuple[int, str]:
    result = subprocess.run(
        [sys.executable, "-W", "ignore", str(HERE / "compare_runs.py"), local, slurm, *paths],
        capture_output=True, text=True,
    )  # fmt: skip
    lines = result.stdout.strip().splitlines()
    differing = [line for line in lines if line.startswith("DIFFERENT")]
    return result.returncode, "; ".join([lines[-1] if lines else "no output", *differing[:5]])


def report(work: str, local: str, slurm: str) -> int:
    """LOCAL "-": no comparisons (the run with faults failed)."""
    state = json.loads(Path(work, "faults.json").read_text())
    status = 0 if state["ok"] else 1
    runs = state["runs"]
    lines = [
        "fault injection: "
        + ("all four faults injected" if state["ok"] else f"FAILED: {state['error']}")
    ]
    lines.append(
        f"Slurm runs: {len(runs)} ("
        + ", ".join(
            f"run {r['run']} exit {r.get('rc')} {r.get('end', 0) - r['start']} s" for r in runs
        )
        + f"), {state['seconds']} s in all"
    )
    for fault in state["faults"]:
        n = fault["fault"]
        head = f"fault {n}: {fault['what']}"
        if not fault["done"]:
            lines.append(f"{head}: NOT INJECTED")
            status = 1
            continue
        if n == 1:
            what = (f"scancel of job {fault['jobs'][0]} ({fault['comment']}) at {fault['at']} "
                    "in run "
                    f"{fault['run']}, {fault['chunks_done']} of {fault['chunks']} chunks done in "
                    f"{fault['store']}; then {fault.get('state_after')}, store left with "
                    f"{fault.get('chunks_done_after')} chunks")  # fmt: skip
        elif n == 2:
            what = (f"scancel of job {fault['jobs'][0]} ({fault['comment']}) at {fault['at']} in "
                    f"run {fault['run']}, {fault['chunks_done']} of {fault['chunks']} chunks "
                    f"done in {fault['partial']}; then {fault.get('state_after')}, partial "
                    f"folder left with {fault.get('chunks_done_after')} chunks")  # fmt: skip
        elif n == 3:
            what = (f"slurmd + {fault['killed']} job processes SIGKILLed at {fault['at']} in run "
                    f"{fault['run']} under job {fault['jobs'][0]} ({fault['comment']}); node "
                    f"{' -> '.join(fault.get('node_states_dead', []))}; job "
                    f"{fault.get('job_state_when_down')} when the node was down; slurmd restarted, "
                    f"node {' -> '.join(fault.get('node_states_back', []))} "
                    f"({'scontrol resume' if fault.get('resumed_with_scontrol') else 'by itself'},"
                    f" {fault.get('back_s')} s after the kill)")  # fmt: skip
        else:
            what = (f"SIGKILL of Snakemake (pid {fault['pid']}) at {fault['at']} in run "
                    f"{fault['run']} "
                    f"with jobs {fault['jobs_when_killed']}; left: lock(s) {fault['locks']}, "
                    f"{len(fault['incomplete'])} incomplete marker(s), jobs "
                    f"{fault['jobs_after_kill']}"
                    f" -> cancelled ({fault.get('cancelled')}) in {fault.get('cancel_s')} s, "
                    "snakemake --unlock, rerun")  # fmt: skip
        if n == 4:
            rerun = next((r for r in runs if r["run"] == fault["run"] + 1), None)
            if rerun and rerun.get("rc") == 0:
                seconds = round(state["t0"] + rerun["end"] - fault["t"])
                recovery = (
                    f"recovery: the rerun (run {rerun['run']}) finished {seconds} s after the kill"
                )
            else:
                recovery, status = "recovery: the rerun did not finish", 1
        elif "recovered_s" in fault:
            how = ("the same job, requeued by Slurm" if fault["recovered_by"] in fault["jobs"]
                   else f"job {fault['recovered_by']} in run {fault['recovered_run']}")  # fmt: skip
            recovery = f"recovery: {fault['recovered_s']} s until {how} COMPLETED"
            if fault.get("resumed"):
                recovery += f", which logged: {fault['resumed']}"
            if n == 2 and not fault.get("resumed", "").startswith("resuming"):
                status = 1  # the rerun must resume the partial folder, not start over
            history = fault.get("history", {})
            if history:
                recovery += (
                    " (" + "; ".join(f"job {j}: {h}" for j, h in sorted(history.items())) + ")"
                )
        else:
            recovery, status = "recovery: the job never completed again", 1
        if local == "-":
            comparison = "its job's outputs: not compared"
        elif fault.get("outputs"):
            rc, summary = compare(local, slurm, fault["outputs"])
            status |= rc
            comparison = f"its job's outputs vs the local run: {summary}"
        else:
            comparison = "its job's outputs: none found in the Snakemake log"
            status = 1
        lines += [head, f"  injected: {what}", f"  {recovery}", f"  {comparison}"]
    if local != "-":
        rc, summary = compare(local, slurm, [])
        status |= rc
        lines.append(f"all results vs the local run: {summary}")
    text = "\n".join(lines) + "\n"
    Path(work, "faults.txt").write_text(text)
    print(text, end="")
    return status


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"] and "--" in argv:
        copy, work, cluster = (Path(a).resolve() for a in argv[1:4])
        args = argv[argv.index("--") + 1 :]
        return Driver(copy, work, cluster, args).main()
    if argv[:1] == ["report"] and len(argv) == 4:
        return report(*argv[1:4])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

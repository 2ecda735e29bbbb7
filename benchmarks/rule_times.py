"""Per-rule time of a finished Snakemake run, from its log (Snakemake 9 has no --stats).

    python benchmarks/rule_times.py .snakemake/log/<run>.snakemake.log OUT.json

Each job's seconds run from the timestamp before its `rule`/`localrule` line to the one before
its `Finished jobid` line. Jobs run side by side on the cores, so the rules' job-seconds add up
to more than the wall time; each rule's share is of the job-seconds. Writes OUT.json with the
wall time, the jobs and seconds per rule, and prints the table.
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
START = re.compile(r"^(?:local)?rule (\w+):$")
JOBID = re.compile(r"^\s+jobid: (\d+)$")
FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def rule_times(lines: list[str]) -> dict:
    stamp: datetime | None = None
    first = last = None
    pending_rule: str | None = None
    pending_start: datetime | None = None
    started: dict[str, tuple[str, datetime]] = {}
    seconds: dict[str, float] = defaultdict(float)
    jobs: dict[str, int] = defaultdict(int)
    for line in lines:
        if match := STAMP.match(line):
            stamp = datetime.strptime(match.group(1), "%a %b %d %H:%M:%S %Y")
            first = first or stamp
            last = stamp
        elif (match := START.match(line)) and stamp is not None:
            pending_rule, pending_start = match.group(1), stamp
        elif (match := JOBID.match(line)) and pending_rule is not None:
            started[match.group(1)] = (pending_rule, pending_start)
            pending_rule = None
        elif (match := FINISHED.match(line)) and stamp is not None:
            rule, start = started.pop(match.group(1))
            seconds[rule] += (stamp - start).total_seconds()
            jobs[rule] += 1
    if first is None or started:
        raise ValueError(f"not a finished run: {len(started)} jobs never finished")
    total = sum(seconds.values())
    per_rule = {
        rule: {"jobs": jobs[rule], "seconds": seconds[rule], "share": seconds[rule] / total}
        for rule in sorted(seconds, key=seconds.get, reverse=True)
    }
    return {
        "wall_s": (last - first).total_seconds(),
        "job_seconds": total,
        "jobs": sum(jobs.values()),
        "rules": per_rule,
    }


def main(log: str, out: str) -> None:
    result = rule_times(Path(log).read_text().splitlines())
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    wall, jobs, job_s = result["wall_s"], result["jobs"], result["job_seconds"]
    print(f"wall {wall:.0f} s, {jobs} jobs, {job_s:.0f} job-s")
    for rule, entry in result["rules"].items():
        print(f"{rule:24s} {entry['jobs']:3d} jobs {entry['seconds']:7.0f} s {entry['share']:6.1%}")


if __name__ == "__main__":
    main(*sys.argv[1:])

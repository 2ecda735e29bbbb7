"""The Slurm jobs of one workflow run, without accounting (sacct).

    python tests/slurm/job_list.py SNAKEMAKE_LOG JOBCOMP_TXT

Joins Snakemake's "Job N has been submitted with SLURM jobid M (log: .../rule_R/W/M.log)" lines
with Slurm's job completion log (JobCompType=jobcomp/filetxt): one line per Slurm job (id,
rule, wildcards, state, exit code, run time, resources), then the jobs per rule.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

SUBMITTED = re.compile(
    r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: .*?/rule_([^/]+)/(.*?)/?\d+\.log\)"
)


def main(log_path: str, jobcomp_path: str) -> int:
    submitted = {}
    for _, slurm_id, rule, wildcards in SUBMITTED.findall(Path(log_path).read_text()):
        submitted[slurm_id] = (rule, wildcards or "-")
    finished = {}
    for line in Path(jobcomp_path).read_text().splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            finished[fields["JobId"]] = fields
    header = ("jobid", "rule", "wildcards", "state", "exit", "run_s")
    print("{:>6}  {:<20} {:<34} {:<10} {:<5} {:>6}  tres".format(*header))
    per_rule: Counter[str] = Counter()
    for slurm_id in sorted(submitted, key=int):
        rule, wildcards = submitted[slurm_id]
        per_rule[rule] += 1
        done = finished.get(slurm_id, {})
        seconds = "-"
        if done.get("StartTime") and done.get("EndTime"):
            start, end = (datetime.fromisoformat(done[k]) for k in ("StartTime", "EndTime"))
            seconds = str(int((end - start).total_seconds()))
        print(
            f"{slurm_id:>6}  {rule:<20} {wildcards:<34} {done.get('JobState', '?'):<10} "
            f"{done.get('ExitCode', '?'):<5} {seconds:>6}  {done.get('Tres', '?')}"
        )
    print("jobs per rule: " + ", ".join(f"{r} {n}" for r, n in sorted(per_rule.items())))
    print(f"{len(submitted)} Slurm jobs submitted, {len(finished)} in the completion log")
    states = Counter(finished.get(j, {}).get("JobState", "?") for j in submitted)
    print("states: " + ", ".join(f"{s} {n}" for s, n in sorted(states.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))

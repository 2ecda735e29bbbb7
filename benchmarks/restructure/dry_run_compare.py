"""Compare the dry-run job lists of two checkouts, mapping the renamed rules and subcommands."""
import re, sys
from pathlib import Path

RULES = {"baseline_and_record": "record", "make_demo_data": "make_demo",
         "train_demo_model": "train_demo", "intervention_matrices": "matrices_intervention",
         "intervention_figures": "figures_intervention",
         "ablate_intervention_shard": "ablate_shard_intervention"}
# Intended text changes in shell commands / logs (renamed subcommands, log folders).
TEXT = [("logs/baseline_and_record/", "logs/record/"), ("logs/make_demo_data.log", "logs/make_demo.log"),
        ("logs/train_demo_model/", "logs/train_demo/"),
        ("culture-neurons download --repo-type model ", "culture-neurons download-model "),
        ("culture-neurons download --repo-type dataset ", "culture-neurons download-dataset "),
        ("culture-neurons prepare-data ", "culture-neurons prepare-task ")]

def jobs(path):
    out = Path(path).read_text()
    res = []
    for block in re.split(r"^\[.*\]$", out, flags=re.MULTILINE)[1:]:
        m = re.search(r"^(?:local)?rule (\w+):", block, flags=re.MULTILINE)
        if not m:
            continue
        fields = {}
        for key in ("input", "output", "log", "wildcards", "resources"):
            f = re.search(rf"^\s+{key}: (.*)$", block, flags=re.MULTILINE)
            fields[key] = f.group(1) if f else ""
        cmd = re.search(r"^Shell command: (.*)$", block, flags=re.MULTILINE)
        fields["shell"] = cmd.group(1) if cmd else ""
        fields["resources"] = ", ".join(sorted(fields["resources"].split(", ")))
        fields["rule"] = m.group(1)
        fields["local"] = block.lstrip().startswith("localrule") or "localrule " in block
        res.append(fields)
    return res

def normalise(job, rename):
    job = dict(job)
    if rename:
        job["rule"] = RULES.get(job["rule"], job["rule"])
        for k in ("log", "shell"):
            for a, b in TEXT:
                if a.startswith("culture-neurons prepare-data") and job["rule"] != "prepare_task":
                    continue
                job[k] = job[k].replace(a, b)
    return tuple(sorted(job.items()))

def main(before, after):
    ok = True
    for f in sorted(Path(before).glob("*.txt")):
        if f.name == "rc.txt":
            continue
        a = sorted(normalise(j, True) for j in jobs(f))
        b = sorted(normalise(j, False) for j in jobs(Path(after) / f.name))
        same = a == b
        ok &= same
        print(f"{f.stem}: {len(a)} jobs before, {len(b)} after: {'EQUAL' if same else 'DIFFERENT'}")
        if not same:
            sa, sb = set(a), set(b)
            for x in list(sa - sb)[:3]:
                print("  only before:", dict(x))
            for x in list(sb - sa)[:3]:
                print("  only after: ", dict(x))
    return ok

if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1], sys.argv[2]) else 1)

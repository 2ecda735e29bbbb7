"""An ablate job killed half way and rerun, on the demo (issue 31's "must show").

    python benchmarks/ablate_resume.py [--selector cas] [--chunk-items 64] [--out FILE.json]

Runs `culture-neurons ablate` on the shipped demo model (`resources/demo/model`) with the demo
config's items, masks, ratios, batch size and max_new_tokens, three times as separate processes:
1. uninterrupted, into WORK/uninterrupted;
2. into WORK/resumed, SIGKILLed (as a walltime kill would) once half its chunks are in the
   partial folder;
3. the same command again, which resumes that folder.
It writes what the rerun redid (its log's "resuming" line, the chunks and answers it answered)
and whether its tables equal the uninterrupted run's (bytes and data frames) to --out.
The demo's items and the selector's masks are made first with Snakemake if missing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = "demo-qwen25vl-tiny"


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}"
        + (f":{os.environ['PYTHONPATH']}" if "PYTHONPATH" in os.environ else ""),
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def ensure_inputs(items: Path, masks: Path, cores: int) -> None:
    if items.exists() and masks.exists():
        return
    print(f"making {items} and {masks} with Snakemake", flush=True)
    subprocess.run(
        ["snakemake", "--cores", str(cores), str(items.relative_to(ROOT)),
         str(masks.relative_to(ROOT))],
        cwd=ROOT, env=env(), check=True,
    )  # fmt: skip


def ablate_command(config: dict, items: Path, masks: Path, out_dir: Path, chunk_items: int,
                   threads: int) -> list[str]:  # fmt: skip
    entry = config["models"][MODEL]
    ratios = config.get("ratios") or [config["ratio"]]
    return [
        sys.executable, "-m", "culture_neurons.cli", "--threads", str(threads), "ablate",
        "--items", str(items), "--model", json.dumps(entry), "--masks", str(masks),
        "--sources", "all", "--ratios", *(f"{r:g}" for r in ratios),
        "--intervention", json.dumps({"kind": "zero"}),
        "--batch-size", str(entry.get("batch_size", 8)),
        "--max-batch-size", str(entry.get("max_batch_size", 0)),
        "--max-new-tokens", str(config.get("generation", {}).get("max_new_tokens", 20)),
        "--chunk-items", str(chunk_items), "--out-dir", str(out_dir),
    ]  # fmt: skip


def chunk_files(out_dir: Path) -> list[Path]:
    return sorted(out_dir.with_name(out_dir.name + ".partial").glob("work-*/chunk-*.parquet"))


def n_chunks(out_dir: Path) -> int | None:
    manifests = list(out_dir.with_name(out_dir.name + ".partial").glob("work-*/manifest.json"))
    if not manifests:
        return None
    manifest = json.loads(manifests[0].read_text())
    return math.ceil(manifest["n_items"] / manifest["chunk_items"])


def run(command: list[str], log: Path, kill_at_half: Path | None = None) -> dict:
    """Run ``command`` (log to ``log``); with ``kill_at_half`` (its out dir) SIGKILL it once half
    of its chunks are written."""
    start = time.perf_counter()
    with log.open("w") as stream:
        proc = subprocess.Popen(command, cwd=ROOT, env=env(), stdout=stream, stderr=stream)
        killed = None
        while proc.poll() is None:
            if kill_at_half is not None:
                total, done = n_chunks(kill_at_half), len(chunk_files(kill_at_half))
                if total and done >= total / 2:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    killed = {"chunks_written": len(chunk_files(kill_at_half)), "chunks": total}
                    break
            time.sleep(0.05)
    seconds = round(time.perf_counter() - start, 1)
    if killed is None and proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:6])} ... failed ({proc.returncode}); see {log}")
    return {"seconds": seconds, "returncode": proc.returncode, "killed": killed}


def tables(out_dir: Path) -> dict[str, Path]:
    return {str(p.relative_to(out_dir)): p for p in sorted(out_dir.rglob("*.parquet"))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--selector", default="cas")
    parser.add_argument("--chunk-items", type=int, default=64, help="64: 8 chunks of the demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "ablate_resume.json")
    args = parser.parse_args()

    config = yaml.safe_load((ROOT / "config.yaml").read_text())
    items = ROOT / "results" / "data" / config["dataset"]["name"] / "items.parquet"
    masks = ROOT / "results" / MODEL / "masks" / f"{args.selector}.zarr"
    ensure_inputs(items, masks, args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="ablate_resume."))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    plain, resumed = work / "uninterrupted" / args.selector, work / "resumed" / args.selector
    cmd = lambda out: ablate_command(config, items, masks, out, args.chunk_items, args.threads)  # noqa: E731

    first = run(cmd(plain), work / "uninterrupted.log")
    killed = run(cmd(resumed), work / "killed.log", kill_at_half=resumed)
    if killed["killed"] is None:
        raise SystemExit("the job finished before half its chunks were seen: nothing was killed")
    left = [p.name for p in chunk_files(resumed)]
    rerun = run(cmd(resumed), work / "rerun.log")
    text = (work / "rerun.log").read_text()
    resuming = re.findall(r"resuming .*", text)
    answered = [
        int(a) - int(b) for b, a in re.findall(r"chunk \d+/\d+ \(items (\d+)-(\d+)\)", text)
    ]
    first_log = (work / "uninterrupted.log").read_text()
    plan = re.search(r"zero: (\d+) masks .*?, (\d+) items in (\d+) chunks of (\d+)", first_log)
    n_masks, n_items, chunks, chunk_items = (int(g) for g in plan.groups())

    a, b = tables(plain), tables(resumed)
    frames_equal = set(a) == set(b)
    for name in sorted(set(a) & set(b)):
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(a[name]), pd.read_parquet(b[name]))
        except AssertionError:
            frames_equal = False
    bytes_equal = set(a) == set(b) and all(a[n].read_bytes() == b[n].read_bytes() for n in a)
    result = {
        "what": "culture-neurons ablate on the demo: uninterrupted, then SIGKILLed at half its "
        "chunks and rerun with the same command",
        "model": f"{MODEL} (resources/demo/model)",
        "selector": args.selector,
        "evaluation_items": n_items,
        "masks": n_masks,
        "answers": n_items * n_masks,
        "chunk_items": chunk_items,
        "chunks": chunks,
        "uninterrupted_s": first["seconds"],
        "killed_after_s": killed["seconds"],
        "chunks_written_when_killed": killed["killed"]["chunks_written"],
        "chunk_files_after_kill": left,
        "rerun_s": rerun["seconds"],
        "rerun_log_resuming": resuming[-1].split(": ", 1)[-1] if resuming else None,
        "rerun_chunks_answered": len(answered),
        "rerun_answers": sum(answered) * n_masks,
        "tables": len(a),
        "tables_equal_as_frames": frames_equal,
        "tables_equal_bytes": bytes_equal,
        "partial_folder_removed": not resumed.with_name(resumed.name + ".partial").exists(),
        "cpu_threads": args.threads,
    }
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    ok = frames_equal and bytes_equal and len(answered) == chunks - len(left)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

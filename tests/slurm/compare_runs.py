"""Compare the results/ trees of two runs of the workflow (e.g. local and through Slurm).

    python tests/slurm/compare_runs.py RUN_A RUN_B [PATH...]

Every file must exist in both. Tables (parquet) must be equal as data frames, stores (zarr)
array by array with equal attributes, text and weights byte for byte (Table 2 included); JSON
reports equal once their timing and peak-memory keys are dropped; PNG figures equal pixel for
pixel; PDF figures byte for byte once their /CreationDate is blanked (matplotlib stamps the
time). Prints one line per kind and exits 1 on any difference. PATHs (relative to the runs, e.g.
a job's outputs) limit the comparison to those files, stores and folders; each must exist in
both runs.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from PIL import Image

TIMING_KEY = re.compile(r"^(seconds|.*_s|.*_per_second|.*_peak_mb)$")  # measurements, not results


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not TIMING_KEY.match(k)}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def compare_zarr(a: Path, b: Path) -> None:
    ga, gb = zarr.open_group(str(a), mode="r"), zarr.open_group(str(b), mode="r")
    assert dict(ga.attrs) == dict(gb.attrs), "attributes differ"
    names = sorted(ga.array_keys())
    assert names == sorted(gb.array_keys()), "arrays differ"
    for name in names:
        np.testing.assert_array_equal(ga[name][:], gb[name][:], err_msg=name)


def compare_file(a: Path, b: Path) -> str:
    """Compare one file; returns its kind."""
    suffix = a.suffix
    if suffix == ".parquet":
        pd.testing.assert_frame_equal(pd.read_parquet(a), pd.read_parquet(b))
        return "parquet"
    if suffix == ".json":
        ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
        assert without_timings(ja) == without_timings(jb), "JSON differs beyond timings"
        return "json"
    if suffix == ".png":
        pa, pb = (np.asarray(Image.open(p).convert("RGBA")) for p in (a, b))
        np.testing.assert_array_equal(pa, pb)
        return "png"
    if suffix == ".pdf":
        date = re.compile(rb"/CreationDate \(D:[^)]*\)")
        blank = lambda data: date.sub(lambda m: b" " * len(m.group(0)), data)  # noqa: E731
        assert blank(a.read_bytes()) == blank(b.read_bytes()), "PDF differs beyond its date"
        return "pdf"
    assert a.read_bytes() == b.read_bytes(), "bytes differ"
    return suffix.lstrip(".") or "other"


def units(root: Path) -> dict[str, Path]:
    """Files and zarr stores under root/results, by relative path (Snakemake's markers left out)."""
    found = {}
    results = root / "results"
    stores = sorted(p for p in results.rglob("*.zarr") if p.is_dir())
    for store in stores:
        found[str(store.relative_to(root))] = store
    for path in results.rglob("*"):
        if path.is_dir() or path.name == ".snakemake_timestamp":
            continue
        if any(store in path.parents for store in stores):
            continue
        found[str(path.relative_to(root))] = path
    return found


def within(name: str, paths: list[str]) -> bool:
    return any(name == p or name.startswith(p.rstrip("/") + "/") for p in paths)


def main(a_root: str, b_root: str, *paths: str) -> int:
    a, b = units(Path(a_root)), units(Path(b_root))
    failures = []
    if paths:
        a = {k: v for k, v in a.items() if within(k, list(paths))}
        b = {k: v for k, v in b.items() if within(k, list(paths))}
        for path in paths:
            if not any(within(name, [path]) for name in {*a, *b}):
                failures.append(f"{path}: in neither run")
    for name in sorted(set(a) ^ set(b)):
        failures.append(f"{name}: only in {a_root if name in a else b_root}")
    kinds: Counter[str] = Counter()
    for name in sorted(set(a) & set(b)):
        try:
            if a[name].is_dir():
                compare_zarr(a[name], b[name])
                kinds["zarr store"] += 1
            else:
                kinds[compare_file(a[name], b[name])] += 1
        except AssertionError as error:
            failures.append(f"{name}: {str(error).strip().splitlines()[0][:200]}")
    for kind, n in sorted(kinds.items()):
        print(f"equal  {n:4d} {kind}")
    for failure in failures:
        print(f"DIFFERENT {failure}")
    table2 = Path(a_root) / "results/summary/table2.md"
    if table2.exists() and not failures and not paths:
        print(f"Table 2 identical ({table2.relative_to(a_root)}):")
        print(table2.read_text().rstrip())
    print(f"{sum(kinds.values())} equal, {len(failures)} different")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))

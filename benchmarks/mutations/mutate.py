"""Apply one hand-made mutation to a production file, run the given tests, restore the file.

    python benchmarks/mutations/mutate.py NAME FILE OLD NEW TEST [TEST ...]

OLD must occur exactly once in FILE; the file is restored byte for byte (checked by sha256)
whatever the tests do. Prints the pytest summary, the failing tests and their first assertion
lines: a mutation is caught when pytest exits with 1.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main(name: str, file: str, old: str, new: str, tests: list[str]) -> None:
    path = ROOT / file
    text = path.read_text()
    digest = hashlib.sha256(text.encode()).hexdigest()
    if text.count(old) != 1:
        raise SystemExit(f"{name}: the pattern occurs {text.count(old)} times in {file}")
    path.write_text(text.replace(old, new))
    try:
        env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HF_HUB_OFFLINE="1")
        command = ["timeout", "900", sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
        out = subprocess.run(
            [*command, *tests, "-rf"], cwd=ROOT, env=env, capture_output=True, text=True
        )
    finally:
        path.write_text(text)
    assert hashlib.sha256(path.read_text().encode()).hexdigest() == digest, "not restored"
    lines = out.stdout.strip().splitlines()
    print(f"{name}: rc={out.returncode} {lines[-1] if lines else out.stderr[-500:]}")
    for line in lines:
        if line.startswith("FAILED"):
            print("   ", line[:200])
    for line in [line for line in lines if line.startswith("E ")][:5]:
        print("      ", line[:160])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:])

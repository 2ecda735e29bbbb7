"""Issue 33, stages part: every top-level definition (function, class, constant) of one package
tree appears with identical source text in another, wherever it moved; prints the moves and the
definitions whose text changed.

    git archive <base> src | tar -x -C /tmp/base
    python benchmarks/restructure/same_definitions.py /tmp/base/src/culture_neurons src/culture_neurons
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SKIPPED = {"log", "__all__"}  # one per module, not a definition that moves


def definitions(root: Path) -> dict[str, list[tuple[str, str]]]:
    """name -> (file, source text) of every top-level definition under ``root``."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted(root.rglob("*.py")):
        source = path.read_text()
        for node in ast.parse(source).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = node.name
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                target = node.targets[0] if isinstance(node, ast.Assign) else node.target
                name = getattr(target, "id", None)
            else:
                continue
            if name is None or name in SKIPPED:
                continue
            text = ast.get_source_segment(source, node) or ""
            found.setdefault(name, []).append((str(path.relative_to(root)), text))
    return found


def main(base: Path, new: Path) -> int:
    before, after = definitions(base), definitions(new)
    moved = changed = 0
    for name, entries in before.items():
        for path, text in entries:
            same = [where for where, other in after.get(name, []) if other == text]
            if not same:
                changed += 1
                print(f"changed or gone: {path}:{name}")
            elif path not in same:
                moved += 1
                print(f"moved verbatim: {name}: {path} -> {same[0]}")
    total = sum(len(v) for v in before.values())
    print(f"{total} top-level definitions; {moved} moved verbatim; {changed} changed or gone")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))

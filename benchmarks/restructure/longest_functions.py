"""Longest functions (lines) under a source tree, and line counts of named files."""
import ast, sys, pathlib
root = pathlib.Path(sys.argv[1])
rows = []
for f in sorted((root / "src").rglob("*.py")):
    tree = ast.parse(f.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            rows.append((node.end_lineno - node.lineno + 1, f"{f.relative_to(root)}:{node.name}"))
rows.sort(reverse=True)
for n, name in rows[:15]:
    print(f"{n:5d}  {name}")
print("functions:", len(rows), " >60 lines:", sum(n > 60 for n, _ in rows), " >100 lines:", sum(n > 100 for n, _ in rows))

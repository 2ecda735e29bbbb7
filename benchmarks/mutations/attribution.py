"""Issue 32, attribution part: hand-made mutations of the attribution and control_effect code,
one at a time: apply, run the tests named, print which fail, restore the file byte for byte.

    cd benchmarks/mutations && python attribution.py [name prefix ...] > attribution.txt
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCORES = "src/culture_neurons/record/attribution.py"
STORE = "src/culture_neurons/record/attribution_store.py"
SELECT = "src/culture_neurons/selection/attribution.py"
EFFECT = "src/culture_neurons/ablation/control_effect.py"
T_ATTR = "tests/test_attribution.py"
T_SEL = "tests/test_attribution_selectors.py"
T_EFFECT = "tests/test_control_effect.py"
SCORE_TESTS = [T_ATTR, "-k", "probe_reference or own_reply or positions"]
NO_MASK = '{k: v for k, v in batch.items() if k != "attention_mask"}'
EXCLUSION_MEAN = 'exclusion = sums["exclusion"] / n_excl[:, None, None]'

# name -> (file, exact text, its replacement, pytest arguments)
MUTATIONS: dict[str, tuple[str, str, str, list[str]]] = {
    "M1 p(gold) / longest reply": (
        SCORES,
        "return (picked * is_gold).sum(dim=1) / n_gold",
        "return (picked * is_gold).sum(dim=1) / n_gold.max()",
        SCORE_TESTS,
    ),
    "M2a padding mask dropped from the positions' max": (
        SCORES,
        'keep = attribution_positions(batch["attention_mask"])',
        'keep = attribution_positions(torch.ones_like(batch["attention_mask"]))',
        SCORE_TESTS,
    ),
    "M2b attention mask dropped from the forward": (
        SCORES,
        "logits = _tail_logits(model, batch,",
        f"logits = _tail_logits(model, {NO_MASK},",
        SCORE_TESTS,
    ),
    "M3 reply window from the batch max": (
        SCORES,
        "is_gold = positions.unsqueeze(0) >= (width - n_gold).unsqueeze(1)",
        "is_gold = positions.unsqueeze(0) >= (width - n_gold.max())",
        SCORE_TESTS,
    ),
    "M5a control effect value as a sum": (
        EFFECT,
        "float(cultural[metric].mean() - control[metric].mean())",
        "float(cultural[metric].mean() + control[metric].mean())",
        [T_EFFECT],
    ),
    "M5b control effect bootstrap as a sum": (
        EFFECT,
        'diff = boots["cultural"] - boots["control"]',
        'diff = boots["cultural"] + boots["control"]',
        [T_EFFECT],
    ),
    "M6a exclusion means from the cultural sums": (
        STORE,
        EXCLUSION_MEAN,
        EXCLUSION_MEAN.replace('sums["exclusion"]', 'sums["cultural"]'),
        [T_ATTR, "-k", "exclusion", T_SEL],
    ),
    "M6b general exclusion from culture 0 only": (
        SELECT,
        "top_share(np.sum(np.asarray(exclusion)[scored], axis=0), share)",
        "top_share(np.asarray(exclusion)[0], share)",
        [T_SEL],
    ),
    "M7a (fix undone) a NaN exclusion row selects by position": (
        SELECT,
        "return (out & ~np.isnan(flat)).reshape(scores.shape)",
        "return out.reshape(scores.shape)",
        [T_SEL],
    ),
    "M7b (fix undone) no exclusion items gives zeros": (
        STORE,
        EXCLUSION_MEAN,
        EXCLUSION_MEAN.replace("/ n_excl[", "/ np.maximum(n_excl, 1)["),
        [T_ATTR, "-k", "exclusion"],
    ),
}


def run(name: str) -> None:
    path, old, new, tests = MUTATIONS[name]
    file = ROOT / path
    original = file.read_bytes()
    text = original.decode()
    if text.count(old) != 1:
        raise SystemExit(f"{name}: {old!r} is not once in {path}: the code moved")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    try:
        file.write_text(text.replace(old, new))
        start = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    finally:
        file.write_bytes(original)  # restored whatever happened
    lines = done.stdout.strip().splitlines()
    print(f"## {name}\n{path}: {old!r} -> {new!r}")
    seconds = time.perf_counter() - start
    print(f"rc={done.returncode} ({seconds:.0f} s) {lines[-1] if lines else ''}")
    for line in lines:
        if line.startswith(("FAILED", "ERROR")):
            print("   ", line.split(" - ")[0])
    sys.stdout.flush()


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for name in MUTATIONS:
        if not wanted or any(name.startswith(w) for w in wanted):
            run(name)

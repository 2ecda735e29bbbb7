#!/usr/bin/env bash
# Issue 32, analysis part: the hand-made mutations behind analysis_i32.txt (run from the repo root).
set -u
M="python benchmarks/mutations/mutate.py"
S=src/culture_neurons/selection/stability.py
G=src/culture_neurons/analysis/significance.py
O=src/culture_neurons/analysis/overlap.py
$M 1a-stability-M-from-counts $S "M = np.divide(pos[j, scorable]" "M = np.divide(fire[j, scorable]" tests/test_stability.py
$M 1b-stability-selector-params-dropped $S "mask[scorable] = fn(P, M, k, **params)" "mask[scorable] = fn(P, M, k)" tests/test_stability.py
$M 1c-stability-M-tokens-of-another-culture $S "M = np.divide(pos[j, scorable], t[:, None, None]" "M = np.divide(pos[j, scorable], t[::-1, None, None]" tests/test_stability.py
$M 1d-stability-lape-rho-dropped $S "mask[scorable] = fn(P, M, k, **params)" "mask[scorable] = fn(P, M, k, **{p: v for p, v in params.items() if p != 'rho'})" tests/test_stability.py
$M 2-stability-upper-bound-95th $S "np.percentile(v, [tail, 100.0 - tail])" "np.percentile(v, [tail, 95.0])" tests/test_stability.py
$M 3a-significance-one-stream-for-all-targets $G "bootstrap_weights(len(rows), n_boot, seed, target)" "bootstrap_weights(len(rows), n_boot, seed, targets[0])" tests/test_significance.py
$M 3b-metrics-target-dropped-from-seed src/culture_neurons/analysis/metrics.py "return [seed, zlib.crc32(target.encode(\"utf-8\"))]" "return [seed]" tests/test_significance.py
$M 4-significance-97.5-interval $G "tail = (100.0 - CI_LEVEL) / 2" "tail = (100.0 - 97.5) / 2" tests/test_significance.py
$M 4b-significance-ties-by-rounding $G "<= TIE_TOLERANCE" "<= 0" tests/test_significance.py
$M 5-overlap-mantel-rows-only $O "shuffled = overlap[np.ix_(perm, perm)]" "shuffled = overlap[perm]" tests/test_overlap.py
$M 6a-overlap-selector-masks-in-store-order $O "per_culture[name] = selected[[names.index(c) for c in cultures]]" "per_culture[name] = selected" tests/test_overlap.py
$M 6b-overlap-correlation-cultures-in-store-order $O "cultures = sorted(set(pairs[\"source\"]) | set(pairs[\"target\"]))" "cultures = list(dict.fromkeys([*pairs[\"source\"], *pairs[\"target\"]]))" tests/test_overlap.py
$M 6c-overlap-selector-cultures-in-first-mask-order $O 'cultures = sorted({c for _, names in masks.values() for c in names if c != "ALL"})' 'cultures = list(dict.fromkeys(c for _, names in masks.values() for c in names if c != "ALL"))' tests/test_overlap.py

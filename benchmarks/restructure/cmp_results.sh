#!/usr/bin/env bash
# cmp every file under results/summary (and, for information, every .parquet/.csv/.md/.tex/.json under results/) of two demo runs
a=$1; b=$2
echo "== results/summary: $a vs $b"
n=0; bad=0
while IFS= read -r f; do n=$((n+1)); if ! cmp -s "$a/$f" "$b/$f"; then bad=$((bad+1)); echo "DIFFERS: $f"; fi; done < <(cd $a && find results/summary -type f | sort)
extra=$(comm -13 <(cd $a && find results/summary -type f | sort) <(cd $b && find results/summary -type f | sort))
echo "summary files: $n, differing: $bad, only in $b: ${extra:-none}"
n=0; bad=0
while IFS= read -r f; do n=$((n+1)); if ! cmp -s "$a/$f" "$b/$f"; then bad=$((bad+1)); echo "differs: $f"; fi; done < <(cd $a && find results -type f \( -name '*.parquet' -o -name '*.csv' -o -name '*.md' -o -name '*.tex' \) | sort)
echo "all results tables (parquet/csv/md/tex): $n, differing: $bad"

#!/usr/bin/env bash
# Set up, run a benchmark profile and regenerate the figures and tables docs/RESULTS.md shows (docs/results/PROFILE).
#   bash scripts/benchmark.sh              # quick profile (all 10 strategies: about 2.4 h on a 2-core AMD EPYC; docs/RESULTS.md)
#   bash scripts/benchmark.sh ablation     # table sizes 4/16/48 (Table III analog), a shortlist, mixed batches (~1 h)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-quick}
out=benchmark_results/$profile
bash scripts/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false DVC_NO_ANALYTICS=1
start=$(date +%s)
.venv/bin/mgral benchmark --profile "$profile" --out "$out"
echo "benchmark $profile: $(( ($(date +%s) - start) / 60 )) min $(( ($(date +%s) - start) % 60 )) s" | tee "$out/duration.txt"
docs=docs/results/$profile
mkdir -p "$docs"
if [ "$profile" = quick ]; then
  .venv/bin/python bench/first_selections.py --bench "$out"
  cp "$out/first_selections.png" "$out/first_selections.md" "$docs/"
fi
.venv/bin/python bench/benchmark_report.py --bench "$out" --docs "$docs"
echo "figures and tables in $docs"

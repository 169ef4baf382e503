#!/usr/bin/env bash
# One GPU check, sized for one H200 in under 8 minutes: the `cuda` tests, the kernel
# benchmark (bench/bench_kernels.py), the one-launch kernel (bench/bench_fused.py) and the
# training benchmark (bench/bench_train.py --providers torch,triton,fused --gpu); a compact
# table is printed last.
#
# Runs from the repository root of a plain checkout, with the machine's own python3, torch
# and triton (no install: on the device machine nothing can be fetched).  pyproject maps
# kernels/ -> fastmlp.kernels, which a plain PYTHONPATH does not provide, so when
# `import fastmlp.kernels` fails a symlink fastmlp/kernels -> ../kernels is made for the
# run and removed at exit.
#
# Full results: bench/results/gpu-check-<date>/ (pytest log, benchmark logs and JSON); also
# copied to $OUT when that is set (the device tool brings back what is under $OUT).
#
# Usage:  bash bench/gpu_check.sh            # everything, BLOCK_G sweep included
#         bash bench/gpu_check.sh --no-sweep # skip the BLOCK_G sweep (saves ~1 minute)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-450}   # seconds for all three stages (the device call allows 600)
START=$(date +%s)
SWEEP=--sweep
[ "${1:-}" = "--no-sweep" ] && SWEEP=

STAMP=$(date -u +%Y-%m-%dT%H%M%S)
RES=bench/results/gpu-check-$STAMP
mkdir -p "$RES"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

LINK=
if ! "$PY" -c "import fastmlp.kernels" 2>/dev/null; then
  if [ ! -e fastmlp/kernels ]; then
    ln -s ../kernels fastmlp/kernels && LINK=fastmlp/kernels
    echo "gpu_check: fastmlp.kernels not installed; linked fastmlp/kernels -> ../kernels for this run"
  fi
fi
cleanup() { [ -n "$LINK" ] && rm -f "$LINK"; }
trap cleanup EXIT

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
stage_limit() {  # min(cap, time left - reserve), at least 30 s
  local cap=$1 reserve=$2 l
  l=$(( $(left) - reserve ))
  [ "$l" -gt "$cap" ] && l=$cap
  [ "$l" -lt 30 ] && l=30
  echo "$l"
}

echo "== gpu_check $STAMP: $("$PY" -c 'import torch, triton; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA", "| torch", torch.__version__, "| triton", triton.__version__)' 2>&1)"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,memory.total --format=csv 2>/dev/null | tee "$RES/nvidia-smi.txt"

# 1) the cuda tests (parallel workers when pytest-xdist is there: most of their time is compiling)
XDIST=
"$PY" -c "import xdist" 2>/dev/null && XDIST="-n 8"
T0=$(date +%s)
timeout "$(stage_limit 210 240)" "$PY" -m pytest -m cuda -q -rfEs $XDIST -p no:cacheprovider tests/ \
  > "$RES/pytest-cuda.log" 2>&1
PYTEST_RC=$?
PYTEST_S=$(( $(date +%s) - T0 ))
tail -n 15 "$RES/pytest-cuda.log"

# 2) the kernel benchmark
T0=$(date +%s)
timeout "$(stage_limit 180 90)" "$PY" bench/bench_kernels.py $SWEEP --out "$RES" > "$RES/bench_kernels.log" 2>&1
KERNELS_RC=$?
KERNELS_S=$(( $(date +%s) - T0 ))
cat "$RES/bench_kernels.log"

# 3) the one-launch kernel: the issue-4 bar at G = 2**16 and 2**20, chunking overhead
T0=$(date +%s)
timeout "$(stage_limit 150 60)" "$PY" bench/bench_fused.py --out "$RES" > "$RES/bench_fused.log" 2>&1
FUSED_RC=$?
FUSED_S=$(( $(date +%s) - T0 ))
cat "$RES/bench_fused.log"

# 4) the training benchmark (someone else's script: tolerate its absence)
T0=$(date +%s)
if [ -f bench/bench_train.py ]; then
  timeout "$(stage_limit 240 5)" "$PY" bench/bench_train.py --providers torch,triton,fused --gpu --out "$RES" \
    > "$RES/bench_train.log" 2>&1
  TRAIN_RC=$?
  tail -n 25 "$RES/bench_train.log"
else
  echo "bench/bench_train.py is not in this checkout: training benchmark not run" | tee "$RES/bench_train.log"
  TRAIN_RC=missing
fi
TRAIN_S=$(( $(date +%s) - T0 ))

# Bring the results back from the device machine (at most 8 files, 2 folders down).
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  mkdir -p "$OUT/gpu-check"
  for f in "$RES"/pytest-cuda.log "$RES"/bench_kernels.log "$RES"/bench_fused.log "$RES"/bench_train.log \
           "$RES"/kernels-*.json "$RES"/fused-*.json; do
    [ -f "$f" ] && cp "$f" "$OUT/gpu-check/"
  done
  ls "$RES"/*.json 2>/dev/null | grep -vE '/(kernels|fused)-' | head -n 1 | while read -r f; do cp "$f" "$OUT/gpu-check/"; done
fi

# Compact table, last.
"$PY" - "$RES" "$PYTEST_RC" "$PYTEST_S" "$KERNELS_RC" "$KERNELS_S" "$TRAIN_RC" "$TRAIN_S" "$FUSED_RC" "$FUSED_S" <<'EOF'
import glob, json, re, sys
res, prc, ps, krc, ks, trc, ts, frc, fs = sys.argv[1:]
print("\n================ gpu_check summary ================")
log = open(f"{res}/pytest-cuda.log", errors="replace").read()
m = re.findall(r"^=*\s*(.*(?:passed|failed|error|skipped).*?)\s*=*$", log, re.M)
print(f"pytest -m cuda      rc {prc:>3s}  {ps:>4s} s  {m[-1] if m else 'no summary (see pytest-cuda.log)'}")
files = sorted(glob.glob(f"{res}/kernels-*.json"))
if files:
    d = json.load(open(files[-1]))
    print(f"bench_kernels       rc {krc:>3s}  {ks:>4s} s  {d.get('gpu')}  G={d['G']}  copy peak {d['copy_peak_gbps']:.0f} GB/s")
    print(f"  {'kernel':18s} {'triton ms':>9s} {'torch ms':>9s} {'x':>5s} {'GB/s':>6s} {'copy%':>5s} {'regs':>4s} {'spill':>5s}")
    for r in d["rows"]:
        print(f"  {r['kernel']:18s} {r['triton']['ms']:9.4f} {r['torch_engine']['ms']:9.4f} {r['speedup']:5.1f} "
              f"{r['gbps']:6.0f} {100 * r['frac_copy']:4.0f}% {str(r['n_regs']):>4s} {str(r['n_spills']):>5s}")
    e = d["epoch_ms"]
    verdict = "meets" if d["epoch_ratio"] <= 1 / 3 else "MISSES"
    print(f"  epoch (fastmlp.train): triton {e['triton']:.3f} ms, torch {e['torch']:.3f} ms, "
          f"ratio {d['epoch_ratio']:.3f} -> {verdict} the bar <= 0.333")
    if d["rows"] and "sweep" in d["rows"][0]:
        best = {r["kernel"]: min(r["sweep"], key=lambda k: r["sweep"][k]) for r in d["rows"]}
        print("  best BLOCK_G: " + ", ".join(f"{k} {v} (rule {r['block_g']})" for (k, v), r in zip(best.items(), d["rows"])))
else:
    print(f"bench_kernels       rc {krc:>3s}  {ks:>4s} s  no JSON written (see bench_kernels.log)")
fl = [l for l in open(f"{res}/bench_fused.log", errors="replace").read().splitlines() if l.startswith("G=")]
print(f"bench_fused         rc {frc:>3s}  {fs:>4s} s  " + ("; ".join(fl) if fl else "no summary (see bench_fused.log)"))
tl = open(f"{res}/bench_train.log", errors="replace").read().strip().splitlines()
print(f"bench_train         rc {trc:>3s}  {ts:>4s} s  " + (tl[-1] if tl else "no output"))
print(f"full results: {res}/")
EOF

#!/usr/bin/env bash
# One GPU check, sized for one H200 in under 7 minutes (GPU_CHECK_BUDGET_S, default 410 s): the
# whole test suite, the fused backend against the float64 oracle, and the three GPU benchmarks.
# It prints a compact table last; its last line says whether the fused backend agrees with the
# float64 oracle.  Exit status 0 only when every stage passed; otherwise a line starting with
# "FAIL" names the stages that did not (the last line stays the agreement's verdict).
#
# Stages, in the order they run, with their time limits (each is min(cap, what the budget has
# left less a reserve for the stages after it), at least 30 s; the caps and reserves are the
# CAP_/RSV_ variables below) and what they are expected to take on an H200, from the first run
# there (shared/gpu-runs/2026-12-04):
#
#   0. set-up: versions, nvidia-smi, the fastmlp/kernels link (below).                   ~5 s
#   1. bench/agree_fused.py --gpu, IN THE BACKGROUND while stage 2 runs (it times nothing, and
#      the suite's eight workers share the GPU anyway): the lab network, 2**16 networks x 2500
#      epochs, lr 0.25 and lr linspace(0.05, 2.0); fused vs the float64 torch engine through
#      fastmlp.conditioning (which networks float32 can be held to 1e-5 on).  Two float64 runs
#      per row at ~2-4 s each (the float32 torch engine took 1.9 s per 2500 epochs at 2**16),
#      the fused kernel's compile, a float32 torch-engine run per row (a diagnostic):
#      expected 30-60 s; cap 150 s.  JSON agree-<gpu>-<date>.json.  Exit 1 when they disagree.
#   2. the whole suite: python3 -m pytest tests/ (every test, not only -m cuda), -n 8 with
#      pytest-xdist (GPU_CHECK_WORKERS=...), --timeout 120 per test with pytest-timeout (each
#      only where installed).
#      2026-12-04: `-m cuda -n 8` took 45 s (31 tests) and `-m "not cuda" -n 14` 148 s (940
#      tests, one of which hung until its 120 s timeout: --epochs 1e10 trains on a 141 GB GPU);
#      expected 130-190 s at -n 8; cap 210 s, less when that would leave the benchmarks under
#      180 s (so at most ~195 s).  Stopped with
#      SIGINT at its limit (pytest still writes what it has); -v lists each test as it ends,
#      and --durations=25 records the slowest ones to size the next run.
#   3. bench/bench_fused.py: the one-launch kernel at G = 2**16 and 2**20, 6 providers, 1 warm-up
#      and 3 repeats (2026-12-04: ~3.3 s of timed runs per repeat, the tile kernel's 2.4 s most of
#      it, plus the compiles of 4 fused variants and the per-layer kernels, most of them in
#      Triton's disk cache after stage 2): expected 30-50 s; cap 80 s.
#   4. bench/bench_kernels.py: the 9 per-layer kernels at G = 2**20 vs the torch engine, one
#      epoch through fastmlp.train (never run on a GPU yet; ~10 s of do_bench plus compiles):
#      expected ~25 s; cap 50 s.  Its BLOCK_G sweep (--sweep: 9 kernels x 6 block sizes, 54 more
#      compiles and do_bench calls, ~60 s more; cap 110 s) runs only when 190 s of the budget
#      are left here, enough for it and stage 5 (always with --sweep, never with --no-sweep): it
#      is the evidence behind the launchers' BLOCK_G rule, and the first thing to give up when
#      time is short.
#   5. bench/bench_train.py --providers torch,triton,fused,jax,func --gpu --G 1,1024,65536,1048576
#      (launch-bound and throughput ends; the CPU defaults 64..8192 add nothing on a GPU), the GPU
#      peers beside fastmlp: JAX's jit(lax.scan(vmap(value_and_grad))) on jax.devices('gpu')
#      (its compile untimed) and torch.func on CUDA, epoch-by-epoch providers over 100 epochs,
#      plus the agreement check with the torch engine (never run on a GPU yet): expected
#      40-60 s; cap 80 s.
#   6. bench/bench_cli.py --device cuda --seeds 1048576: `fastmlp train` end to end in fresh
#      processes, once for the first-use caches and twice measured (phases from summary.json,
#      the folder's size): expected ~25 s; cap 70 s.
#   7. bench/bench_stats.py --device cuda: the quantile bands of 2**20 x 2500 losses on the GPU
#      (bar 0.5 s): expected ~10 s; cap 40 s.
#   8. bench/roofline_gpu.py --measure, only when 75 s of the budget are left: the lab kernel's
#      sm_90 counts from this machine's Triton, the FP32 and MUFU pipe probes, one launch of each
#      variant at 2**20 x 2500 set against the floors (bench/README.md, "GPU roofline"):
#      expected 40-60 s; cap 70 s.
#   9. the summary (this file's last Python), and the copy to $OUT.                      ~2 s
#
# Expected in all: ~5 + max(160, 60) + 40 + 25 + 35 + 25 + 10 + 2 = ~305 s, ~365 s with the
# sweep (it runs only when 190 s are left after stage 3); at worst (every stage stopped at its
# limit, and 10 s more for each to die) ~430 s.
#
# Environment it sets for every stage: PYTHONPATH=<checkout> (no install); PYTHONUNBUFFERED=1;
# XLA_PYTHON_CLIENT_PREALLOCATE=false (the image has JAX with CUDA: a test that imports it would
# otherwise take 75% of the GPU's memory from every other process of the run).  pyproject maps
# kernels/ -> fastmlp.kernels, which a plain PYTHONPATH does not provide, so when `import
# fastmlp.kernels` fails a symlink fastmlp/kernels -> ../kernels is made for the run and removed
# at exit.  The machine's own python3 (override: PYTHON=...) with its torch, triton, numba and
# pytest plugins; nothing is installed (nothing can be fetched on the device machine).
#
# Results: bench/results/gpu-check-<UTC stamp>/ (every log and JSON, summary.txt; another parent
# folder with GPU_CHECK_RESULTS=...); copied to
# $OUT/gpu-check/ when $OUT is set (the device tool brings back at most 8 files, 2 folders down):
# summary.txt, pytest.log, agree_fused.log, the agree/kernels/fused/train JSON, and all.tar.gz
# with everything.
#
# Usage:  bash bench/gpu_check.sh              # on the H200: everything; the sweep when time allows
#         bash bench/gpu_check.sh --no-sweep   # never the BLOCK_G sweep
#         bash bench/gpu_check.sh --sweep      # always the BLOCK_G sweep
#         bash bench/gpu_check.sh --dry-run    # print the stages and their commands, run nothing
#         PYTHON=.venv/bin/python bash bench/gpu_check.sh --smoke
#                                              # no GPU: every stage at toy size on the CPU (checks
#                                              # this script and its summary; measures nothing)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
BUDGET=${GPU_CHECK_BUDGET_S:-420}
WORKERS=${GPU_CHECK_WORKERS:-8}
# Caps (s) and reserves (s left for the stages after it) of each stage, see the header.
CAP_AGREE=150
CAP_PYTEST=200 RSV_PYTEST=200
CAP_FUSED=80 RSV_FUSED=180
CAP_KERNELS=50 CAP_SWEEP=110 RSV_KERNELS=140 SWEEP_NEEDS=260
CAP_TRAIN=80 RSV_TRAIN=75
CAP_CLI=70 RSV_CLI=30
CAP_STATS=40 RSV_STATS=2
CAP_ROOF=70 ROOF_NEEDS=75
START=$(date +%s)
SWEEP=auto MODE=gpu
for arg in "$@"; do
  case "$arg" in
    --no-sweep) SWEEP=no ;;
    --sweep) SWEEP=yes ;;
    --dry-run) MODE=dry ;;
    --smoke) MODE=smoke ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "gpu_check: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

STAMP=$(date -u +%Y-%m-%dT%H%M%S)
RES=${GPU_CHECK_RESULTS:-bench/results}/gpu-check-$STAMP$([ "$MODE" = smoke ] && echo -smoke)
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export XLA_PYTHON_CLIENT_PREALLOCATE=false

left() { echo $(( BUDGET - ($(date +%s) - START) )); }
limit() {  # limit CAP RESERVE: min(cap, time left - reserve), at least 30 s
  local l=$(( $(left) - $2 ))
  [ "$l" -gt "$1" ] && l=$1
  [ "$l" -lt 30 ] && l=30
  echo "$l"
}

# What each stage runs (the smoke mode: the same scripts at toy size, on the CPU).
if [ "$MODE" = smoke ]; then
  AGREE=(bench/agree_fused.py --seeds 64 --epochs 200)
  PYTEST_SEL=(tests/test_bench.py -k "harness")
  WORKERS=2 BUDGET=${GPU_CHECK_BUDGET_S:-600}
  FUSED=(bench/bench_fused.py --smoke)
  KERNELS=(bench/bench_kernels.py --smoke)
  TRAIN=(bench/bench_train.py --quick --providers torch --G 1,64)
  CLI=(bench/bench_cli.py --device cpu --seeds 256 --epochs 50 --repeats 1)
  STATS=(bench/bench_stats.py --G 1024 --E 100)
  ROOF=(bench/roofline_gpu.py)
else
  AGREE=(bench/agree_fused.py --gpu)
  PYTEST_SEL=(tests/)
  FUSED=(bench/bench_fused.py)
  KERNELS=(bench/bench_kernels.py)
  TRAIN=(bench/bench_train.py --providers torch,triton,fused,jax,func --gpu --G 1,1024,65536,1048576)
  CLI=(bench/bench_cli.py --device cuda --seeds 1048576)
  STATS=(bench/bench_stats.py --device cuda)
  ROOF=(bench/roofline_gpu.py --measure)
fi
# One interpreter start (torch's import is seconds): the device, versions, plugins, fastmlp.kernels.
PROBE=$("$PY" - <<'PYEOF' 2>&1
import importlib.util
def has(m):
    try:
        return importlib.util.find_spec(m) is not None
    except Exception:
        return False
try:
    import numpy, torch, triton
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
    print(f"env {gpu} | torch {torch.__version__} | triton {triton.__version__} | numpy {numpy.__version__}")
except Exception as e:
    print(f"env no CUDA: import failed: {type(e).__name__}: {e}")
print("xdist", int(has("xdist")), "timeout", int(has("pytest_timeout")))
try:
    import fastmlp.kernels  # noqa: F401
    print("kernels 1")
except Exception:
    print("kernels 0")
PYEOF
)
ENV_LINE=$(sed -n 's/^env //p' <<< "$PROBE")
PYTEST=(-m pytest -v -rfEs --durations=25 -p no:cacheprovider)
grep -q '^xdist 1' <<< "$PROBE" && PYTEST+=(-n "$WORKERS")
grep -q 'timeout 1$' <<< "$PROBE" && PYTEST+=(--timeout 120)
PYTEST+=("${PYTEST_SEL[@]}")

if [ "$MODE" = dry ]; then
  echo "gpu_check --dry-run: budget ${BUDGET} s; from $ROOT with $PY; results in $RES/"
  echo "  1 (background, cap $CAP_AGREE s) $PY ${AGREE[*]} --out $RES"
  echo "  2 (cap $CAP_PYTEST s, reserve $RSV_PYTEST) $PY ${PYTEST[*]}"
  echo "  3 (cap $CAP_FUSED s, reserve $RSV_FUSED) $PY ${FUSED[*]} --out $RES"
  echo "  4 (cap $CAP_KERNELS s, $CAP_SWEEP with the sweep [--sweep: $SWEEP; auto: when $SWEEP_NEEDS s are left], reserve $RSV_KERNELS)" \
       "$PY ${KERNELS[*]} [--sweep] --out $RES"
  echo "  5 (cap $CAP_TRAIN s, reserve $RSV_TRAIN) $PY ${TRAIN[*]} --out $RES"
  echo "  6 (cap $CAP_CLI s, reserve $RSV_CLI) $PY ${CLI[*]} --out $RES"
  echo "  7 (cap $CAP_STATS s, reserve $RSV_STATS) $PY ${STATS[*]} --out $RES"
  echo "  8 (cap $CAP_ROOF s, when $ROOF_NEEDS s are left) $PY ${ROOF[*]} --out $RES"
  echo "  9 summary -> $RES/summary.txt${OUT:+, copied to $OUT/gpu-check/}"
  exit 0
fi

if [ "$MODE" = gpu ] && { [ -z "$ENV_LINE" ] || [ "${ENV_LINE#no CUDA}" != "$ENV_LINE" ]; }; then
  echo "FAIL: gpu_check: no CUDA device for $PY ($ENV_LINE); on a CPU use --smoke or --dry-run"
  exit 2
fi
mkdir -p "$RES"
LINK=
if ! grep -q '^kernels 1' <<< "$PROBE"; then
  if [ ! -e fastmlp/kernels ]; then
    ln -s ../kernels fastmlp/kernels && LINK=fastmlp/kernels
    echo "gpu_check: fastmlp.kernels not installed; linked fastmlp/kernels -> ../kernels for this run"
  fi
fi
AGREE_PID=
cleanup() {
  [ -n "$AGREE_PID" ] && kill "$AGREE_PID" 2>/dev/null
  [ -n "$LINK" ] && rm -f "$LINK"
}
trap cleanup EXIT

echo "== gpu_check $STAMP ($MODE, budget ${BUDGET} s): $ENV_LINE" | tee "$RES/env.txt"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used,memory.total --format=csv 2>/dev/null \
  | tee -a "$RES/env.txt"

declare -A RC SECS LIM
stage() {  # stage NAME LIMIT LOG COMMAND...: run under timeout, record rc and seconds
  local name=$1 lim=$2 log=$3 t0
  shift 3
  t0=$(date +%s)
  echo "-- $name (limit $lim s): $*"
  timeout -s INT -k 10 "$lim" "$@" > "$log" 2>&1
  RC[$name]=$?
  SECS[$name]=$(( $(date +%s) - t0 ))
  LIM[$name]=$lim
}

# 1) the agreement check, in the background (SIGTERM: a background job of a script ignores SIGINT).
LIM[agree_fused]=$(limit "$CAP_AGREE" 0)
echo "-- agree_fused (background, limit ${LIM[agree_fused]} s): $PY ${AGREE[*]}"
( t0=$(date +%s)
  timeout -s TERM -k 10 "${LIM[agree_fused]}" "$PY" "${AGREE[@]}" --out "$RES" > "$RES/agree_fused.log" 2>&1
  echo "$? $(( $(date +%s) - t0 ))" > "$RES/agree_fused.rc" ) &
AGREE_PID=$!

# 2) the whole suite
stage pytest "$(limit "$CAP_PYTEST" "$RSV_PYTEST")" "$RES/pytest.log" "$PY" "${PYTEST[@]}"
tail -n 5 "$RES/pytest.log"

wait "$AGREE_PID"
AGREE_PID=
read -r RC[agree_fused] SECS[agree_fused] < "$RES/agree_fused.rc" 2>/dev/null || RC[agree_fused]=missing
tail -n 1 "$RES/agree_fused.log"

# 3) the one-launch kernel: the issue-4 bar at G = 2**16 and 2**20, chunking overhead
stage bench_fused "$(limit "$CAP_FUSED" "$RSV_FUSED")" "$RES/bench_fused.log" "$PY" "${FUSED[@]}" --out "$RES"
tail -n 3 "$RES/bench_fused.log"

# 4) the per-layer kernels (+ the BLOCK_G sweep when there is time for it)
if [ "$SWEEP" = yes ] || { [ "$SWEEP" = auto ] && [ "$(left)" -ge "$SWEEP_NEEDS" ]; }; then
  stage bench_kernels "$(limit "$CAP_SWEEP" "$RSV_KERNELS")" "$RES/bench_kernels.log" "$PY" "${KERNELS[@]}" --sweep --out "$RES"
else
  stage bench_kernels "$(limit "$CAP_KERNELS" "$RSV_KERNELS")" "$RES/bench_kernels.log" "$PY" "${KERNELS[@]}" --out "$RES"
fi
tail -n 3 "$RES/bench_kernels.log"

# 5) the training benchmark
stage bench_train "$(limit "$CAP_TRAIN" "$RSV_TRAIN")" "$RES/bench_train.log" "$PY" "${TRAIN[@]}" --out "$RES"
tail -n 3 "$RES/bench_train.log"

# 6) the command line end to end, 7) the statistics on the GPU
stage bench_cli "$(limit "$CAP_CLI" "$RSV_CLI")" "$RES/bench_cli.log" "$PY" "${CLI[@]}" --out "$RES"
tail -n 3 "$RES/bench_cli.log"
stage bench_stats "$(limit "$CAP_STATS" "$RSV_STATS")" "$RES/bench_stats.log" "$PY" "${STATS[@]}" --out "$RES"
tail -n 3 "$RES/bench_stats.log"

# 8) the GPU roofline, measured, when there is time for it
ROOF_STAGE=
if [ "$(left)" -ge "$ROOF_NEEDS" ]; then
  stage roofline_gpu "$(limit "$CAP_ROOF" 2)" "$RES/roofline_gpu.log" "$PY" "${ROOF[@]}" --out "$RES"
  tail -n 3 "$RES/roofline_gpu.log"
  ROOF_STAGE=roofline_gpu
fi

# 9) the summary, last
ARGS=()
for s in pytest agree_fused bench_fused bench_kernels bench_train bench_cli bench_stats $ROOF_STAGE; do
  ARGS+=("$s" "${RC[$s]:-missing}" "${SECS[$s]:-0}" "${LIM[$s]:-0}")
done
"$PY" - "$RES" "$(( $(date +%s) - START ))" "$BUDGET" "${ARGS[@]}" <<'EOF' | tee "$RES/summary.txt"
import glob, json, re, sys

res, total, budget, rest = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
stages = {rest[i]: dict(rc=rest[i + 1], s=rest[i + 2], limit=rest[i + 3]) for i in range(0, len(rest), 4)}


def read(name):
    try:
        return open(f"{res}/{name}", errors="replace").read()
    except OSError:
        return ""


def newest(pattern):
    files = sorted(glob.glob(f"{res}/{pattern}"))
    try:
        return json.load(open(files[-1])) if files else None
    except (OSError, ValueError):
        return None


def rc_text(st):
    return {"0": "ok", "124": "TIMEOUT", "137": "KILLED"}.get(st["rc"], f"rc {st['rc']}")


def line(name, text):
    st = stages[name]
    print(f"{name:14s} {rc_text(st):>8s} {st['s']:>4s} s (limit {st['limit']:>3s})  {text}")


print("\n================ gpu_check summary ================")
m = re.findall(r"^=+ (.*(?:passed|failed|error|skipped|no tests ran).*?) =+$", read("pytest.log"), re.M)
line("pytest", m[-1] if m else "no summary line (see pytest.log)")
fl = [l for l in read("bench_fused.log").splitlines() if l.startswith("G=")]
line("bench_fused", "; ".join(fl) if fl else "no summary (see bench_fused.log)")
d = newest("kernels-*.json")
if d:
    verdict = "meets" if d["epoch_ratio"] <= 1 / 3 else "MISSES"
    e = d["epoch_ms"]
    line("bench_kernels", f"{d.get('gpu')} G={d['G']}: epoch triton {e['triton']:.3f} ms, torch {e['torch']:.3f} ms, "
                          f"ratio {d['epoch_ratio']:.3f} ({verdict} the bar <= 0.333); copy peak {d['copy_peak_gbps']:.0f} GB/s")
    print(f"  {'kernel':18s} {'triton ms':>9s} {'torch ms':>9s} {'x':>5s} {'GB/s':>6s} {'copy%':>5s} {'regs':>4s} {'spill':>5s}")
    for r in d["rows"]:
        print(f"  {r['kernel']:18s} {r['triton']['ms']:9.4f} {r['torch_engine']['ms']:9.4f} {r['speedup']:5.1f} "
              f"{r['gbps']:6.0f} {100 * r['frac_copy']:4.0f}% {str(r['n_regs']):>4s} {str(r['n_spills']):>5s}")
    if d["rows"] and "sweep" in d["rows"][0]:
        print("  best BLOCK_G: " + ", ".join(
            f"{r['kernel']} {min(r['sweep'], key=lambda k: r['sweep'][k])} (rule {r['block_g']})" for r in d["rows"]))
else:
    line("bench_kernels", "no JSON written (see bench_kernels.log)")
d = newest("train-*.json")
if d:
    by = {}
    for r in d["rows"]:
        by.setdefault(r["G"], []).append(f"{r['provider']} {r['net_epochs_per_s']:.3g}")
    bad = [c["provider"] for c in d.get("agreement", []) if not c["ok"]]
    line("bench_train", "net-epochs/s: " + "; ".join(f"G={G}: " + ", ".join(v) for G, v in sorted(by.items()))
         + (f"; agreement with torch FAILS for {bad}" if bad else "; agreement with torch ok"))
else:
    line("bench_train", "no JSON written (see bench_train.log)")

for name in ("bench_cli", "bench_stats", "roofline_gpu"):
    if name not in stages:
        continue
    tail = [l for l in read(f"{name}.log").strip().splitlines() if not l.startswith("wrote ")]
    line(name, tail[-1] if tail else f"no output (see {name}.log)")

agree = newest("agree-*.json")
last = read("agree_fused.log").strip().splitlines()
if agree:
    line("agree_fused", f"{agree['G']} networks x {agree['epochs']} epochs, rtol {agree['rtol']:g}")
    print(f"  {'row':24s} {'stable':>6s} {'final held':>10s} {'horizon':>7s} {'conv oracle':>11s} {'fused':>7s} "
          f"{'d count':>13s} {'med|d fin|':>10s} {'max|d fin|':>10s} {'off <hor.':>9s} {'off fin.':>8s} "
          f"{'torch32 fails':>13s}  ok")
    for r in agree["rows"]:
        print(f"  {r['lr']:24s} {r['stable']:6d} {r['final_held']:10d} {r['horizon_median']:7d} "
              f"{100 * r['converged_oracle']:10.2f}% {100 * r['converged_fused']:6.2f}% "
              f"{r['converged_diff_count']:+5d} (+-{r['converged_allowed_count']:4.1f}) "
              f"{r['final_diff_median'] or 0:10.1e} {r['final_diff_max'] or 0:10.1e} "
              f"{r['curve_off_before_horizon']:9d} {r['final_off_held']:8d} {str(r.get('peer_failing', '-')):>13s}  "
              f"{'yes' if r['ok'] else 'NO'}")
    verdict = agree["verdict"]
else:
    line("agree_fused", last[-1] if last else "no output")
    verdict = (f"FAIL: fused vs the float64 oracle NOT CHECKED (agree_fused {rc_text(stages['agree_fused'])}; "
               f"see agree_fused.log)")
failed = [n for n, st in stages.items() if st["rc"] != "0"]
if agree and not agree["ok"] and "agree_fused" not in failed:
    failed.append("agree_fused")
print(f"full results: {res}/  ({total} s of the {budget} s budget)")
print(f"FAIL: gpu_check: {', '.join(failed)} did not pass" if failed else "gpu_check: every stage passed")
print(verdict)
sys.exit(1 if failed or not agree or not agree["ok"] else 0)
EOF
STATUS=${PIPESTATUS[0]}

# Bring the results back from the device machine (at most 8 files, 2 folders down).
if [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  mkdir -p "$OUT/gpu-check"
  for f in "$RES/summary.txt" "$RES/pytest.log" "$RES/agree_fused.log"; do
    [ -f "$f" ] && cp "$f" "$OUT/gpu-check/"
  done
  for p in agree kernels fused train; do
    f=$(ls "$RES"/$p-*.json 2>/dev/null | tail -n 1)
    [ -n "$f" ] && cp "$f" "$OUT/gpu-check/"
  done
  tar -czf "$OUT/gpu-check/all.tar.gz" -C "$(dirname "$RES")" "$(basename "$RES")"
fi
exit "$STATUS"

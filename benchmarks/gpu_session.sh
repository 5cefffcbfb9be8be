#!/usr/bin/env bash
# Everything a GPU session has to prove, in one call of the device tool (about 10 minutes on an H100/H200):
#   run: bash benchmarks/gpu_session.sh        (writes under $OUT, or ./gpu_out without it)
# Builds the extension against the machine's CUDA torch, runs the CUDA tests (op, graph-captured chains, the
# methods' speed options), then bench_ops and bench_chains. Each stage has its own time limit so that a slow one
# leaves the others' results; record the numbers in benchmarks/RESULTS.md (device, torch, date, command).
set -uo pipefail
out="${OUT:-gpu_out}"
mkdir -p "$out"
cd "$(dirname "$0")/.."
{ nvidia-smi; python3 -c "import torch; print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name())"; } \
  > "$out/device.txt" 2>&1
stage() {  # stage NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "$name: exit $? in $((SECONDS - start)) s" | tee -a "$out/stages.txt"
}
stage install 240 pip install --no-build-isolation --no-deps -e .
stage cuda_tests 180 python3 -m pytest -q -x -p no:cacheprovider tests/test_ops.py tests/test_samplers.py \
  tests/test_method_speed.py tests/test_accel.py -k "cuda or graph or speed or compile"
stage bench_ops 60 python3 benchmarks/bench_ops.py
stage bench_chains 300 python3 benchmarks/bench_chains.py --json "$out/bench_chains.json"
tail -n 3 "$out"/*.log

#!/usr/bin/env bash
# What a GPU session has to prove, in one call of the device tool (one call may run 600 s; the stage limits add up to
# 570 s, so keep timeout_s at 600):
#   bash benchmarks/gpu_session.sh                          all stages, logs under $OUT (./gpu_out without it)
#   bash benchmarks/gpu_session.sh install bench_chains     only these stages (a second call, if the first ran out)
# Stages: install (builds the extension against the machine's CUDA torch), cuda_tests (the op, graph-captured chains,
# the methods' speed options), bench_ops, bench_chains (prints each row as it finishes, so a stage cut at its limit
# keeps the rows it reached). Record the numbers in benchmarks/RESULTS.md (device, torch, date, command).
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
stages="${*:-install cuda_tests bench_ops bench_chains}"
for name in $stages; do
  case $name in
    install) stage install 180 pip install --no-build-isolation --no-deps -e . ;;
    cuda_tests) stage cuda_tests 120 python3 -m pytest -q -x -p no:cacheprovider tests/test_ops.py \
                  tests/test_samplers.py tests/test_method_speed.py tests/test_accel.py -k "cuda or graph or speed or compile" ;;
    bench_ops) stage bench_ops 40 python3 benchmarks/bench_ops.py ;;
    bench_chains) stage bench_chains 230 env PYTHONUNBUFFERED=1 python3 benchmarks/bench_chains.py \
                    --json "$out/bench_chains.json" ;;
    *) echo "unknown stage $name (install, cuda_tests, bench_ops, bench_chains)" | tee -a "$out/stages.txt" ;;
  esac
done
tail -n 3 "$out"/*.log

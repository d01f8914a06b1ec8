#!/usr/bin/env bash
# The checks that need a GPU, in one run, for a machine with CUDA:
#   bash benchmarks/gpu_check.sh [folder for the logs]
# 1. the tests marked cuda (tests/test_cuda.py: float16 autocast + GradScaler,
#    resume with CUDA RNG state, NCCL DDP + SyncBatchNorm under torchrun, exact
#    Recall@K on the GPU), then the CPU suite, with the machine's torch;
# 2. the demo trained on the GPU with mixed precision;
# 3. the benchmarks on the GPU: evaluation (ours on the GPU against the
#    authors' CPU method), training-step throughput, message passing,
#    pseudo_test graphs and refinement.
# Each part has its own time limit and log; a failing part does not stop the others.
set -uo pipefail
out=${1:-gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
status=0

part() {  # part NAME SECONDS COMMAND...: run with a limit, log to $out/NAME.log
    local name=$1 limit=$2
    shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    local code=$?
    echo "$name: exit $code in $((SECONDS - started)) s" | tee -a "$out/summary.txt"
    [ "$code" -eq 0 ] || status=1
}

{ nvidia-smi -L; python3 -c "import sys, torch, torchvision; print(sys.version.split()[0], torch.__version__,
torchvision.__version__, torch.cuda.get_device_name())"; } >"$out/summary.txt" 2>&1

part cuda_tests 150 python3 -m pytest -q -p no:cacheprovider -rs -n 0 -m cuda
part suite 240 python3 -m pytest -q -p no:cacheprovider -rf -n 8 -m "not cuda"
part demo 120 bash -c "python3 train.py --device cuda --is_apex 1 --output_dir /tmp/gpu_check_runs \
    && cat /tmp/gpu_check_runs/*/summary.json"
part train_step 90 python3 -m benchmarks.train_step --config config/config_cub_train.yaml --device cuda
part evaluation 150 python3 -m benchmarks.evaluation --device cuda --repeats 1 --no-nmi
part mpn 60 python3 -m benchmarks.mpn --device cuda
part pseudo_test 150 python3 -m benchmarks.pseudo_test --device cuda --sizes cub sop
exit $status

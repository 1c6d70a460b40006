#!/bin/bash
# before (e0ef834, /work/m14) and after (main) profile figures, then the bench suites, one thread
cd /work/measure/bench
PY=/work/main/.venv/bin/python
export OMP_NUM_THREADS=1
for rep in 1 2; do
for v in before after; do
  if [ $v = before ]; then PP=/work/m14; else PP=/work/main; fi
  PYTHONPATH=$PP $PY -m lthgan.cli profile --model torchvision.models:resnet18 --input-shape 8,3,64,64 --steps 10 --warmup 2 --json > resnet18-$v-$rep.json 2>resnet18-$v-$rep.err
  PYTHONPATH=$PP $PY -m lthgan.cli profile --gan sngan --preset quick --steps 5 --json > sngan-$v-$rep.json 2>sngan-$v-$rep.err
  PYTHONPATH=$PP $PY -m lthgan.cli profile --gan cyclegan --preset quick --steps 5 --json > cyclegan-$v-$rep.json 2>cyclegan-$v-$rep.err
done; done
cd /work/main && PYTHONPATH=/work/main $PY -m pytest -q -p no:cacheprovider bench/test_bench_resnet.py bench/test_bench_penalty.py bench/test_bench_step.py bench/test_bench_topk.py --bench-threads 1 --benchmark-json=/work/measure/bench/run.json > /work/measure/bench/bench.log 2>&1
PYTHONPATH=/work/main $PY bench/ratios.py /work/measure/bench/run.json > /work/measure/bench/ratios.md 2>&1
echo done > /work/measure/bench/DONE

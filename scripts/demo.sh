#!/usr/bin/env bash
# featscope demo: every step is a plain CLI call you can run yourself.
set -euo pipefail
demo_dir=${1:-demo-data}
fs=".venv/bin/featscope"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Generate the synthetic shapes data set (deterministic) and register it"
$fs dataset synth "$demo_dir/synth" --scenes 120 --per-class 20 --size 128
$fs dataset list

step "2. Register two backbones"
# No weights can be downloaded here, so the demo compares two untrained ResNet-18s. With real weights:
#   featscope backbone add torchvision:resnet50 --weights resnet50-11ad3fa6.pth --name cls
#   featscope backbone add torchvision-det:fasterrcnn_resnet50_fpn --weights fasterrcnn_resnet50_fpn_coco-258fb6c6.pth --name det
$fs backbone add torchvision:resnet18 --random-init --seed 0 --name r18-seed0
$fs backbone add torchvision:resnet18 --random-init --seed 1 --name r18-seed1
$fs backbone list
$fs backbone layers r18-seed0

step "3. Extract Conv5 (avg) and Conv4 (grid2) embeddings of the single-object images, FAISS-indexed"
for bb in r18-seed0 r18-seed1; do
  $fs extract --backbone "$bb" --dataset synth-objects --tap conv5 --tap conv4 --pooling avg --pooling grid2
done

step "4. Again: everything is a cache hit now"
$fs extract --backbone r18-seed0 --dataset synth-objects --tap conv5 --pooling avg

step "5. The cached embedding sets"
$fs embeddings list

step "6. Nearest neighbours of one image in each backbone's Conv5 space"
$fs dataset images synth-objects --limit 3
image=$($fs dataset images synth-objects --limit 1 --json | .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)[0]['id'])")
sets=$($fs embeddings list --dataset synth-objects --json | .venv/bin/python -c "import json,sys; print(' '.join(str(e['id']) for e in json.load(sys.stdin) if e['tap']=='layer4' and e['pooling']=='avg'))")
for es in $sets; do
  $fs neighbours "$es" "$image" -k 5
done
step "7. Analyses (cached like embeddings): co-membership curve, contrasting pairs, probes, CKA"
set -- $sets
$fs analyze comembership "$1" "$2" --seed 0 --seed 1
$fs analyze contrast "$1" "$2" --n-pairs 5
$fs analyze agreement "$1" "$2" --n-worst 5
$fs analyze similarity "$1" "$2"
$fs analyze probes --dataset synth-objects --backbone r18-seed0 --backbone r18-seed1
$fs analyze cka-matrix --a r18-seed0 --b r18-seed1 --dataset synth-objects
$fs analyze project "$1" "$2" --method tsne --format csv --out "$demo_dir/tsne.csv"
printf '\nDone. State is in %s (catalog.sqlite, artifacts/).\n' "${FEATSCOPE_DATA_DIR:-featscope-data}"

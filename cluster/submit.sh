#!/usr/bin/env bash
# The plain `ray job submit` equivalent of kuberay-job.yaml, for a cluster started with
# `ray up cluster/ray-cluster.yaml` (or any Ray cluster whose dashboard you can reach).
#
#   RAY_ADDRESS=http://<head>:8265 cluster/submit.sh
#
# Scheduled without Kubernetes: a crontab line on a machine that reaches the head,
#   0 2 * * * RAY_ADDRESS=http://head:8265 /opt/tilewise/cluster/submit.sh >> /var/log/tilewise.log 2>&1
# The exit status is tilewise's: 0 every scene done, 3 some scenes failed, 1 the run failed.
set -euo pipefail

: "${RAY_ADDRESS:?set RAY_ADDRESS to the Ray dashboard, e.g. http://head:8265}"
SCENES="${SCENES:-s3://archive/scenes/}"
MASKS="${MASKS:-s3://archive/masks}"
WEIGHTS="${WEIGHTS:-/models/model.pt}"

exec ray job submit --address "$RAY_ADDRESS" --submission-id "tilewise-batch-$(date -u +%Y%m%dT%H%M%S)" -- \
  tilewise batch "$SCENES" --out "$MASKS" --weights "$WEIGHTS" \
  --num-workers 2 --gpus-per-worker 1 --readers 16 --retries 2 --stall-timeout 1800 --no-progress

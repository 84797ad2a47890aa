#!/bin/sh
# Entry point of the fairforget images: refuse example or empty secrets, run the command (by default
# `mlflow run . ...`), then, when the stack gives a DVC remote, version the data the run used there.
#
#   Every variable named *PASSWORD*, *SECRET* or *TOKEN* (MLFLOW_TRACKING_PASSWORD, AWS_SECRET_ACCESS_KEY,
#   RAY_AUTH_TOKEN, ...) must be non-empty and differ from every secret of docker/.env.example (check_secrets.py,
#   beside this script); otherwise the container stops with one line naming the variable (status 78).
#
#   DVC_REMOTE_URL    e.g. s3://dvc/fairforget (empty: no DVC remote, nothing is pushed)
#   DVC_ENDPOINT_URL  e.g. http://minio:9000 (an S3-compatible endpoint such as MinIO)
#   AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: the remote's credentials (from docker/.env through compose)
#
# The data folder /app/data links to /app/workspace/data: the workspace (a volume in docker/docker-compose.yml) is
# the data's DVC project, and holds the deletion ledger and the data's lock beside the data, so a recreated container
# keeps them. The image holds no .git, so DVC runs without an SCM (core.no_scm); the remote settings go to the
# workspace's .dvc/config.local.
set -eu

python "$(dirname "$0")/check_secrets.py"

workspace=$(dirname "$(readlink -f data)")
if [ ! -d "$workspace/.dvc" ]; then  # a volume made before the workspace was a DVC project
    (cd "$workspace" && python -m dvc init --no-scm --quiet)
fi
# the image holds no .git: a workspace that is the image's own folder (no volume) carries the project's .dvc/config,
# which expects one, so DVC is told once more to run without an SCM
(cd "$workspace" && python -m dvc config --local core.no_scm true)
if [ -n "${DVC_REMOTE_URL:-}" ]; then
    (cd "$workspace" && python -m dvc remote add --local --force --default stack "$DVC_REMOTE_URL")
    if [ -n "${DVC_ENDPOINT_URL:-}" ]; then
        (cd "$workspace" && python -m dvc remote modify --local stack endpointurl "$DVC_ENDPOINT_URL")
    fi
fi

if [ -z "${DVC_REMOTE_URL:-}" ]; then
    exec "$@"  # the command becomes PID 1 and gets the container's signals (ray start --block, ...)
fi

"$@"
if [ -f data/manifest.csv ]; then
    # `dvc add` again so data.dvc describes the data folder as it is now, then upload it (and the ledger, which a
    # served deletion request tracks beside it)
    cd "$workspace"
    python -m dvc add --quiet data
    python -m dvc push
    echo "dvc: data pushed to $DVC_REMOTE_URL ($(grep -m1 'md5:' data.dvc | tr -d ' -'))"
fi

"""Give the pipeline its own MLflow user: the one-shot service ``mlflow-users`` of docker/docker-compose.yml.

    python mlflow_users.py --experiment fairforget-fashion_mnist --model fairforget-classifier

As the admin (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD) on the basic-auth server at MLFLOW_TRACKING_URI:
  1. create the user MLFLOW_PIPELINE_USER with MLFLOW_PIPELINE_PASSWORD, or set an existing one's password to it (so
     a new password in docker/.env takes effect on the next `up`), and make sure it is not an admin;
  2. create each experiment and registered model the pipeline writes to, owned by the admin, unless it exists (so no
     other user can claim the names first);
  3. grant the pipeline user EDIT on each: it creates runs, logs metrics and artifacts, registers versions and moves
     aliases; it cannot delete them, change permissions or manage users. Every other logged-in user reads them
     (``default_permission = READ`` in basic_auth.ini); anonymous requests get 401.
Idempotent: rerun it after any change. A problem ends it with one line on stderr and status 1.

Permissions go through MLflow 3.17's per-user grant API (``/api/3.0/mlflow/users/permissions/grant``, resource types
``experiment`` and ``registered_model``), which replaced the 2.x ``experiments/permissions/create`` endpoints.
"""

from __future__ import annotations

import argparse
import os
import sys

EDIT = "EDIT"


def _is(error: Exception, code: str) -> bool:
    return getattr(error, "error_code", None) == code


def ensure_user(auth, username: str, password: str) -> str:
    """Create ``username`` with ``password``, or reset its password; never an admin. Returns what was done."""
    from mlflow.exceptions import MlflowException

    try:
        user = auth.get_user(username)
    except MlflowException as error:
        if not _is(error, "RESOURCE_DOES_NOT_EXIST"):
            raise
        auth.create_user(username, password)
        return f"created user {username}"
    auth.update_user_password(username, password)
    if user.is_admin:
        auth.update_user_admin(username, False)
        return f"user {username} exists: password set, admin rights removed"
    return f"user {username} exists: password set"


def grant_exactly(auth, username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Leave ``username`` exactly one explicit grant of ``permission`` on the resource (replacing e.g. MANAGE)."""
    from mlflow.exceptions import MlflowException

    try:
        auth.grant_user_permission(username, resource_type, resource_id, permission)
    except MlflowException as error:
        if not _is(error, "RESOURCE_ALREADY_EXISTS"):
            raise
        auth.revoke_user_permission(username, resource_type, resource_id)
        auth.grant_user_permission(username, resource_type, resource_id, permission)


def ensure_experiment(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return client.create_experiment(name)
    if experiment.lifecycle_stage == "deleted":
        client.restore_experiment(experiment.experiment_id)
    return experiment.experiment_id


def ensure_registered_model(client, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as error:
        if not _is(error, "RESOURCE_DOES_NOT_EXIST"):
            raise
        client.create_registered_model(name, description="fairforget: the gated SISA classifier")


def check_users(admin: str, username: str, password: str) -> None:
    """Refuse a missing pipeline login, or the admin as the pipeline's user (before any request)."""
    if not username or not password:
        raise ValueError("MLFLOW_PIPELINE_USER and MLFLOW_PIPELINE_PASSWORD must be set (docker/.env)")
    if username == admin:
        raise ValueError(f"MLFLOW_PIPELINE_USER is the admin '{admin}': give the pipeline a user of its own "
                         "in docker/.env")


def set_up(tracking_uri: str, admin: str, username: str, password: str, experiments: list[str],
           models: list[str]) -> list[str]:
    """Steps 1-3 of the module docstring; returns one line per action."""
    from mlflow import MlflowClient
    from mlflow.server import get_app_client

    check_users(admin, username, password)
    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    done = [ensure_user(auth, username, password)]
    for name in experiments:
        experiment_id = ensure_experiment(client, name)
        grant_exactly(auth, username, "experiment", experiment_id, EDIT)
        done.append(f"experiment {name} (id {experiment_id}): {username} may {EDIT}")
    for name in models:
        ensure_registered_model(client, name)
        grant_exactly(auth, username, "registered_model", name, EDIT)
        done.append(f"registered model {name}: {username} may {EDIT}")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", action="append", default=[], help="an experiment the pipeline writes to")
    parser.add_argument("--model", action="append", default=[], help="a registered model the pipeline writes to")
    args = parser.parse_args(argv)
    users = (os.environ.get("MLFLOW_TRACKING_USERNAME", ""), os.environ.get("MLFLOW_PIPELINE_USER", ""),
             os.environ.get("MLFLOW_PIPELINE_PASSWORD", ""))
    try:
        check_users(*users)  # before importing MLflow (seconds)
    except ValueError as error:
        print(f"mlflow-users: {error}", file=sys.stderr)
        return 1
    from mlflow.exceptions import MlflowException

    try:
        done = set_up(os.environ.get("MLFLOW_TRACKING_URI", ""), *users, args.experiment, args.model)
    except (MlflowException, ValueError) as error:
        message = error.message if isinstance(error, MlflowException) else str(error)
        print(f"mlflow-users: {' '.join(message.split())}", file=sys.stderr)
        return 1
    for line in done:
        print(f"mlflow-users: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

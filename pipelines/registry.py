"""Logging the aggregated classifier (pyfunc + ONNX), the registry gate, and promotion.

``log_classifier`` logs the ensemble as an MLflow pyfunc (model from code, TorchScript inside: loading needs no
fairforget code) and as an ONNX model, and checks on the given images that onnxruntime reproduces the pyfunc's
probabilities within ``ONNX_TOLERANCE`` (metric ``export/onnx_max_abs_diff``; a larger gap raises).
``register_if_passed`` applies the gate: a new version with alias ``candidate`` and its audit tags, or no version
and the run tagged ``gate=rejected`` with the reason.
"""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import mlflow
import numpy as np
import onnx
import torch

import fairforget.components as components_package
from fairforget.components.approval import SIGNATURE_TAG, gate_key, signature, signature_problem
from fairforget.components.export import EnsembleModule, export_onnx, export_torchscript, onnx_predict
from fairforget.components.gate import (
    GATE_TAG,
    OPEN_DELETION_TAG,
    PASSED,
    REJECTED,
    GateDecision,
    RegistryPolicy,
    check_promotable,
)
from fairforget.components.training import images_to_tensor

log = logging.getLogger("fairforget")
ONNX_TOLERANCE = 1e-4
PYFUNC_CODE = Path(components_package.__file__).resolve().parent / "ensemble_pyfunc.py"
CANDIDATE, CHAMPION = "candidate", "champion"


@dataclass(frozen=True)
class LoggedClassifier:
    model_uri: str
    onnx_uri: str
    onnx_max_abs_diff: float


def log_classifier(ensemble, check_images: np.ndarray, name: str = "classifier") -> LoggedClassifier:
    """Log ``ensemble`` (a ``ShardEnsemble``) as pyfunc and ONNX in the active run; verify ONNX on ``check_images``.

    ``check_images``: uint8 (N, H, W, C), e.g. the test split. Raises ``RuntimeError`` if ONNX and pyfunc differ by
    more than ``ONNX_TOLERANCE``.
    """
    module = EnsembleModule(ensemble.models, ensemble.aggregation)
    inputs = images_to_tensor(check_images).numpy().astype(np.float32)
    example = torch.from_numpy(inputs[:4])
    with tempfile.TemporaryDirectory(prefix="fairforget-export-") as tmp:
        script_path = export_torchscript(module, example, Path(tmp) / "ensemble.pt")
        onnx_path = export_onnx(module, example, Path(tmp) / "ensemble.onnx")
        with torch.no_grad():
            reference = module(torch.from_numpy(inputs[:8])).numpy()
        signature = mlflow.models.infer_signature(inputs[:8], reference)
        info = mlflow.pyfunc.log_model(name=name, python_model=str(PYFUNC_CODE),
                                       artifacts={"ensemble": str(script_path)}, signature=signature,
                                       input_example=inputs[:2], pip_requirements=[f"torch=={torch.__version__.split('+')[0]}",
                                                                                   f"mlflow=={mlflow.__version__}"])
        onnx_info = mlflow.onnx.log_model(onnx.load(str(onnx_path)), name=f"{name}_onnx", signature=signature)
        pyfunc = mlflow.pyfunc.load_model(info.model_uri)
        from_pyfunc = np.asarray(pyfunc.predict(inputs))
        from_onnx = onnx_predict(onnx_path, inputs)
    diff = float(np.max(np.abs(from_pyfunc - from_onnx)))
    mlflow.log_metric("export/onnx_max_abs_diff", diff)
    if not diff <= ONNX_TOLERANCE:
        raise RuntimeError(f"the ONNX export differs from the pyfunc by {diff:.2e} > {ONNX_TOLERANCE}: "
                           "the export is wrong, do not deploy it")
    return LoggedClassifier(info.model_uri, onnx_info.model_uri, diff)


def register_if_passed(logged: LoggedClassifier, decision: GateDecision, model_name: str, tags: Mapping[str, str],
                       model_card: str | None = None) -> str | None:
    """Register ``logged`` as ``model_name`` with alias ``candidate`` when ``decision`` passed; return the version.

    Otherwise tag the active run ``gate=rejected`` and ``gate_reason``, print one line, and return None.
    """
    if not decision.passed:
        mlflow.set_tags({GATE_TAG: REJECTED, "gate_reason": decision.reason})
        print(f"gate: rejected, nothing registered: {decision.reason}")
        return None
    client = mlflow.MlflowClient()
    run_id = mlflow.active_run().info.run_id
    earlier = registered_by_run(model_name, run_id)
    # a resumed run that had registered before it died: the same version, never a second; when it died before
    # the version got its tags and alias, they are completed below
    if earlier is not None and client.get_model_version(model_name, earlier).tags.get(GATE_TAG) == PASSED:
        print(f"gate: passed; {model_name} version {earlier} was already registered by this run")
        return earlier
    version = earlier or mlflow.register_model(logged.model_uri, model_name, tags={"run_id": run_id}).version
    all_tags = {GATE_TAG: PASSED, "onnx_uri": logged.onnx_uri, "onnx_max_abs_diff": f"{logged.onnx_max_abs_diff:.3e}",
                **{k: str(v) for k, v in tags.items()}}
    set_signed_tags(model_name, version, all_tags, fresh=True)
    if model_card:
        client.update_model_version(model_name, version, description=model_card)
    client.set_registered_model_alias(model_name, CANDIDATE, version)
    mlflow.set_tags({GATE_TAG: PASSED, "registered_version": f"{model_name}/{version}"})
    print(f"gate: passed; registered {model_name} version {version} with alias '{CANDIDATE}'")
    return str(version)


def set_signed_tags(model_name: str, version: str | int, tags: Mapping[str, str], *, fresh: bool = False) -> bool:
    """Write ``tags`` on the version and sign its decision tags again (``components.approval``), when it was
    validly signed before (or ``fresh``: the gate registering it); a version whose signature was already broken
    gets the tags but stays unsigned, so no later writer can launder a forged tag. Returns whether it is signed."""
    client = mlflow.MlflowClient()
    key = gate_key()
    before = client.get_model_version(model_name, str(version)).tags
    trusted = fresh or signature_problem(model_name, version, before, key) is None
    for name, value in tags.items():
        client.set_model_version_tag(model_name, str(version), name, str(value))
    if not trusted:
        log.warning("%s version %s: tags %s written, but its signature was already invalid: left unsigned",
                    model_name, version, sorted(tags))
        return False
    after = client.get_model_version(model_name, str(version)).tags
    client.set_model_version_tag(model_name, str(version), SIGNATURE_TAG, signature(model_name, version, after, key))
    return True


def registered_by_run(model_name: str, run_id: str) -> str | None:
    """The version of ``model_name`` that run ``run_id`` registered, if any."""
    client = mlflow.MlflowClient()
    try:
        versions = client.search_model_versions(f"name = '{model_name}' and tags.run_id = '{run_id}'")
    except mlflow.exceptions.MlflowException:
        return None
    return str(versions[0].version) if versions else None


def promote(model_name: str, version: str | int, policy: RegistryPolicy | None = None) -> GateDecision:
    """Move alias ``champion`` to ``version`` if its tags meet the promotion rule and ``policy`` (the policy in
    force now: ``check_promotable``); return the decision."""
    client = mlflow.MlflowClient()
    try:
        model_version = client.get_model_version(model_name, str(version))
    except mlflow.exceptions.MlflowException as err:
        return GateDecision(False, (f"{model_name} version {version} does not exist ({err.error_code})",))
    open_request = client.get_registered_model(model_name).tags.get(OPEN_DELETION_TAG)
    if open_request:
        return GateDecision(False, (f"a deletion request is open ({open_request}): serve it again "
                                    "(`mlflow run . -e forget -P ids=...`); no version is promoted until it is",))
    forged = signature_problem(model_name, version, model_version.tags, gate_key())
    if forged:
        return GateDecision(False, (forged,))
    decision = check_promotable(model_version.tags, policy)
    if decision.passed:
        client.set_registered_model_alias(model_name, CHAMPION, str(version))
        client.set_model_version_tag(model_name, str(version), "promoted_at", f"{time.time():.0f}")
    return decision

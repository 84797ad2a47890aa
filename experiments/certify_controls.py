"""Controls of the certification rule on the real default data: it certifies a model whose "members" really are
at chance, and refuses one that holds its members.

    python -m experiments.certify_controls --data-dir data [--outputs-dir outputs]

- Positive control of the pass: a SISA ensemble built like the target (the pipeline's ``SisaConfig``) but trained
  on the reference half of the audit pool only, audited exactly as the pipeline audits (every original of S
  against the non-member half, RMIA with the pipeline's reference ensembles). None of the ensembles ever saw an
  original of S, so the audit must certify them (and must not detect a leak).
- Negative control: the same audit of the ensemble trained on the biased S itself (every original a member): its
  natural members must be detected and not certified.

Reference ensembles and the two controls keep their checkpoints under ``<outputs>/references/`` and
``<outputs>/certify-controls/``, so a run after ``make run`` trains only what it lacks. Prints both certificates
and writes ``docs/results/benchmarks/certify-controls.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fairforget.components.canaries import cut_audit_pool
from fairforget.components.dataset import load_dataset
from fairforget.components.mia import AuditConfig, audit_membership
from fairforget.components.mia.certify import Tolerance
from fairforget.components.mia.reference import train_reference_ensembles
from fairforget.components.sisa.model import SisaModel
from fairforget.pipelines.config import PipelineConfig

RESULT = Path(__file__).resolve().parent.parent / "docs" / "results" / "benchmarks" / "certify-controls.json"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--outputs-dir", default="outputs")
    parser.add_argument("--output", type=Path, default=RESULT)
    args = parser.parse_args(argv)

    from fairforget.pipelines.loop import references_dir

    config = PipelineConfig(data_dir=args.data_dir, outputs_dir=args.outputs_dir)
    dataset = load_dataset(args.data_dir)
    originals = dataset.split("train")
    pool = cut_audit_pool(dataset.split("audit"), canaries=config.canary_count(len(originals)),
                          seed=config.audit.seed)
    started = time.perf_counter()
    references = train_reference_ensembles(pool.reference_half, sisa_config=config.sisa,
                                           num_models=config.audit.reference_models,
                                           state_dir=references_dir(config, pool.reference_half))
    controls = Path(args.outputs_dir) / "certify-controls"
    never_saw = SisaModel.create(pool.reference_half, config.sisa.replace(seed=config.sisa.seed + 777,
                                                                          audit_exactness=False),
                                 controls / "never-saw")
    never_saw.train()
    holds = SisaModel.create(originals, config.sisa.replace(audit_exactness=False), controls / "biased-s")
    holds.train()
    training_seconds = time.perf_counter() - started
    audit = AuditConfig().for_recipe(config.sisa.train)
    tolerance = Tolerance()
    out = {"tolerance": tolerance.to_dict(), "attacks": list(audit.attacks), "training_seconds": training_seconds}
    for name, model, expect in (("never_saw_the_members", never_saw, "certified"),
                                ("holds_the_members", holds, "not_certified")):
        started = time.perf_counter()
        report = audit_membership(model.ensemble().predict_proba, originals, pool.non_members, config=audit,
                                  reference_predicts=references)
        certificate = report.certificate()
        verdict = certificate.verdict(tolerance)
        out[name] = {"verdict": verdict, "expected": verdict == expect, "leak_detected": report.leak_detected(),
                     "auc_high": certificate.auc_high, "attack_auc": certificate.attack_auc,
                     "tpr_high": certificate.tpr_high, "attack_tpr": certificate.attack_tpr,
                     "n_members": certificate.n_members, "n_non_members": certificate.n_non_members,
                     "auc": {a: r.estimates["auc"].value for a, r in report.results["all"].items()},
                     "audit_seconds": time.perf_counter() - started}
        print(f"{name}: {certificate.explain(tolerance)}; leak detected: {report.leak_detected()} "
              f"({'as expected' if verdict == expect else 'NOT AS EXPECTED'})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(args.output)
    print(f"wrote {args.output}")
    return out


if __name__ == "__main__":
    main()

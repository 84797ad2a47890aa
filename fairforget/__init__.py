"""fairforget: privacy-preserving debiasing with guided diffusion and machine unlearning (Pan, Andrews, Chang and
Mishra, "Privacy-Preserving Debiasing using Data Augmentation and Machine Unlearning").

The method from Python, without MLflow (the MLflow project in ``fairforget.pipelines`` wires the same pieces):

1. data and bias: ``load_dataset``, ``build_target`` (the prior D over the debiased attributes), ``measure_bias``
   (KL(D || P) per attribute and L_hat);
2. Algorithm 1: ``train_generator`` (the class-conditional diffusion model), ``augment`` (rebalance S into S*);
3. SISA: ``SisaModel`` (shards, slices, exact unlearning);
4. Algorithm 2: ``ForgettingLoop`` (forget originals, replenish with synthetic samples, evaluate, audit), with
   ``IterationOutcome`` per iteration;
5. audits: ``audit_membership`` (M-Loss, M-Mean, Moments, metric attacks, RMIA; AUC and TPR at low FPR),
   ``cut_audit_pool`` (canaries, reference half, non-members) and the canaries that prove the audit can see;
   ``audit_generator`` (can the generator's denoising loss tell its training records from unseen ones?).

Every user error raises a ``FairforgetError`` subclass whose message says what to do.
"""

from fairforget.components.augment import AugmentConfig, AugmentResult, augment, replenish
from fairforget.components.bias import BalanceConfig, BiasReport, measure_bias
from fairforget.components.canaries import AuditPool, CanarySet, audit_canaries, cut_audit_pool, with_canaries
from fairforget.components.data import DataConfig, prepare_dataset
from fairforget.components.dataset import Dataset, load_dataset, read_ids, save_dataset
from fairforget.components.forgetting import (
    ForgettingLoop,
    IterationOutcome,
    LoopConfig,
    LoopResult,
    evaluate_model,
    shard_fit_accuracies,
)
from fairforget.components.gate import GateConfig, evaluate_gate
from fairforget.components.generator import Generator, GeneratorConfig, load_generator, train_generator
from fairforget.components.generator.audit import GeneratorAuditConfig, audit_generator, audit_generator_on_splits
from fairforget.components.mia import AuditConfig, audit_membership
from fairforget.components.mia.reference import train_reference_ensembles, train_reference_models
from fairforget.components.mia.results import AuditReport
from fairforget.components.priors import TargetDistribution, build_target
from fairforget.components.sisa import SisaConfig, SisaModel
from fairforget.components.training import TrainConfig
from fairforget.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    FairforgetError,
    PromotionRefused,
    UnlearningNotExactError,
)

__version__ = "0.1.0"

__all__ = [
    # data and bias
    "Dataset", "DataConfig", "load_dataset", "save_dataset", "prepare_dataset", "read_ids",
    "BalanceConfig", "BiasReport", "TargetDistribution", "build_target", "measure_bias",
    # Algorithm 1
    "Generator", "GeneratorConfig", "train_generator", "load_generator",
    "GeneratorAuditConfig", "audit_generator", "audit_generator_on_splits",
    "AugmentConfig", "AugmentResult", "augment", "replenish",
    # SISA
    "SisaConfig", "SisaModel", "TrainConfig",
    # Algorithm 2
    "ForgettingLoop", "LoopConfig", "LoopResult", "IterationOutcome", "evaluate_model", "shard_fit_accuracies",
    # audits
    "AuditConfig", "AuditReport", "audit_membership", "train_reference_ensembles", "train_reference_models",
    "AuditPool", "CanarySet", "cut_audit_pool", "with_canaries", "audit_canaries",
    # registry gate
    "GateConfig", "evaluate_gate",
    # errors
    "FairforgetError", "ConfigError", "DataError", "CheckpointError", "UnlearningNotExactError", "PromotionRefused",
]

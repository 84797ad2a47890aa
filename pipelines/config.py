"""The ``main`` entry point's configuration: one dataclass per part, the defaults written once, and the mapping
from command-line options (MLproject parameters) onto them. ``PipelineConfig.to_dict()`` is what every run logs and
``pipeline.json`` holds; ``PipelineConfig.from_dict`` reads it back."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field

from fairforget.components.augment import AugmentConfig
from fairforget.components.bias import BalanceConfig
from fairforget.components.canaries import default_canary_count
from fairforget.components.config import ConfigBase
from fairforget.components.data import DataConfig
from fairforget.components.forgetting import EXACTNESS_AUDITS, LoopConfig
from fairforget.components.gate import GateConfig
from fairforget.components.generator.config import GeneratorConfig, recipe
from fairforget.components.mia import AuditConfig
from fairforget.components.sisa.model import SisaConfig
from fairforget.components.sisa.unlearn import FORGET_ORDERS
from fairforget.components.versioning import config_hash
from fairforget.errors import ConfigError
from fairforget.pipelines.cli import (
    OneLineParser,
    add_generator_options,
    float_arg,
    generator_config_from_options,
    int_arg,
    str2bool,
)
from fairforget.pipelines.data_steps import (
    add_balance_arguments,
    add_data_arguments,
    balance_config_from_args,
    data_config_from_args,
)


@dataclass(frozen=True)
class PipelineConfig(ConfigBase):
    """Every parameter of the ``main`` entry point, resolved; logged with the parent run."""

    data: DataConfig = field(default_factory=DataConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    generator: GeneratorConfig = field(default_factory=recipe)  # the recipe of DEFAULT_PRIVACY, as a command line
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sisa: SisaConfig = field(default_factory=SisaConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    canaries: int | None = None  # canary records inserted into S (None: 1% of S, 40 on the default; 0: none)
    policy_file: str = "registry_policy.yaml"  # the registry's written policy (relative to the project folder)
    retrain_generator: bool = False
    prepare: bool = True  # False: use the data set already in data_dir as it is (e.g. one pulled with DVC)
    data_dir: str = "data"
    outputs_dir: str = "outputs"

    def validate(self) -> None:
        if self.canaries is not None and self.canaries < 0:
            raise ConfigError(f"canaries must be >= 0 (0 switches them off), got {self.canaries}")
        self.data.validate()
        self.balance.validate()
        self.generator.validate()
        self.augment.validate()
        self.sisa.validate()
        self.audit.validate()
        self.loop.validate()
        self.gate.validate()
        self._validate_against_each_other()

    def _validate_against_each_other(self) -> None:
        """Checks that need two configs at once, made before any work: the shard plan against the data size. (The
        schedule against SISA's deletion cap needs the size of S*: ``check_schedule_capacity``, right after
        Algorithm 1 and before any classifier is trained.)"""
        canaries = self.canary_count(self.data.train_size)
        cells = self.sisa.num_shards * self.sisa.num_slices
        if cells > self.data.train_size + canaries:
            raise ConfigError(
                f"shards x slices = {self.sisa.num_shards} x {self.sisa.num_slices} = {cells} exceeds the "
                f"{self.data.train_size + canaries} training records: every slice needs at least one record; use "
                "fewer shards or slices")

    def canary_count(self, train_size: int) -> int:
        """The number of canaries for a private set of ``train_size`` records: ``canaries``, or 1% of it when None."""
        return default_canary_count(train_size) if self.canaries is None else self.canaries

    def state_key(self) -> str:
        """The hash naming this run's state folder: everything that changes results (not executors or paths)."""
        record = self.to_dict()
        for volatile in ("retrain_generator", "data_dir", "outputs_dir", "prepare", "policy_file"):
            record.pop(volatile)
        for volatile in ("executor", "max_workers", "ray_address", "progress"):
            record["sisa"].pop(volatile)
        record["gate"].pop("model_name")
        return config_hash(record)


def canary_arg(text: str) -> int | None:
    """``auto`` (or empty) -> None (1% of S); otherwise a non-negative whole number."""
    if str(text).strip().lower() in ("", "auto", "none"):
        return None
    value = int_arg(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"canaries must be >= 0 or 'auto', got {text}")
    return value


def policy_or(parse):
    """An option whose value ``policy`` (or empty) means "the written policy's" (None)."""
    def parse_or_policy(text: str):
        return None if str(text).strip().lower() in ("", "policy", "none") else parse(text)
    return parse_or_policy


# main's generator options: {GeneratorConfig field: option} (types, defaults and help from the field)
GENERATOR_OPTIONS = {
    "guidance_scale": "--guidance-scale", "guidance_interval": "--guidance-interval", "train_steps": "--generator-steps",
    "num_threads": "--generator-num-threads", "latent_dim": "--generator-latent-dim",
    "autoencoder_epochs": "--generator-autoencoder-epochs", "autoencoder_channels": "--generator-autoencoder-channels",
    "autoencoder_perceptual_weight": "--generator-autoencoder-perceptual-weight",
    "public_pretrain_steps": "--generator-public-pretrain-steps", "prediction_type": "--generator-prediction-type",
    "loss_weighting": "--generator-loss-weighting", "denoiser_dropout": "--generator-denoiser-dropout",
    "precision": "--generator-precision", "privacy": "--generator-privacy", "dp_epsilon": "--dp-epsilon",
    "dp_delta": "--dp-delta", "public_labels": "--generator-public-labels",
    "pseudo_label_epsilon": "--generator-pseudo-label-epsilon",
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description="the whole pipeline: prepare and validate the data, train (or reuse) the "
                           "generator, Algorithm 1, SISA training, Algorithm 2, the final audit and the registry gate.")
    loop, gate, sisa, audit = LoopConfig(), GateConfig(), SisaConfig(), AuditConfig()
    parser.add_argument("--forget-rate", type=float_arg, default=loop.forget_rate)
    parser.add_argument("--iterations", type=int_arg, default=loop.iterations)
    parser.add_argument("--forget-order", default=loop.forget_order, choices=list(FORGET_ORDERS))
    parser.add_argument("--exactness-audit", default=loop.exactness_audit, choices=list(EXACTNESS_AUDITS),
                        help="final: every shard retrained from scratch once after the last step and compared bit "
                             "for bit; every_step: one shard per unlearning step")
    parser.add_argument("--convergence-patience", type=int_arg, default=loop.convergence_patience,
                        help="stop after this many iterations in a row with every attack at chance; 0: run them all")
    parser.add_argument("--shards", type=int_arg, default=sisa.num_shards)
    parser.add_argument("--slices", type=int_arg, default=sisa.num_slices)
    parser.add_argument("--classifier", default=sisa.classifier)
    parser.add_argument("--classifier-weights", default="")
    parser.add_argument("--epochs", type=int_arg, default=sisa.train.epochs)
    parser.add_argument("--aggregation", default=sisa.aggregation)
    parser.add_argument("--max-deletion-fraction", type=float_arg, default=sisa.max_deletion_fraction)
    parser.add_argument("--executor", default=sisa.executor)
    parser.add_argument("--ray-address", default="")
    parser.add_argument("--attacks", default=",".join(audit.attacks))
    parser.add_argument("--iteration-audit-size", type=int_arg, default=loop.iteration_audit_size or 0,
                        help="members audited per iteration (0: all, which certification needs); the final "
                             "audit always uses all")
    parser.add_argument("--max-auc-excess", type=policy_or(float_arg), default=gate.max_auc_excess,
                        help="'policy' (default): registry_policy.yaml's; a lower value tightens it")
    parser.add_argument("--max-tpr-at-1pct-fpr", type=policy_or(float_arg), default=gate.max_tpr_at_1pct_fpr,
                        help="'policy' (default): registry_policy.yaml's; a lower value tightens it")
    parser.add_argument("--min-accuracy", type=policy_or(float_arg), default=gate.min_accuracy,
                        help="'policy' (default): registry_policy.yaml's; a higher value tightens it")
    parser.add_argument("--model-name", default=gate.model_name)
    parser.add_argument("--require-audit-power", type=policy_or(str2bool), default=gate.require_audit_power,
                        help="'policy' (default); true requires canary power even where the policy does not")
    parser.add_argument("--require-generator-audit", type=policy_or(str2bool), default=gate.require_generator_audit,
                        help="'policy' (default); true requires the generator's membership audit within its bound")
    parser.add_argument("--policy-file", default=PipelineConfig.policy_file,
                        help="the registry's written policy (default registry_policy.yaml)")
    parser.add_argument("--canaries", type=canary_arg, default=None,
                        help="canary records inserted into S to prove the audit can see a leak; 'auto' (default): "
                             "1%% of S; 0: none")
    add_generator_options(parser, GENERATOR_OPTIONS)
    parser.add_argument("--retrain-generator", type=str2bool, default=False)
    parser.add_argument("--resume", type=str2bool, default=False)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--outputs-dir", default="outputs")
    add_data_arguments(parser)
    add_balance_arguments(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    base = SisaConfig()
    sisa = dataclasses.replace(
        base, num_shards=args.shards, num_slices=args.slices, classifier=args.classifier,
        weights_path=args.classifier_weights or None, train=dataclasses.replace(base.train, epochs=args.epochs),
        aggregation=args.aggregation, max_deletion_fraction=args.max_deletion_fraction, executor=args.executor,
        ray_address=args.ray_address or None, seed=args.seed)
    balance = balance_config_from_args(args)
    generator = generator_config_from_options(args, GENERATOR_OPTIONS, seed=args.seed)
    return PipelineConfig(
        data=data_config_from_args(args), balance=balance, generator=generator,
        augment=AugmentConfig(rho=balance.rho, guidance_scale=generator.guidance_scale, seed=args.seed),
        sisa=sisa,
        audit=dataclasses.replace(AuditConfig(), attacks=tuple(a.strip() for a in args.attacks.split(",")
                                                               if a.strip()), seed=args.seed),
        loop=LoopConfig(forget_rate=args.forget_rate, iterations=args.iterations, forget_order=args.forget_order,
                        exactness_audit=args.exactness_audit,
                        iteration_audit_size=args.iteration_audit_size or None,
                        convergence_patience=args.convergence_patience),
        gate=GateConfig(model_name=args.model_name, max_auc_excess=args.max_auc_excess,
                        max_tpr_at_1pct_fpr=args.max_tpr_at_1pct_fpr, min_accuracy=args.min_accuracy,
                        require_audit_power=args.require_audit_power,
                        require_generator_audit=args.require_generator_audit),
        canaries=args.canaries, policy_file=args.policy_file,
        retrain_generator=args.retrain_generator, data_dir=args.data_dir, outputs_dir=args.outputs_dir)



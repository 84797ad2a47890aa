"""The ``main`` entry point's configuration: one dataclass per part, the defaults written once, and the mapping
from command-line options (MLproject parameters) onto them. ``asdict(PipelineConfig)`` is what every run logs."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import asdict, dataclass, field

from components.augment import AugmentConfig
from components.data import DataConfig
from components.generator.config import GeneratorConfig
from components.mia import AuditConfig
from components.sisa.model import SisaConfig
from components.sisa.unlearn import FORGET_ORDERS
from components.versioning import config_hash
from pipelines.data_steps import (BalanceConfig, _add_balance_args, _add_data_args, balance_config_from_args,
                                  data_config_from_args, int_arg)
from pipelines.train_generator import str2bool


@dataclass(frozen=True)
class LoopConfig:
    """Algorithm 2's own knobs."""

    forget_rate: float = 0.1  # fraction of the ORIGINAL records forgotten per iteration (all shards together)
    iterations: int = 10
    forget_order: str = "random"  # or last_slice_first (cheaper for SISA)
    iteration_audit_size: int | None = 1000  # members (and as many non-members) per iteration; final audit: all
    convergence_patience: int = 2  # stop after this many iterations in a row with every attack at chance (0: never)

    def validate(self) -> None:
        if not 0.0 < self.forget_rate <= 1.0:
            raise ValueError(f"forget_rate must lie in (0, 1], got {self.forget_rate}: it is the fraction of the "
                             "original records forgotten per iteration")
        if self.iteration_audit_size is not None and self.iteration_audit_size < 2:
            raise ValueError(f"iteration_audit_size must be >= 2 (or 0 for all), got {self.iteration_audit_size}")
        if self.iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {self.iterations}")
        if self.forget_order not in FORGET_ORDERS:
            raise ValueError(f"unknown forget_order {self.forget_order!r}; known: {', '.join(FORGET_ORDERS)}")


@dataclass(frozen=True)
class GateConfig:
    model_name: str = "fairforget-classifier"
    mia_threshold: float = 0.55
    min_accuracy: float = 0.7


@dataclass(frozen=True)
class PipelineConfig:
    """Every parameter of the ``main`` entry point, resolved; logged with the parent run."""

    data: DataConfig = field(default_factory=DataConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sisa: SisaConfig = field(default_factory=SisaConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    retrain_generator: bool = False
    prepare: bool = True  # False: use the data set already in data_dir as it is (e.g. one pulled with DVC)
    data_dir: str = "data"
    outputs_dir: str = "outputs"

    def validate(self) -> None:
        self.data.validate()
        self.balance.validate()
        self.generator.validate()
        self.augment.validate()
        self.sisa.validate()
        self.audit.validate()
        self.loop.validate()

    def state_key(self) -> str:
        """The hash naming this run's state folder: everything that changes results (not executors or paths)."""
        record = asdict(self)
        for volatile in ("retrain_generator", "data_dir", "outputs_dir", "prepare"):
            record.pop(volatile)
        for volatile in ("executor", "max_workers", "ray_address", "progress"):
            record["sisa"].pop(volatile)
        record["gate"].pop("model_name")
        return config_hash(record)


def pipeline_config_from_dict(record: dict) -> PipelineConfig:
    """Rebuild a ``PipelineConfig`` from ``asdict(config)`` (as stored in ``pipeline.json``)."""
    return _from_dict(PipelineConfig, record)


def _from_dict(cls, record):
    import typing

    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if f.name not in record:
            continue
        value, hint = record[f.name], hints[f.name]
        if dataclasses.is_dataclass(hint):
            value = _from_dict(hint, value)
        elif isinstance(value, list):
            value = tuple(value)
        values[f.name] = value
    return cls(**values)



def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    loop, gate, sisa, audit, gen = LoopConfig(), GateConfig(), SisaConfig(), AuditConfig(), GeneratorConfig()
    parser.add_argument("--forget-rate", type=float, default=loop.forget_rate)
    parser.add_argument("--iterations", type=int_arg, default=loop.iterations)
    parser.add_argument("--forget-order", default=loop.forget_order, choices=list(FORGET_ORDERS))
    parser.add_argument("--convergence-patience", type=int_arg, default=loop.convergence_patience,
                        help="stop after this many iterations in a row with every attack at chance; 0: run them all")
    parser.add_argument("--shards", type=int_arg, default=sisa.num_shards)
    parser.add_argument("--slices", type=int_arg, default=sisa.num_slices)
    parser.add_argument("--classifier", default=sisa.classifier)
    parser.add_argument("--classifier-weights", default="")
    parser.add_argument("--epochs", type=int_arg, default=sisa.train.epochs)
    parser.add_argument("--aggregation", default=sisa.aggregation)
    parser.add_argument("--max-deletion-fraction", type=float, default=sisa.max_deletion_fraction)
    parser.add_argument("--executor", default=sisa.executor)
    parser.add_argument("--ray-address", default="")
    parser.add_argument("--attacks", default=",".join(audit.attacks))
    parser.add_argument("--iteration-audit-size", type=int_arg, default=loop.iteration_audit_size,
                        help="members audited per iteration (0: all); the final audit always uses all")
    parser.add_argument("--mia-threshold", type=float, default=gate.mia_threshold)
    parser.add_argument("--min-accuracy", type=float, default=gate.min_accuracy)
    parser.add_argument("--model-name", default=gate.model_name)
    parser.add_argument("--guidance-scale", type=float, default=gen.guidance_scale)
    parser.add_argument("--generator-steps", type=int_arg, default=gen.train_steps)
    parser.add_argument("--retrain-generator", type=str2bool, default=False)
    parser.add_argument("--resume", type=str2bool, default=False)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--outputs-dir", default="outputs")
    _add_data_args(parser)
    _add_balance_args(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> PipelineConfig:
    base = SisaConfig()
    sisa = dataclasses.replace(
        base, num_shards=args.shards, num_slices=args.slices, classifier=args.classifier,
        weights_path=args.classifier_weights or None, train=dataclasses.replace(base.train, epochs=args.epochs),
        aggregation=args.aggregation, max_deletion_fraction=args.max_deletion_fraction, executor=args.executor,
        ray_address=args.ray_address or None, seed=args.seed)
    balance = balance_config_from_args(args)
    return PipelineConfig(
        data=data_config_from_args(args), balance=balance,
        generator=dataclasses.replace(GeneratorConfig(), guidance_scale=args.guidance_scale,
                                      train_steps=args.generator_steps, seed=args.seed),
        augment=AugmentConfig(rho=balance.rho, guidance_scale=args.guidance_scale, seed=args.seed),
        sisa=sisa,
        audit=dataclasses.replace(AuditConfig(), attacks=tuple(a.strip() for a in args.attacks.split(",")
                                                               if a.strip()), seed=args.seed),
        loop=LoopConfig(forget_rate=args.forget_rate, iterations=args.iterations, forget_order=args.forget_order,
                        iteration_audit_size=args.iteration_audit_size or None,
                        convergence_patience=args.convergence_patience),
        gate=GateConfig(args.model_name, args.mia_threshold, args.min_accuracy),
        retrain_generator=args.retrain_generator, data_dir=args.data_dir, outputs_dir=args.outputs_dir)



"""Entry point ``main``: the whole pipeline in one parent MLflow run, one child run per step.

    prepare -> validate

Run: ``mlflow run . -P forget_rate=0.1 --env-manager local --experiment-name fairforget-fashion_mnist``
(``make run`` does exactly that), or ``python -m pipelines.main --forget-rate 0.1``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow

from components.data import DataConfig
from components.dataset import DataError, load_dataset
from pipelines.data_steps import (BalanceConfig, _add_balance_args, _add_data_args, balance_config_from_args,
                                  data_config_from_args, run_prepare, run_validate)
from pipelines.tracking import PROJECT_ROOT, configure_tracking, step_run

log = logging.getLogger("fairforget")


@dataclass(frozen=True)
class PipelineConfig:
    """Every parameter of the ``main`` entry point, resolved; logged with the parent run."""

    data: DataConfig = field(default_factory=DataConfig)
    balance: BalanceConfig = field(default_factory=BalanceConfig)
    forget_rate: float = 0.1
    data_dir: str = "data"

    def validate(self) -> None:
        if not 0.0 < self.forget_rate <= 1.0:
            raise ValueError(f"forget_rate must lie in (0, 1], got {self.forget_rate}: it is the fraction of the "
                             "original records forgotten per iteration")
        self.data.validate()
        self.balance.validate()


def data_is_current(data_dir: Path, config: DataConfig) -> bool:
    """True when ``data_dir`` holds a data set prepared with exactly ``config``."""
    try:
        return load_dataset(data_dir).config == config.as_record()
    except DataError:
        return False


def run_pipeline(config: PipelineConfig) -> dict:
    """Run every step in order under one parent run; return a summary dict."""
    config.validate()
    data_dir = Path(config.data_dir)
    if not data_dir.is_absolute():
        data_dir = PROJECT_ROOT / data_dir
    configure_tracking()
    with step_run("main", {"pipeline": asdict(config)}, config.data.dataset, run_name="fairforget") as parent:
        if data_is_current(data_dir, config.data):
            log.info("prepare: %s already holds the data set for this config; reusing it", data_dir)
        else:
            run_prepare(config.data, data_dir)
        from pipelines.tracking import log_data_version

        md5 = log_data_version(data_dir)
        outcome = run_validate(config.balance, data_dir, config.data.dataset, seed=config.data.seed)
        mlflow.log_metrics(outcome.bias.as_metrics(), step=0)
        summary = {"run_id": parent.info.run_id, "data_md5": md5, **outcome.bias.as_metrics(),
                   "balanced": outcome.validation.balanced}
        print("summary: " + "; ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in summary.items()))
        return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forget-rate", type=float, default=PipelineConfig.forget_rate)
    parser.add_argument("--data-dir", default=PipelineConfig.data_dir)
    _add_data_args(parser)
    _add_balance_args(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("great_expectations", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = PipelineConfig(data=data_config_from_args(args), balance=balance_config_from_args(args),
                                forget_rate=args.forget_rate, data_dir=args.data_dir)
        run_pipeline(config)
    except (DataError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

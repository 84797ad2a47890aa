"""SISA training and exact unlearning (Bourtoule et al. 2021; the paper's Sec. III-C, Fig. 4).

One module per idea: ``plan`` (who is in which shard and slice), ``checkpoints`` (content-addressed state),
``trainer`` (one shard over its slice prefixes), ``aggregate`` (the ensemble and its rules), ``unlearn``
(deletion capacity, forgetting orders, reports) and ``model`` (``SisaModel``, the loop that ties them together).
"""

from fairforget.components.sisa.aggregate import AGGREGATIONS, ShardEnsemble
from fairforget.components.sisa.checkpoints import CheckpointError, CheckpointStore, stage_keys
from fairforget.components.sisa.model import SisaConfig, SisaModel, TrainReport, shard_seed
from fairforget.components.sisa.plan import PlanError, ShardPlan
from fairforget.components.sisa.trainer import ModelSpec, ShardResult, ShardTask, train_shard
from fairforget.components.sisa.unlearn import (
                                     FORGET_ORDERS,
                                     DeletionCapacityError,
                                     UnlearnReport,
                                     check_deletion_capacity,
                                     sample_forget_set,
)

__all__ = [
    "AGGREGATIONS", "FORGET_ORDERS", "CheckpointError", "CheckpointStore", "DeletionCapacityError", "ModelSpec",
    "PlanError", "ShardEnsemble", "ShardPlan", "ShardResult", "ShardTask", "SisaConfig", "SisaModel", "TrainReport",
    "UnlearnReport", "check_deletion_capacity", "sample_forget_set", "shard_seed", "stage_keys", "train_shard",
]

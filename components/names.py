"""The names of the metrics fairforget logs, defined once. Components build their metric dicts with these and the
pipelines, the model card, the study and the tests read them back by the same names.

Families built from a prefix (documented where they are made): ``acc/<superclass>``, ``acc/class/<class>``
(``FairnessReport.metrics``), ``bias/kl/<attribute>`` (``BiasReport.as_metrics``; in Algorithm 1 with several
debiased attributes also ``bias/kl/<a> x <b>``, their joint), ``bias/mi/<attribute>/<before|after>``
(``DependenceReport.as_metrics``), ``mia/[<subset>/]<attack>/<figure>`` (``AuditReport.metrics``),
``mia/canary/...`` (``CanaryAudit.metrics``), ``mia_shard/<i>/...`` (per-shard audits).
"""

# accuracy and fairness (step = iteration)
ACC_TEST = "acc/test"
ACC_RETAIN = "acc/retain"
ACC_WORST_CLASS = "acc/worst_class"
FAIR_SUPERCLASS_GAP = "fair/superclass_gap"
BEFORE_PREFIX = "before"  # the model trained on the biased S: before/acc/test, ...

# how well each shard fits its own training records
SHARD_FIT_MIN = "train/shard_fit_accuracy_min"
SHARD_FIT_MEAN = "train/shard_fit_accuracy_mean"

# data composition
ORIGINAL_FRACTION = "data/original_fraction"
FORGOTTEN_FRACTION = "data/forgotten_fraction"
DATA_SIZE = "data/size"
SYNTHETIC_INITIAL = "data/synthetic_initial"
CANARIES_INSERTED = "data/canaries"

# bias and dependence (Algorithm 1)
MI_PREFIX = "bias/mi"  # bias/mi/<attribute>/<when>: I(attribute; class) in nats, when = before, after
SYNTHETIC_TO_REAL = "augment/synthetic_to_real_ratio"  # synthetic images added by Algorithm 1 per real train image

# unlearning and replenishment
UNLEARN_POINTS = "unlearn/points"
UNLEARN_EXACT = "unlearn/exact"
UNLEARN_FINAL_EXACT = "unlearn/final_exact"  # every shard of the final model equals its from-scratch retrain
UNLEARN_SHARDS = "unlearn/shards_retrained"
UNLEARN_SLICES = "unlearn/slices_retrained"
REPLENISHED = "augment/replenished"

# membership inference
MIA_MAX_SUCCESS = "mia/max_success"
FINAL_PREFIX = "final"  # the full final audit: final/mia/...
CANARY_LIVE_AUC = "mia/canary/live_auc"
CANARY_LIVE_TPR = "mia/canary/live_tpr_at_1pct_fpr"
CANARY_FORGOTTEN_AUC = "mia/canary/forgotten_auc"
CANARY_FORGOTTEN_TPR = "mia/canary/forgotten_tpr_at_1pct_fpr"
CANARY_LIVE_P = "mia/canary/live_p_value"
CANARY_FORGOTTEN_P = "mia/canary/forgotten_p_value"
CANARY_LEVEL = "mia/canary/level"  # the p-value a detection needs: chance_alpha / number of attacks
CANARY_EPSILON_LOWER_BOUND = "mia/canary/epsilon_lower_bound"
CANARY_POWER = "mia/canary/power"
CANARY_FORGOTTEN_WITHIN_BOUND = "mia/canary/forgotten_within_bound"
# forgotten canaries that also trained the generator, against the held-out ones: the generator channel's probe
CANARY_GENERATOR_AUC = "mia/canary/generator_channel_auc"
CANARY_GENERATOR_P = "mia/canary/generator_channel_p_value"
CANARY_GENERATOR_DETECTED = "mia/canary/generator_channel_detected"
# the empirical epsilon lower bound of the unlearned canaries that trained the generator: the generator channel's
CANARY_GENERATOR_EPSILON_LOWER_BOUND = "mia/canary/generator_channel_epsilon_lower_bound"
SHARD_AUDIT_PREFIX = "mia_shard"  # mia_shard/<i>/max_success, mia_shard/<i>/<attack>/auc, ...

# time
TIME_TRAIN = "time/train_s"
TIME_AUGMENT = "time/augment_s"
TIME_UNLEARN = "time/unlearn_s"
TIME_AUDIT = "time/audit_s"
TIME_FINAL_AUDIT = "time/final_audit_s"
TIME_TOTAL = "time/total_s"
TIME_FINAL_EXACTNESS = "time/final_exactness_s"

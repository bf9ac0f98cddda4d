"""The sections of a run's configuration: one frozen dataclass per section of ``conf/*.yaml``.

The comment beside each field is its documentation: ``make docs`` turns these comments into
docs/configuration.md, so a new key is documented where it is declared.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from interest.errors import UserError
from interest.schema import SEQUENCE_FEATURES, EncoderName, StepFeature


class ConfigError(UserError, ValueError):
    """A configuration file or override is wrong; the message names the key."""


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[2]"  # where Spark runs; ignored when launched by spark-submit (its --master wins)
    conf: dict[str, str] = field(default_factory=dict)  # any Spark settings, passed to the session builder as they are


@dataclass(frozen=True)
class PathsConfig:
    """Where everything lives. Relative local paths resolve against the working directory.

    The keys are the places an operator moves apart from the root (models to a registry folder,
    checkpoints to storage every executor reaches, logs to a local disk). The rest derive from the
    root alone: the properties below, always absolute (URLs kept as they are)."""

    root: str = "data"  # the folder or URL (hdfs://, s3a://, file://) every other path derives from
    models: str = "{root}/models"  # exported model versions per encoder
    checkpoints: str = "{root}/checkpoints"  # training checkpoints (removed when a run finishes)
    logs: str = "{root}/_logs"  # one file per job run, at debug level with full traces ("" = none)

    def resolve(self, name: str) -> str:
        """The absolute path or URL of a named key, with ``{root}`` substituted."""
        return absolute(getattr(self, name).format(root=self.base))

    @property
    def base(self) -> str:
        """The root, absolute."""
        return absolute(self.root)

    @property
    def vocab(self) -> str:
        """Item id <-> index, counts and categories, per dt."""
        return f"{self.base}/vocab"

    @property
    def sequences(self) -> str:
        """Per-user padded sequences (train, infer, day), per dt."""
        return f"{self.base}/sequences"

    @property
    def reports(self) -> str:
        """JSON, Markdown and pictures of every stage."""
        return f"{self.base}/reports"

    @property
    def raw_events(self) -> str:
        """The raw click log when ``ingest.path`` is not set (where the generator writes)."""
        return f"{self.base}/raw/events"

    @property
    def truth(self) -> str:
        """The generator's planted interests (generated data only)."""
        return f"{self.base}/raw/truth"

    @property
    def rejects(self) -> str:
        """Quarantined rows with their reject reason, per dt."""
        return f"{self.base}/events_rejected"

    @property
    def sessions(self) -> str:
        """One row per session, per dt."""
        return f"{self.base}/sessions"

    @property
    def warehouse(self) -> str:
        """Where the published tables' files live."""
        return f"{self.base}/warehouse"

    @property
    def metastore(self) -> str:
        """The embedded Derby metastore (local or file:// roots only)."""
        return f"{self.base}/metastore"

    @property
    def mlruns(self) -> str:
        """The MLflow file store when ``tracking.uri`` is not set."""
        return f"{self.base}/mlruns"


MAX_FUTURE_SKEW_MINUTES = 60

# The canonical event fields a source maps its columns to; the first three must be present
REQUIRED_COLUMNS = ("user_id", "item_id", "ts")
OPTIONAL_COLUMNS = ("event_type", "category")


@dataclass(frozen=True)
class IngestConfig:
    # How the raw source is read. sequence_lines: text files of item ids in each user's order,
    # without times, one user per line ("user item item ...") or one pair per line ("user item");
    # event k of a user gets the synthetic time of day k after 1970-01-01, so every event is its
    # own step and session (public sequential datasets: Amazon Beauty as published with S3-Rec)
    format: Literal["parquet", "csv", "json", "movielens", "sequence_lines"] = "parquet"
    path: str | None = None  # None: {paths.root}/raw/events
    # The source column of each canonical field (user_id, item_id, ts; event_type and category may
    # be null: not in the source). Fields not given keep their own name.
    columns: dict[str, str | None] = field(default_factory=dict)
    # How to read ``ts``: "auto" (timestamp type, or ISO-8601 strings), "epoch_s", "epoch_ms",
    # or a Spark datetime pattern such as "yyyy-MM-dd HH:mm:ss" (text it cannot read is
    # quarantined as unparseable_ts). auto and epoch times are read by column in sessionize's
    # Python pass, in a UTC session; a pattern, or another session zone, is read by Spark (slower).
    ts_format: str = "auto"
    options: dict[str, str] = field(default_factory=dict)  # passed to the Spark reader
    # A Parquet source file that cannot be read (truncated upload, not Parquet): "fail" stops the
    # job naming the file; "skip" goes on without it and lists it in the summary and the report
    on_corrupt_file: Literal["fail", "skip"] = "fail"
    # Item metadata that gives events without a category one: a table of item_id and category
    # (columns named as in ``columns``, in ``format``), or for MovieLens its ``u.item``, whose genre
    # flags become the category "Action|Comedy" (segments split it: interest.scoring.segments)
    item_categories: str | None = None

    def __post_init__(self) -> None:
        """Check the column mapping's fields; those not given keep their own name."""
        if self.format == "sequence_lines" and self.ts_format not in ("auto", "epoch_s"):
            raise ConfigError(
                f"ingest.ts_format {self.ts_format!r} does not apply to ingest.format sequence_lines: "
                "its times are synthetic (event k of a user on day k); leave ts_format at auto"
            )
        known = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
        for name, column in self.columns.items():
            if name not in known:
                raise ConfigError(f"unknown configuration key 'ingest.columns.{name}' (known: {', '.join(known)})")
            if name in REQUIRED_COLUMNS and not column:
                raise ConfigError(
                    f"ingest.columns.{name} must name a source column (only event_type and category may be null)"
                )
        object.__setattr__(self, "columns", {**{name: name for name in known}, **self.columns})


@dataclass(frozen=True)
class SessionizeConfig:
    # Funnel order matters: it breaks ties in time and picks the stage kept when repeats merge.
    event_types: list[str] = field(default_factory=lambda: ["view", "click", "cart", "purchase"])
    lookback_days: int = 30  # 0 = everything up to the run date
    session_gap_minutes: float = 30.0  # a gap of at least this starts a new session
    bot_max_events_per_day: int = 1000  # a user above this on any day is a bot
    # exclude: a bot's events are quarantined; cap: kept up to the limit per day
    bot_policy: Literal["exclude", "cap"] = "exclude"
    min_item_count: int = 2  # items with fewer training steps map to the unknown index
    max_len: int = 50  # steps per sequence (the model's window)
    # Training rows per user: 1 = the latest window only; more tile older history of long-lived
    # users into extra training windows (every step is a training target once)
    max_windows: int = 1
    # Size of one training row group (= one file): its sequence columns, uncompressed. Petastorm
    # hands training whole row groups, so each costs one round of Python bookkeeping; this size keeps
    # that small next to decoding, while a reader holds up to 9 groups with one thread (4 being read,
    # 5 waiting), 18 with two (BENCHMARKS.md, "The input pipeline").
    row_group_mib: float = 16.0
    min_row_groups: int = 8  # enough shards for the distributed readers

    @property
    def max_future_skew_minutes(self) -> int:
        """Events later than the run date's end + this are rejected (clock skew between sources)."""
        return MAX_FUTURE_SKEW_MINUTES

    @property
    def rows_per_row_group(self) -> int:
        """Rows in a row group of ``row_group_mib``: ``max_len`` int32 values per sequence feature."""
        row_bytes = self.max_len * len(SEQUENCE_FEATURES) * 4
        return max(1, int(self.row_group_mib * 2**20) // row_bytes)


@dataclass(frozen=True)
class GeneratorConfig:
    """The synthetic clickstream (see interest.synth for the model it plants): the ``generator``
    section of a profile, read by jobs/generate.py (:func:`load_generator_config`) and checked, but
    not carried, by every other job, so that it never rides in a run's or a model's configuration."""

    seed: int = 7  # random seed of the generated log
    users: int = 2000  # generated users
    items: int = 1000  # generated items
    categories: int = 20  # item categories (the planted interests)
    days: int = 14  # days of events, ending at end_date
    end_date: str = "2026-11-26"  # the last day generated
    sessions_per_day: float = 0.9  # mean sessions per user and day
    mean_session_views: float = 6.0  # mean views per session
    interest_noise: float = 0.1  # share of events outside the user's interests
    drift_per_day: float = 0.03  # chance per day that a user's interest moves
    popularity_exponent: float = 1.1  # Zipf exponent of item popularity within a category
    bot_share: float = 0.001  # share of users that are bots
    bot_events_per_day: int = 1500  # events per day of a bot
    bad_row_rate: float = 0.002  # share of malformed rows planted
    duplicate_rate: float = 0.004  # share of duplicated rows planted
    format: Literal["parquet", "json", "csv"] = "parquet"  # file format written
    users_per_file: int = 50000  # users per raw file


@dataclass(frozen=True)
class ModelConfig:
    encoder: EncoderName = "self_attention"  # self_attention, hierarchical or memory
    dim: int = 64  # embedding width
    heads: int = 2  # attention heads
    blocks: int = 2  # attention blocks
    dropout: float = 0.2  # dropout rate in training
    memory_slots: int = 4  # interest slots of the memory encoder
    # memory: each target also trains the interest nearest to it (MIND and ComiRec's label-aware
    # pick), beside the user vector, so that every interest retrieves on its own
    interest_routing: bool = False
    # self_attention: BSARec's α, the share of a causal learned filter over the window beside
    # attention in every block (interest.models.layers.CausalFilter); 0: attention alone (SASRec);
    # 1: the filter alone (FMLP-Rec's blocks, made causal)
    filter_mix: float = 0.0
    # the step features embedded beside the item: event_type (the funnel stage), time_gap (the
    # time since the previous step, bucketed by interest.schema.TIME_GAP_EDGES_S)
    features: list[StepFeature] = field(default_factory=lambda: ["event_type", "time_gap"])

    @property
    def use_event_type(self) -> bool:
        return "event_type" in self.features

    @property
    def use_time_gap(self) -> bool:
        return "time_gap" in self.features


@dataclass(frozen=True)
class TrainConfig:
    # full_softmax: every item; sampled_softmax: in-batch + uniform negatives with log-Q correction;
    # bce: SASRec's original loss (one uniform negative per position, binary cross-entropy);
    # auto: full_softmax up to sampled_above_items items, sampled_softmax above (an epoch's cost
    # of the full softmax grows with the catalogue; BENCHMARKS.md measures both at 50k items)
    objective: Literal["auto", "full_softmax", "sampled_softmax", "bce"] = "auto"
    sampled_above_items: int = 20000  # objective auto: sampled softmax above this many items
    num_negatives: int = 256  # uniform negatives for sampled softmax (plus in-batch)
    # full softmax: items the user already interacted with are no candidates in the loss (the target
    # itself always is), as they are none when ranking and never published (interest.scoring.metrics)
    exclude_seen: bool = False
    # DuoRec's contrastive term beside the next-item loss: each history's user vector against a
    # second dropout view of itself, the batch's other histories as negatives (those with the same
    # next item left out); its weight, 0: none (it costs a second forward and backward pass;
    # interest.models.objective.contrastive_loss)
    contrastive_weight: float = 0.0
    contrastive_temperature: float = 1.0  # the temperature of the contrastive term's softmax
    # the contrastive term's two views of a history: dropout (DuoRec: the same steps twice) or
    # augment (CL4SRec: each view a random crop, mask or reorder of the steps; a third pass)
    contrastive_views: Literal["dropout", "augment"] = "dropout"
    batch_size: int = 128  # global batch (divided over the workers)
    epochs: int = 20  # at most this many epochs
    learning_rate: float = 1e-3  # peak learning rate (Adam), reached after warm-up, then cosine decay
    warmup_steps: int = 100  # linear warm-up steps
    patience: int = 5  # evaluations without improvement of early_stop_metric before stopping
    # validation metric (at eval.k) that picks the best epoch: full_ndcg ranks all items;
    # sampled_ndcg ranks against 100 sampled negatives (steadier with few users; SASRec's protocol)
    early_stop_metric: Literal["full_ndcg", "sampled_ndcg", "full_hr", "sampled_hr"] = "full_ndcg"
    eval_every: int = 1  # validate every this many epochs
    seed: int = 1  # initialisation, shuffling and evaluation-user sample
    checkpoint_every_steps: int = 200  # checkpoint this often (resumed after a failure)
    workers: int = 1  # Spark barrier tasks (1: this process)
    max_failures: int = 3  # barrier-stage retries before the run fails
    step_timeout_s: float = 900.0  # a training step slower than this is a hang: fail loudly
    # XLA-compile the forward and backward pass: static shapes (every position scored, padding
    # weighted 0); on a 2-core CPU it is slower (BENCHMARKS.md), on a GPU it is worth measuring
    jit_compile: bool = False
    # batches of histories of similar length, cut to their longest (interest.data.reader): the same
    # model of fewer padded positions; false: every batch a random draw; auto: by length under the
    # full softmax (faster at about the same quality), random under sampled softmax or bce (whose in-batch
    # negatives then come from similar users: lower quality; BENCHMARKS.md measures both)
    batch_by_length: bool | Literal["auto"] = "auto"
    # mixed_bfloat16: layers compute in bfloat16, weights, logits and loss stay float32: at the same
    # quality, 4-10 % faster on an AVX-512 BF16 EPYC but 6-22 % slower on an AMX Xeon for models as
    # small as ml100k's, and several times slower where it is emulated (an AVX2-only CPU;
    # BENCHMARKS.md). auto: mixed_bfloat16 only where the hardware computes bfloat16 natively
    # (interest/models/precision.py); the run log says what it chose and why
    precision: Literal["auto", "float32", "mixed_bfloat16"] = "auto"
    progress_every_s: float = 30.0  # a progress line within an epoch at most this often (0: every step)


SAMPLED_NEGATIVES = 100

# The validation negatives' seed (best-epoch selection, early stopping): one no test draw
# (eval.seeds) may use, so model selection never tunes on the draws the test is reported on
VALID_SEED = 0


@dataclass(frozen=True)
class EvalConfig:
    k: int = 10  # cut-off of HR@k and NDCG@k
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])  # test negatives, one draw each
    # users that validation and the test are computed on: a fixed sample by train.seed of at most
    # this many; 0: every user (what published figures on a public dataset are computed on)
    users: int = 20000

    @property
    def sampled_negatives(self) -> int:
        """Negatives per user in the sampled protocol: SASRec's 100, so figures compare with it."""
        return SAMPLED_NEGATIVES


@dataclass(frozen=True)
class EmbedConfig:
    # The published tables' names are part of their contract (docs/pipeline.md); the database
    # keeps environments apart
    table: ClassVar[str] = "user_interest_embeddings"
    item_table: ClassVar[str] = "item_embeddings"
    recommendations_table: ClassVar[str] = "user_recommendations"

    database: str = "default"  # the metastore database of the tables
    batch_size: int = 1024  # users per inference batch
    top_items: int = 5  # history items kept as the explanation (top_items)
    top_n_recommendations: int = 20  # recommended items per user
    # encoders with several interests (memory): each interest retrieves its own top-N and the
    # lists are merged (ComiRec); false: the user vector alone retrieves
    multi_interest: bool = True
    # the merge's greedy diversity factor λ: at each pick a candidate's score drops by λ per item
    # of its category already picked; 0: the plain merge by score
    diversity: float = 0.0
    # an interest retrieves only if the user vector drew at least this share on it (the first
    # always does), is under this cosine to every interest kept before it, and the user has more
    # distinct items than interests kept: no copies of one interest for a short history
    interest_min_weight: float = 0.02
    interest_max_cosine: float = 0.95  # an interest this close to a kept one is a copy
    because_items: int = 3  # history items behind each recommendation's interest
    # memory: read each user's every stored window (up to sessionize.max_windows of max_len
    # steps, each step once) instead of the latest max_len steps, at night and at request time;
    # a request's cost stays bounded by max_windows x max_len steps
    whole_history: bool = False
    cold_start_min_steps: int = 5  # users with fewer steps than this are flagged is_cold_start
    users_table: str | None = None  # optional known users; those without events get the fallback
    retention_days: int = 7  # dates kept in each table
    # delta: transactional tables (one commit per dt, history, RESTORE); parquet: Hive tables
    # whose dt partitions are swapped in one metastore call, for clusters without Delta
    table_format: Literal["delta", "parquet"] = "delta"
    min_coverage: float = 0.95  # gate: share of active users that must be embedded
    max_row_change: float = 0.5  # today's rows within ±50% of yesterday's


@dataclass(frozen=True)
class QualityConfig:
    """Tomorrow's truth: the nightly of D scores D-1's published recommendations against D's
    events (``daily_quality``), and alerts when quality falls or the embeddings drift too far."""

    table: ClassVar[str] = "daily_quality"  # the next-day quality table

    min_hr: float | None = None  # alert when next-day HR@k (k: eval.k) falls below this
    max_drop: float | None = 0.3  # alert when HR@k falls by more than this share of the previous date's
    max_top_interest_changed: float | None = 0.5  # alert when more users than this changed top interest
    fail_on_alert: bool = False  # false: a flag in the report and the table; true: also exit 2


@dataclass(frozen=True)
class TrackingConfig:
    """MLflow run tracking (interest.tracking)."""

    enabled: bool = True  # track training and nightly runs in MLflow
    uri: str | None = None  # a tracking server (http://...) on a cluster; None: a file store at {paths.root}/mlruns


@dataclass(frozen=True)
class NightlyConfig:
    # warm: train each night from the previous model's weights; fresh: train from a new
    # initialisation; reuse: no training, embed with the newest model
    train: Literal["warm", "fresh", "reuse"] = "warm"

    @property
    def retrain(self) -> bool:
        return self.train != "reuse"

    @property
    def warm_start(self) -> bool:
        return self.train == "warm"


@dataclass(frozen=True)
class StorageConfig:
    """How non-DataFrame files reach remote roots (see interest.storage)."""

    # the namenode's HTTP port: hdfs:// files go through WebHDFS (as $HADOOP_USER_NAME, else the login name)
    webhdfs_port: int = 9870
    webhdfs_host: str | None = None  # the namenode for hdfs:/// URLs that name none


@dataclass(frozen=True)
class Config:
    spark: SparkConfig = field(default_factory=SparkConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    sessionize: SessionizeConfig = field(default_factory=SessionizeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    nightly: NightlyConfig = field(default_factory=NightlyConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def absolute(path: str) -> str:
    """Local paths become absolute; URLs (hdfs://, s3a://, file://) stay as they are."""
    if "://" in path:
        return path
    return str(Path(path).expanduser().resolve())

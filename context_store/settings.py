"""Settings: one YAML file per home directory, plus environment overrides.

A *home* holds everything one freshcontext deployment owns: ``freshcontext.yaml``,
the SQLite database and the LanceDB directory (unless URLs point elsewhere). Two homes
never share state, which is what tests and side-by-side evaluations rely on.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator

from context_store.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "ROLES",
    "ApiKeyConfig",
    "EMBEDDING_DEVICE_ENV",
    "ChunkingConfig",
    "EmbeddingConfig",
    "GoldenSetConfig",
    "QualityConfig",
    "ObjectStorageConfig",
    "OutcomesConfig",
    "RetrievalConfig",
    "ServiceConfig",
    "Settings",
    "SourceConfig",
    "key_fingerprint",
    "legacy_api_key",
    "resolve_home",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "freshcontext.yaml"
EMBEDDING_DEVICE_ENV = "FRESHCONTEXT_EMBEDDING_DEVICE"
DEFAULT_MODEL = "all-MiniLM-L6-v2"


class SourceConfig(BaseModel):
    name: str
    path: Path
    kind: str = "article"  # the document kind its files become: article | staff_answer | policy | ...

    @field_validator("name")
    @classmethod
    def _name_is_an_id(cls, value: str) -> str:
        if not value or any(c in value for c in "/\\:' \""):
            raise ValueError(f"source name {value!r} must be non-empty, without / \\ : quotes or spaces")
        return value


class ChunkingConfig(BaseModel):
    max_chars: int = Field(default=1000, ge=200, le=20_000)
    strategy: str = "markdown-sections-v1"

    def fingerprint(self) -> str:
        return f"{self.strategy}:{self.max_chars}"


class EmbeddingConfig(BaseModel):
    model: str = DEFAULT_MODEL
    batch_size: int = Field(default=8, ge=1, le=4096)
    # auto: CUDA when torch sees a GPU, else the CPU (detected without importing torch on a
    # CPU-only host: context_store/index/embed/device.py). cuda (or cuda:N): chunks, questions
    # and the dense search run on the GPU, the model in fp32, so its vectors match the CPU's
    # (cosine >= 0.9999) and an index built on one serves on the other.
    # FRESHCONTEXT_EMBEDDING_DEVICE overrides the file: one config serves CPU and GPU hosts.
    device: str = "auto"
    # onnx: ONNX Runtime on an export of the model (faster, no torch import; context_store/index/embed/onnx_backend.py)
    # torch: sentence-transformers. auto: onnx on CPU when it can be exported, else torch (always torch on CUDA).
    backend: Literal["auto", "onnx", "torch"] = "auto"

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        value = value.strip().lower()
        if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
            raise ValueError(f"embedding device {value!r} is not one of auto, cpu, cuda (or cuda:N for the N-th GPU)")
        return value


class ObjectStorageConfig(BaseModel):
    """Where ``lancedb_uri`` lives when it is ``s3://…``: an S3-compatible endpoint and its keys.

    Keys are best left out of the file: ``FRESHCONTEXT_S3_ACCESS_KEY_ID`` /
    ``FRESHCONTEXT_S3_SECRET_ACCESS_KEY`` (or the standard ``AWS_*`` variables, which the
    object store reads by itself when nothing is set here). ``save()`` never writes them.
    """

    endpoint: str | None = None  # e.g. http://127.0.0.1:9000 for MinIO or moto; None = AWS
    region: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    allow_http: bool = False  # plain-HTTP endpoints (a local MinIO/moto) must opt in
    virtual_hosted_style: bool | None = None
    extra: dict[str, str] = Field(default_factory=dict)  # passed through as LanceDB storage options

    def storage_options(self) -> dict[str, str]:
        """The ``storage_options`` mapping LanceDB (lance's object_store) understands."""
        options: dict[str, str] = {}
        pairs = (
            ("aws_endpoint", self.endpoint),
            ("aws_region", self.region),
            ("aws_access_key_id", self.access_key_id),
            ("aws_secret_access_key", self.secret_access_key.get_secret_value() if self.secret_access_key else None),
            ("aws_session_token", self.session_token.get_secret_value() if self.session_token else None),
        )
        options.update({k: v for k, v in pairs if v})
        if self.allow_http:
            options["allow_http"] = "true"
        if self.virtual_hosted_style is not None:
            options["aws_virtual_hosted_style_request"] = str(self.virtual_hosted_style).lower()
        options.update(self.extra)
        return options


# Environment beats the file for deployment-specific values; secrets belong here, not in YAML.
_OBJECT_STORAGE_ENV = (
    ("endpoint", "FRESHCONTEXT_S3_ENDPOINT"),
    ("region", "FRESHCONTEXT_S3_REGION"),
    ("access_key_id", "FRESHCONTEXT_S3_ACCESS_KEY_ID"),
    ("secret_access_key", "FRESHCONTEXT_S3_SECRET_ACCESS_KEY"),
    ("session_token", "FRESHCONTEXT_S3_SESSION_TOKEN"),
    ("allow_http", "FRESHCONTEXT_S3_ALLOW_HTTP"),
)
class RetrievalConfig(BaseModel):
    """How the retrieval API searches, scores and decides (see context_store/retrieve/retriever.py)."""

    mode: str = "hybrid"  # hybrid | vector | text | rrf (measured: bench/quality.py)
    candidates: int = Field(default=100, ge=10, le=1000)  # per ranker, before fusion
    # hybrid is learned fusion: its weights ship in context_store/retrieve/fusion_weights.json (bench/train_fusion.py)
    confidence_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    query_encoder: str = "auto"  # auto | torch | onnx | onnx-int8
    query_cache_size: int = Field(default=2048, ge=0)
    ann: str = "auto"  # auto | exact | projected: how the in-memory dense index searches (context_store/retrieve/dense_index.py)
    ann_min_rows: int = Field(default=50_000, ge=1)  # auto: two-stage search from this many chunks
    ann_dims: int = Field(default=96, ge=8, le=4096)  # first stage: PCA dimensions
    ann_pool: int = Field(default=256, ge=10, le=100_000)  # rows scored exactly; recall@10 vs exact 0.987 at 100k (200: 0.982)
    refresh_interval_seconds: float = Field(default=0.2, ge=0.0)  # how often to look for a new table version
    # how often a running API looks for a promoted index (one one-row SELECT per process, never per request)
    deployment_check_seconds: float = Field(default=1.0, ge=0.0)
    # how often a running API looks at calibrator.json's mtime (a stat, never per request), to pick up a new one
    calibrator_check_seconds: float = Field(default=2.0, ge=0.0)
    reranker: str | None = None  # path of a locally installed cross-encoder; none is bundled
    text_ranker: str = "memory"  # memory: BM25 beside the dense snapshot (context_store/retrieve/text_index.py) | lancedb: its FTS index

    @field_validator("mode")
    @classmethod
    def _known_mode(cls, value: str) -> str:
        if value not in ("hybrid", "vector", "text", "rrf"):
            raise ValueError(f"retrieval mode {value!r} is not one of hybrid, vector, text, rrf")
        return value

    @field_validator("text_ranker")
    @classmethod
    def _known_text_ranker(cls, value: str) -> str:
        if value not in ("memory", "lancedb"):
            raise ValueError(f"retrieval text_ranker {value!r} is not one of memory, lancedb")
        return value


ROLES = ("agent", "staff", "admin")


def key_fingerprint(key: str) -> str:
    """What names a key in traces and logs (a sha256 prefix), never the key itself."""
    return "key-" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:12]


class ApiKeyConfig(BaseModel):
    """One API key: who holds it (``name``, kept with its traces) and what it may do (``role``).

    ``agent``: retrieval, its own traces, outcomes, hand-offs. ``staff``: the routed-question
    queue, answers, review. ``admin``: everything, operations included (service/deps.py).
    """

    name: str = Field(min_length=1, max_length=100)
    key: str = Field(min_length=1, repr=False)
    role: Literal["agent", "staff", "admin"] = "agent"


def legacy_api_key(key: str) -> ApiKeyConfig:
    """A bare key (the old flat ``api_keys`` list): an agent key named by its fingerprint, with a warning."""
    name = key_fingerprint(key)
    log.warning("api_keys: a bare key (%s) is read as an agent key; give each key a name and a role "
                "(api_keys: [{name: bot, key: ..., role: agent}])", name)
    return ApiKeyConfig(name=name, key=key, role="agent")


class ServiceConfig(BaseModel):
    """The HTTP edge (``service:`` in freshcontext.yaml): body limits, staff sessions, operations endpoints."""

    max_body_bytes: int = Field(default=64 * 1024, ge=1024)  # every route; the staff webhook has routing.max_webhook_body_bytes
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)  # a staff page session, from sign-in
    login_attempts: int = Field(default=5, ge=1)  # failed staff sign-ins per client address per window, then 429
    login_window_seconds: float = Field(default=300.0, gt=0)
    # /metrics and /readyz's details: an admin key, or (when true) any caller on a loopback
    # connection (the server bound to 127.0.0.1, or a request made on the machine itself).
    # Behind a reverse proxy on the same host, set false: every request then arrives on loopback.
    ops_open_on_loopback: bool = True


class GoldenSetConfig(BaseModel):
    """A labelled set: ``golden`` (questions about this home's own documents) or ``beir`` (its own corpus)."""

    name: str
    path: Path  # relative paths are relative to the home
    format: str = "golden"  # golden | beir
    max_queries: int | None = Field(default=None, ge=1)  # BEIR sets can be large; evaluate the first N judged

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in ("golden", "beir"):
            raise ValueError(f"golden set format {value!r} is not one of golden, beir")
        return value


class QualityConfig(BaseModel):
    """Golden sets and the thresholds the quality checks and the promotion gate apply (context_store/measure/quality.py)."""

    golden_sets: list[GoldenSetConfig] = Field(default_factory=list)
    k: int = Field(default=10, ge=1, le=100)
    ndcg_floor: float = Field(default=0.5, ge=0.0, le=1.0)
    recall_floor: float = Field(default=0.6, ge=0.0, le=1.0)
    mrr_floor: float = Field(default=0.4, ge=0.0, le=1.0)
    answer_changed_floor: float = Field(default=0.7, ge=0.0, le=1.0)  # share of changed answers where the current one wins
    tolerance: float = Field(default=0.05, ge=0.0, le=1.0)  # allowed drop below the last good run
    routing_ece_ceiling: float = Field(default=0.15, ge=0.0, le=1.0)
    routing_target_precision: float = Field(default=0.9, gt=0.0, lt=1.0)
    time_to_knowledge_p95_ceiling_s: float = Field(default=3600.0, gt=0.0)
    promotion_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)  # a candidate may be this much worse than live
    worst_queries: int = Field(default=10, ge=0, le=100)


class OutcomesConfig(BaseModel):
    """What happened after a response (context_store/route/outcomes.py), the calibrator learned from it
    (context_store/measure/outcome_calibration.py) and the resolution scorecard's floors (context_store/measure/resolution.py)."""

    max_per_trace: int = Field(default=20, ge=1)  # more outcomes than this for one response is a flood: 429
    clock_skew_seconds: float = Field(default=60.0, ge=0.0)  # an outcome's ``at`` may be this far ahead of ours
    max_note_chars: int = Field(default=2000, ge=0)
    review_csat_max: int = Field(default=2, ge=1, le=5)  # a CSAT at or below this opens a review of a bot answer
    # calibration from outcomes
    min_outcomes: int = Field(default=50, ge=10)  # labelled answered responses needed to fit a calibrator
    min_per_class: int = Field(default=5, ge=1)  # ... of which at least this many succeeded, and this many failed
    target_precision: float = Field(default=0.9, gt=0.0, lt=1.0)  # the threshold is chosen for this answer precision
    holdout_share: float = Field(default=0.3, gt=0.0, lt=1.0)  # the newest share of outcomes, judged, never fitted on
    promotion_tolerance: float = Field(default=0.0, ge=0.0, le=1.0)  # the new calibrator may be this much worse
    # the resolution scorecard: window and floors (rates in [0, 1]; checks judge only with enough outcomes)
    scorecard_days: float = Field(default=7.0, gt=0.0)
    scorecard_min_outcomes: int = Field(default=20, ge=1)
    task_success_floor: float = Field(default=0.7, ge=0.0, le=1.0)
    first_contact_resolution_floor: float = Field(default=0.6, ge=0.0, le=1.0)
    repeat_contact_rate_max: float = Field(default=0.2, ge=0.0, le=1.0)
    reopen_rate_max: float = Field(default=0.1, ge=0.0, le=1.0)
    escalation_success_floor: float = Field(default=0.5, ge=0.0, le=1.0)
    owner_assignment_floor: float = Field(default=0.5, ge=0.0, le=1.0)
    time_to_resolve_p95_max_s: float = Field(default=48 * 3600.0, gt=0.0)
    confidence_outcome_gap_max: float = Field(default=0.15, ge=0.0, le=1.0)  # ECE of the served confidence on outcomes


class Settings(BaseModel):
    home: Path
    database_url: str | None = None
    lancedb_uri: str | None = None
    object_storage: ObjectStorageConfig = Field(default_factory=ObjectStorageConfig)
    company_sources: list[SourceConfig] = Field(default_factory=list)
    user_sources: list[SourceConfig] = Field(default_factory=list)
    max_file_bytes: int = Field(default=2_000_000, ge=1)
    # chunks embedded per wave; each wave is one LanceDB commit, written while the next embeds
    index_wave_chunks: int = Field(default=2048, ge=1)
    user_state_max_age_hours: float = Field(default=72.0, gt=0)
    freshness_sla_seconds: float = Field(default=300.0, gt=0)
    # share of served results that may quote an already superseded version (the no_stale_hits check)
    stale_hit_rate_max: float = Field(default=0.0, ge=0.0, le=1.0)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    chunking: ChunkingConfig = Field(default_factory=ChunkingConfig)
    api_keys: list[ApiKeyConfig] = Field(default_factory=list)
    service: ServiceConfig = Field(default_factory=ServiceConfig)
    routing: dict[str, Any] = Field(default_factory=dict)  # validated by context_store.route.triggers.RoutingConfig
    mcp: dict[str, Any] = Field(default_factory=dict)  # the MCP server's: validated by service.mcp.config.McpConfig
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    outcomes: OutcomesConfig = Field(default_factory=OutcomesConfig)
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _legacy_keys(cls, value: Any) -> Any:
        return [legacy_api_key(v) if isinstance(v, str) else v for v in value] if isinstance(value, list) else value

    @field_validator("api_keys")
    @classmethod
    def _unique_names(cls, value: list[ApiKeyConfig]) -> list[ApiKeyConfig]:
        names = [k.name for k in value]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"api_keys: each name must be unique (a name is whose traces a key reads); repeated: {', '.join(repeated)}")
        keys = [k.key for k in value]
        if len(set(keys)) != len(keys):
            shared = sorted({k.name for k in value if keys.count(k.key) > 1})
            raise ValueError(f"api_keys: {', '.join(shared)} share one key; each key must be different")
        return value

    @property
    def sql_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'freshcontext.db'}"

    @property
    def vector_uri(self) -> str:
        return self.lancedb_uri or str(self.home / "lancedb")

    def vector_storage_options(self) -> dict[str, str] | None:
        """LanceDB ``storage_options`` for an object-store URI; None for a local directory."""
        if "://" not in self.vector_uri:
            return None
        return self.object_storage.storage_options() or None

    def index_code_version(self) -> str:
        """Changes whenever chunking or the embedding model changes, so stale indexes show."""
        raw = f"{self.chunking.fingerprint()}|{self.embedding.model}"
        return hashlib.sha256(raw.encode()).hexdigest()[:12]

    @classmethod
    def load(cls, home: str | Path | None = None, **overrides: Any) -> "Settings":
        """Read ``<home>/freshcontext.yaml`` if present; environment beats file, arguments beat both."""
        home_path = resolve_home(home)
        data: dict[str, Any] = {}
        config_path = home_path / CONFIG_FILE
        if config_path.exists():
            try:
                loaded = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{config_path}: not valid YAML ({exc})") from exc
            if not isinstance(loaded, dict):
                raise ConfigError(f"{config_path}: expected a mapping at the top level")
            data.update(loaded)
        for key, env in (("database_url", "FRESHCONTEXT_DATABASE_URL"), ("lancedb_uri", "FRESHCONTEXT_LANCEDB_URI")):
            if os.environ.get(env):
                data[key] = os.environ[env]
        if os.environ.get(EMBEDDING_DEVICE_ENV):
            data["embedding"] = {**(data.get("embedding") or {}), "device": os.environ[EMBEDDING_DEVICE_ENV]}
        storage_env = {key: os.environ[env] for key, env in _OBJECT_STORAGE_ENV if os.environ.get(env)}
        if storage_env:
            data["object_storage"] = {**(data.get("object_storage") or {}), **storage_env}
        data.update({k: v for k, v in overrides.items() if v is not None})
        data["home"] = home_path
        for key in ("company_sources", "user_sources"):
            data[key] = [_resolve_source(s, home_path) for s in data.get(key) or []]
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{config_path}: {exc}") from exc

    def save(self) -> Path:
        """Write the settings back to the home's config file (paths kept absolute)."""
        self.home.mkdir(parents=True, exist_ok=True)
        path = self.home / CONFIG_FILE
        # secrets stay in the environment: a config file gets copied, committed and mailed around
        payload = self.model_dump(
            mode="json",
            exclude={"home": True, "object_storage": {"access_key_id", "secret_access_key", "session_token"}},
            exclude_none=True,
            # only what differs from the defaults: a later release's better defaults then apply
            exclude_defaults=True,
        )
        if payload.get("object_storage") == ObjectStorageConfig().model_dump(mode="json", exclude_none=True):
            payload.pop("object_storage")
        path.write_text(yaml.safe_dump(payload, sort_keys=False), encoding="utf-8")
        return path


def _resolve_source(source: Any, home: Path) -> Any:
    if isinstance(source, SourceConfig):
        source = source.model_dump()
    if isinstance(source, dict) and "path" in source:
        path = Path(str(source["path"])).expanduser()
        source = {**source, "path": path if path.is_absolute() else (home / path).resolve()}
    return source


def resolve_home(home: str | Path | None = None) -> Path:
    """Explicit argument, else ``FRESHCONTEXT_HOME``, else ``./.freshcontext``."""
    chosen = home or os.environ.get("FRESHCONTEXT_HOME") or ".freshcontext"
    return Path(chosen).expanduser().resolve()

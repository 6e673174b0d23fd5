"""Settings: one object feeds the Python API, the CLI and the service.

Every field can be set by a ``CANONLABEL_<NAME>`` environment variable, e.g.
``CANONLABEL_LLM=openai:gpt-4.1-mini``, ``CANONLABEL_LLM_BASE_URL=http://localhost:8080/v1``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

CandidateSource = Literal["embedding", "fulltext", "both"]


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "canonlabel"


class Settings(BaseSettings):
    """canonlabel configuration (defaults are calibrated for the bundled MiniLM model)."""

    model_config = SettingsConfigDict(env_prefix="CANONLABEL_", extra="ignore")

    db: str = Field(
        "canonlabel.db", description="SQLite store path, or a postgresql:// URL of a shared store"
    )
    llm: str = Field("local", description="labeler spec: local, local:PATH.gguf, openai:MODEL")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible base URL")
    llm_api_key: str | None = Field(None, description="API key (else OPENAI_API_KEY)")
    llm_timeout: float = Field(60.0, gt=0, description="seconds per LLM request")
    llm_max_retries: int = Field(4, ge=0, description="retries of retryable transport errors")
    embedder: str = Field("minilm", description="embedder spec: minilm, st:PATH, openai:MODEL")
    embedder_base_url: str | None = None
    embedder_api_key: str | None = None
    min_similarity: float = Field(0.8, ge=0, le=1, description="semantic cache threshold")
    label_similarity: float = Field(0.70, ge=0, le=1, description="raw-label merge threshold")
    candidates: int | None = Field(
        None,
        ge=0,
        le=50,
        description="existing labels shown to the LLM (default: the LLM's own, else 3)",
    )
    candidate_source: CandidateSource = "embedding"
    candidate_min_similarity: float = Field(
        0.70, ge=-1, le=1, description="embedding candidates less similar than this are not shown"
    )
    llm_cache: Path | None = Field(None, description="SQLite file caching LLM answers by prompt")
    store_hits: bool = False
    retry_failed: bool = Field(
        False, description="ask the LLM again for items whose answers were invalid"
    )
    max_chars: int = Field(2000, ge=16, description="texts longer than this are truncated")
    concurrency: int = Field(1, ge=1, le=256)
    texts_per_call: int = Field(
        1,
        ge=1,
        le=64,
        description="open questions sent in one LLM call (an OpenAI-compatible LLM; "
        "the prompt's fixed part is then paid once per call, see canonlabel.llm.group)",
    )
    consolidate_every: int = Field(
        10, ge=0, description="consolidate after this many new raw labels (0: only by hand)"
    )
    consolidate_growth: float = Field(
        0.25, ge=0, description="...or after this share of the raw labels, if more"
    )
    consolidate_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="combined similarity at which raw labels are grouped without asking "
        "(default: the LLM's own, else 0.85; grouping by items: the mean resultant length "
        "a label's members keep)",
    )
    adjudication_budget: int = Field(
        200, ge=0, description="most LLM calls on borderline groups per consolidation (0: none)"
    )
    adjudication_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="adjudication calls in all, as a share of the LLM labelling calls so far "
        "(default: the LLM's own, else 0.08)",
    )
    adjudication_floor: float = Field(
        0.4, ge=0, le=1, description="lowest combined similarity a pair is put to the LLM at"
    )
    adjudication_batch: int = Field(
        16, ge=1, le=50, description="borderline pairs judged in one LLM call"
    )
    consolidate_name_weight: float | None = Field(
        None,
        ge=0,
        le=1,
        description="weight of name similarity against member similarity "
        "(default: the LLM's own, else 0.6)",
    )
    consensus: bool = Field(
        True,
        description="move LLM answers the evidence contradicts to the consensus label at "
        "every consolidation (off only to measure what it does)",
    )
    consolidate_by: Literal["raw_labels", "items"] | None = Field(
        None,
        description="what consolidation groups: raw labels, moved whole, or the items "
        "themselves, for an LLM whose raw labels mix unrelated texts (default: the LLM's "
        "own, else raw_labels; with items the threshold is the coherence a label's "
        "members must keep)",
    )
    router: bool = Field(
        True, description="a head trained online answers confident items without the LLM"
    )
    router_min_items: int = Field(
        500, ge=10, description="labelled items (LLM answers and hits) before the first head"
    )
    router_retrain_every: int = Field(
        500, ge=10, description="refit after this many new labelled items (and 25% growth)"
    )
    router_max_items: int = Field(
        20_000, ge=100, description="items answered without the LLM kept to train the head"
    )
    router_min_support: int = Field(3, ge=1, description="labels with fewer items are not learned")
    router_min_audits: int = Field(
        20, ge=1, description="audits a label needs before it gets its own threshold"
    )
    max_error: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="bound on the error of non-LLM answers beyond the LLM path's own "
        "(estimated from near-duplicate texts; default: the LLM's declared one, else 0.05)",
    )
    audit_rate: float = Field(
        0.02, ge=0, le=1, description="share of router answers also sent to the LLM to audit"
    )
    max_llm_calls: int | None = Field(
        None, ge=0, description="stop asking the LLM after this many calls (items then fail)"
    )
    projection: str = Field("pca", pattern="^(pca|umap)$", description="map of the UI: pca | umap")
    guard: bool = Field(
        True, description="keep texts from dictating labels (redact, no copies, grounding)"
    )
    grounding_min_similarity: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="a new raw label's cosine to its text must reach this "
        "(default: measured per embedder, 0.15 for MiniLM; none for others)",
    )
    lock_wait: float = Field(
        0.0, ge=0, description="seconds to wait for another process writing the store"
    )
    cache_dir: Path = Field(default_factory=default_cache_dir)
    # service
    api_token: str | None = Field(None, description="bearer token required by the service")
    admin_token: str | None = Field(None, description="extra token for curation routes")
    max_body_bytes: int = Field(1 << 20, ge=1024, description="largest request body")
    max_text_chars: int = Field(20_000, ge=1, description="longest text a request may send")
    max_batch: int = Field(256, ge=1, le=10_000, description="items per batch request")
    # shared (PostgreSQL) stores
    sync_seconds: float = Field(
        1.0, ge=0, description="how often a process reads other processes' labels and hits"
    )
    pool_size: int = Field(4, ge=1, description="PostgreSQL connections per process")
    index: Literal["memory", "pgvector"] = Field(
        "memory", description="semantic cache search: in memory, or pgvector HNSW in PostgreSQL"
    )
    hnsw_ef_search: int = Field(64, ge=1, description="pgvector HNSW candidates per query")

    @field_validator("db", mode="before")
    @classmethod
    def _db_text(cls, value: object) -> object:
        return os.fspath(value) if isinstance(value, os.PathLike) else value


def load_settings(config: Path | str | None = None, **overrides) -> Settings:
    """Settings from defaults < config file (YAML/JSON) < ``CANONLABEL_*`` env < overrides.

    ``config`` defaults to ``$CANONLABEL_CONFIG``; ``None`` overrides are ignored, so CLI
    options left unset do not mask the file or the environment.
    """
    import os

    from canonlabel.errors import ConfigError

    try:
        settings = Settings()
    except Exception as exc:  # pydantic ValidationError on a bad env value
        raise ConfigError(f"invalid CANONLABEL_* environment setting: {exc}") from exc
    config = config or os.environ.get("CANONLABEL_CONFIG")
    values: dict = {}
    if config:
        values = {
            k: v
            for k, v in read_config(Path(config)).items()
            if f"CANONLABEL_{k.upper()}" not in os.environ
        }
    values |= {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings.model_validate(settings.model_dump() | values)
    except Exception as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc


# settings that no longer exist, and why, so a config file that sets one is told
RETIRED = {
    "router_llm_floor": "non-LLM answers are now always bounded max_error above the LLM's "
    "own error (its floor), see docs/router.md",
}


def read_config(path: Path) -> dict:
    import yaml

    from canonlabel.errors import ConfigError

    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid YAML/JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings")
    retired = sorted(set(data) & set(RETIRED))
    if retired:
        raise ConfigError(
            f"config file {path} sets {retired[0]}, which was retired: {RETIRED[retired[0]]}; "
            "remove it"
        )
    unknown = set(data) - set(Settings.model_fields)
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown settings {sorted(unknown)}; "
            f"known: {sorted(Settings.model_fields)}"
        )
    return data


def write_config(path: Path, values: dict) -> None:
    """Merge ``values`` into a YAML config file (created if missing)."""
    import yaml

    current = read_config(path) if path.is_file() else {}
    path.write_text(yaml.safe_dump(current | values, sort_keys=True), encoding="utf-8")

"""Settings: one object feeds the Python API, the CLI and the service.

Every field can be set by a ``CANONLABEL_<NAME>`` environment variable, e.g.
``CANONLABEL_LLM=openai:gpt-4.1-mini``, ``CANONLABEL_LLM_BASE_URL=http://localhost:8080/v1``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

CandidateSource = Literal["embedding", "fulltext", "both"]


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "canonlabel"


class Settings(BaseSettings):
    """canonlabel configuration (defaults are calibrated for the bundled MiniLM model)."""

    model_config = SettingsConfigDict(env_prefix="CANONLABEL_", extra="ignore")

    db: Path = Field(Path("canonlabel.db"), description="SQLite store path")
    llm: str = Field("local", description="labeler spec: local, local:PATH.gguf, openai:MODEL")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible base URL")
    llm_api_key: str | None = Field(None, description="API key (else OPENAI_API_KEY)")
    llm_timeout: float = Field(60.0, gt=0, description="seconds per LLM request")
    llm_max_retries: int = Field(4, ge=0, description="retries of retryable transport errors")
    embedder: str = Field("minilm", description="embedder spec: minilm, st:PATH, openai:MODEL")
    embedder_base_url: str | None = None
    embedder_api_key: str | None = None
    min_similarity: float = Field(0.8, ge=0, le=1, description="semantic cache threshold")
    label_similarity: float = Field(0.75, ge=0, le=1, description="raw-label merge threshold")
    candidates: int = Field(5, ge=0, le=50, description="existing labels shown to the LLM")
    candidate_source: CandidateSource = "embedding"
    store_hits: bool = False
    retry_failed: bool = Field(
        False, description="ask the LLM again for items whose answers were invalid"
    )
    max_chars: int = Field(2000, ge=16, description="texts longer than this are truncated")
    concurrency: int = Field(1, ge=1, le=256)
    cache_dir: Path = Field(default_factory=default_cache_dir)

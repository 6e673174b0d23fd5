"""Vector indexes over L2-normalised float32 vectors."""

from canonlabel.index.base import VectorIndex
from canonlabel.index.exact import ExactIndex

__all__ = ["ExactIndex", "PgVectorIndex", "VectorIndex"]


def __getattr__(name: str):
    if name == "PgVectorIndex":
        from canonlabel.index.pgvector import PgVectorIndex

        return PgVectorIndex
    raise AttributeError(name)

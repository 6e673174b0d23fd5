"""Vector indexes over L2-normalised float32 vectors."""

from canonlabel.index.base import VectorIndex
from canonlabel.index.exact import ExactIndex

__all__ = ["ExactIndex", "VectorIndex"]

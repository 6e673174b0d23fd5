"""canonlabel: consistent open-set labels for streams of short texts."""

from canonlabel.canon import clean_label
from canonlabel.config import Settings
from canonlabel.distill import DistilledClassifier
from canonlabel.errors import (
    BackendError,
    CanonlabelError,
    ConfigError,
    EmptyTextError,
    IncompatibleStoreError,
    InputError,
    LabelError,
    MissingDependencyError,
    StoreError,
)
from canonlabel.pipeline import Classifier
from canonlabel.types import Label, LabelRequest, LabelResponse, Result, Usage

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "CanonlabelError",
    "Classifier",
    "ConfigError",
    "DistilledClassifier",
    "EmptyTextError",
    "IncompatibleStoreError",
    "InputError",
    "Label",
    "LabelError",
    "LabelRequest",
    "LabelResponse",
    "MissingDependencyError",
    "Result",
    "Settings",
    "StoreError",
    "Usage",
    "__version__",
    "clean_label",
]

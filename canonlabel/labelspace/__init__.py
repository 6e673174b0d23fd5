"""The label space and everything that changes it: canonicalisation of raw labels,
curation by hand (merge, rename, split, undo), maintenance and consolidation.

It is the single owner of labels, aliases, representatives and the merge log; the engine,
the CLI and the service call down into it and nothing here calls up.
"""

from canonlabel.errors import CurationError
from canonlabel.labelspace.consolidate import consolidate
from canonlabel.labelspace.curation import maintain, merge, rename, split, typical_centroids, undo
from canonlabel.labelspace.space import LabelSpace

__all__ = [
    "CurationError",
    "LabelSpace",
    "consolidate",
    "maintain",
    "merge",
    "rename",
    "split",
    "typical_centroids",
    "undo",
]

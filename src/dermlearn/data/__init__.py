"""Data: read real datasets as distributed into a validated :class:`Manifest`; decode images safely."""
from dermlearn.data.images import read_image
from dermlearn.data.loading import detect_format, load, parse_spec
from dermlearn.data.manifest import COLUMNS, Manifest, Problem
from dermlearn.data.readers import READERS

FORMATS = tuple(READERS)

__all__ = ["COLUMNS", "FORMATS", "Manifest", "Problem", "detect_format", "load", "parse_spec",
           "read_image"]

"""dermlearn: dermatologist-level skin-lesion classification by transfer learning.

The package is laid out as the pipeline: ``data`` (readers, Manifest, safe decoding) ->
``taxonomy`` (tree, partitioning, PA) -> ``splits`` (lesion-safe folds) -> ``models`` ->
``training`` -> ``evaluation`` -> ``explain`` -> ``serving``; ``cli`` is a thin layer on top.
"""
__version__ = "0.1.0"

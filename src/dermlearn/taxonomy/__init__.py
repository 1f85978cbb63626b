"""Diagnosis taxonomy: tree + aliases + levels, Esteva's partitioning, and probability aggregation."""
from dermlearn.taxonomy.inference import aggregate, level_labels, node_probability
from dermlearn.taxonomy.io import builtin_taxonomies, load_taxonomy, read_aliases
from dermlearn.taxonomy.labels import normalize_label
from dermlearn.taxonomy.partition import (
    assign_classes,
    class_counts,
    label_counts,
    partition,
    resolve_classes,
)
from dermlearn.taxonomy.tree import LevelSpec, Taxonomy

__all__ = [
    "LevelSpec",
    "Taxonomy",
    "aggregate",
    "assign_classes",
    "builtin_taxonomies",
    "class_counts",
    "label_counts",
    "level_labels",
    "load_taxonomy",
    "node_probability",
    "normalize_label",
    "partition",
    "read_aliases",
    "resolve_classes",
]

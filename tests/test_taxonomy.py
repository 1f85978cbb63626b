"""Hand-computed tests for dermlearn.taxonomy: tree, loading, partitioning and PA."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import yaml

from dermlearn.errors import TaxonomyError
from dermlearn.taxonomy import (
    Taxonomy,
    aggregate,
    assign_classes,
    builtin_taxonomies,
    class_counts,
    label_counts,
    level_labels,
    load_taxonomy,
    node_probability,
    normalize_label,
    partition,
)

# r
# ├── a
# │   ├── a1
# │   │   ├── a1x
# │   │   └── a1y
# │   └── a2
# ├── b
# └── c
#     └── c1
SMALL = {
    "name": "small",
    "root": "r",
    "nodes": [
        {"id": "a", "name": "Alpha", "children": [
            {"id": "a1", "children": ["a1x", "a1y"]},
            {"id": "a2", "aliases": ["second a"]},
        ]},
        {"id": "b", "aliases": ["Bee"]},
        {"id": "c", "children": ["c1"]},
    ],
    "levels": {
        "top": {"a": ["a"], "b": ["b"], "c": ["c"]},
        "nested": {"x": ["a1x"], "rest": ["r"]},
    },
}


@pytest.fixture(scope="module")
def small() -> Taxonomy:
    return Taxonomy.from_dict(SMALL)


@pytest.fixture(scope="module")
def derm() -> Taxonomy:
    return load_taxonomy("dermatology")


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------- tree structure
def test_structure(small):
    assert small.name == "small" and small.root == "r"
    assert small.nodes == ("r", "a", "a1", "a1x", "a1y", "a2", "b", "c", "c1")
    assert small.leaves == ("a1x", "a1y", "a2", "b", "c1")
    assert small.parent("a1x") == "a1" and small.parent("r") is None
    assert small.children("a") == ("a1", "a2") and small.children("b") == ()
    assert small.ancestors("a1x") == ("a1", "a", "r")
    assert small.ancestors("r") == ()
    assert small.descendants("a") == ("a1", "a1x", "a1y", "a2")
    assert small.descendants("b") == ()
    assert small.is_ancestor_or_self("a", "a1y") and small.is_ancestor_or_self("a1", "a1")
    assert not small.is_ancestor_or_self("a1y", "a") and not small.is_ancestor_or_self("b", "c1")
    assert [small.depth(n) for n in ("r", "a", "a1", "a1x")] == [0, 1, 2, 3]
    assert small.display_name("a") == "Alpha" and small.display_name("a1") == "a1"
    assert "a1" in small and "Alpha" not in small and 3 not in small
    assert len(small) == 9 and list(small) == list(small.nodes)


def test_unknown_node_is_named_with_hint(small):
    with pytest.raises(TaxonomyError, match="unknown node id 'Alpha'.*did you mean node 'a'"):
        small.children("Alpha")
    with pytest.raises(TaxonomyError, match="'zz'"):
        small.depth("zz")


def test_immutable_and_picklable(small):
    with pytest.raises(AttributeError):
        small._root = "x"  # type: ignore[misc]
    small.levels["top"]["a"].append("b")  # a copy
    assert small.levels["top"]["a"] == ["a"]
    again = pickle.loads(pickle.dumps(small))
    assert again == small and again.level_map("top") == small.level_map("top")


def test_direct_construction_and_errors():
    t = Taxonomy("t", "r", {"r": ["x", "y"], "x": ["x1"]}, names={"x": "Ex"}, aliases={"y": ["why"]})
    assert t.nodes == ("r", "x", "x1", "y") and t.canonical("WHY") == "y"
    with pytest.raises(TaxonomyError, match="duplicate node id 'x'"):
        Taxonomy("t", "r", {"r": ["x", "y"], "y": ["x"]})
    with pytest.raises(TaxonomyError, match="'z' are not reachable from root 'r'"):
        Taxonomy("t", "r", {"r": ["x"], "z": ["w"]})
    with pytest.raises(TaxonomyError, match="duplicate node id 'r'"):
        Taxonomy("t", "r", {"r": ["x"], "x": ["r"]})


# ---------------------------------------------------------------------- labels
def test_normalize_label():
    # a possessive 's and every punctuation mark are ignored (issue 23: 'Bowen disease')
    assert normalize_label("  Bowen's-Disease ") == normalize_label("bowen_disease") == "bowen disease"
    assert normalize_label("Lentigo, NOS (solar)") == "lentigo nos solar"
    assert normalize_label("Kaposi’s sarcoma") == "kaposi sarcoma"
    assert normalize_label("Café-au-lait  macule") == "cafe au lait macule"


def test_canonical_small(small):
    assert small.canonical("a1x") == "a1x"
    assert small.canonical("  ALPHA ") == "a"
    assert small.canonical("second-a") == small.canonical("Second_A") == "a2"
    assert small.canonical("bee") == "b"
    assert small.canonical("nope") is None and small.canonical(None) is None and small.canonical(3.0) is None
    with pytest.raises(TaxonomyError, match="unknown label 'nope'"):
        small.resolve("nope")


@pytest.mark.parametrize("label,node", [
    ("Common Nevus", "common_nevus"), ("Atypical Nevus", "atypical_nevus"), ("dysplastic nevus", "atypical_nevus"),
    ("Melanoma", "mel"), ("MEL", "mel"), ("lentigo maligna", "mel"), ("AK", "akiec"), ("akiec", "akiec"),
    ("Bowen's disease", "akiec"), ("bowens disease", "akiec"), ("actinic keratoses", "akiec"),
    ("SCC", "scc"), ("squamous cell carcinoma", "scc"), ("NV", "nv"), ("melanocytic nevi", "nv"), ("nevus", "nv"),
    ("basal cell carcinoma", "bcc"), ("benign keratosis-like lesions", "bkl"), ("dermatofibroma", "df"),
    ("vascular lesions", "vasc"), ("VASC", "vasc"), ("seborrheic keratosis", "seborrheic_keratosis"),
    ("lentigo NOS", "lentigo_nos"), ("lichenoid keratosis", "lichenoid_keratosis"), ("solar lentigo", "solar_lentigo"),
    ("cafe-au-lait macule", "cafe_au_lait_macule"), ("Café-au-lait macule", "cafe_au_lait_macule"),
    ("atypical melanocytic proliferation", "atypical_melanocytic_proliferation"),
    ("Malignant melanoma", "malignant_melanoma"), ("unknown", None),
])
def test_builtin_aliases(derm, label, node):
    assert derm.canonical(label) == node


def test_builtin_covers_dataset_codes(derm):
    for code in ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc", "scc"]:
        assert code in derm
    for code in ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]:
        assert derm.canonical(code) is not None
    assert derm.children("skin_lesion") == ("benign", "malignant", "non_neoplastic")
    assert set(derm.children("bkl")) >= {"seborrheic_keratosis", "solar_lentigo", "lichenoid_keratosis", "lentigo_nos"}
    assert set(derm.children("nv")) >= {"common_nevus", "atypical_nevus"}
    assert derm.parent("scc") == "malignant_epidermal"
    assert (derm.parent("cafe_au_lait_macule") == derm.parent("atypical_melanocytic_proliferation")
            == "benign_melanocytic")
    assert derm.parent("vasc") == derm.parent("df") == "benign_dermal"
    assert len(derm.level_groups("esteva9")) == 9


# ---------------------------------------------------------------------- levels
def test_builtin_level_maps(derm):
    assert derm.level_map("esteva3")["mel"] == "malignant"
    assert derm.level_map("esteva3")["common_nevus"] == "benign"
    assert "skin_lesion" not in derm.level_map("esteva3")
    assert derm.level_map("esteva9")["nv"] == "benign_melanocytic"
    assert derm.level_map("esteva9")["scc"] == "malignant_epidermal"
    ham = derm.level_map("ham7")
    assert ham["atypical_nevus"] == "nv" and ham["scc"] == "akiec" and ham["solar_lentigo"] == "bkl"
    assert ham["angioma"] == "vasc" and ham["malignant_melanoma"] == "mel"
    assert "malignant" not in ham and "psoriasis" not in ham
    mvr = derm.level_map("melanoma_vs_rest")
    assert mvr["mel"] == "melanoma" and mvr["bcc"] == "rest" and mvr["psoriasis"] == "rest"
    assert "skin_lesion" not in mvr and "malignant" not in mvr  # coarser: they span both groups
    mvb = derm.level_map("malignant_vs_benign")
    assert mvb["inflammatory"] == "benign" and mvb["akiec"] == "malignant"
    assert list(derm.level_groups("ham7")) == ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc"]
    assert list(derm.level_groups("isic2019")) == ["mel", "nv", "bcc", "ak", "bkl", "df", "vasc", "scc"]


def test_map_labels(derm, small):
    assert derm.map_labels(["MEL", "Common Nevus", "AK", "SCC"], "ham7") == ["mel", "nv", "akiec", "akiec"]
    assert level_labels(["Melanoma", "bcc"], derm, "melanoma_vs_rest") == ["melanoma", "rest"]
    with pytest.raises(TaxonomyError, match="unknown label 'foo'"):
        derm.map_labels(["mel", "foo"], "ham7")
    with pytest.raises(TaxonomyError, match="label 'malignant'.*no group at level 'ham7'.*coarser"):
        derm.map_labels(["malignant"], "ham7")
    with pytest.raises(TaxonomyError, match="label 'psoriasis'.*outside every group"):
        derm.map_labels(["psoriasis"], "ham7")
    with pytest.raises(TaxonomyError, match="unknown level 'ham8'.*esteva3"):
        derm.map_labels(["mel"], "ham8")
    # nested groups: deepest listed ancestor-or-self wins; a node spanning groups has none
    assert small.level_map("nested") == {"a1x": "x", "a1y": "rest", "a2": "rest", "b": "rest", "c": "rest",
                                         "c1": "rest"}
    assert small.map_labels(["Bee", "a1x"], "nested") == ["rest", "x"]
    with pytest.raises(TaxonomyError, match="label 'a1'.*falls in group 'rest'.*also holds group.*'x'"):
        small.map_labels(["a1"], "nested")


def test_adhoc_levels(small):
    assert small.level_groups(["a1", "b"]) == {"a1": ["a1"], "b": ["b"]}
    assert small.level_map(["a1", "Bee"]) == {"a1": "a1", "a1x": "a1", "a1y": "a1", "b": "b"}
    assert small.level_map({"ab": ["a", "b"]})["a2"] == "ab"
    with pytest.raises(TaxonomyError, match="listed in both group 'p' and group 'q'"):
        small.level_groups({"p": ["a"], "q": ["a"]})
    with pytest.raises(TaxonomyError, match="unknown label 'zz'"):
        small.level_map(["zz"])


# ---------------------------------------------------------------------- render / dict / flat
def test_render(small):
    assert small.render() == "\n".join([
        "r",
        "├── a (Alpha)",
        "│   ├── a1",
        "│   │   ├── a1x",
        "│   │   └── a1y",
        "│   └── a2",
        "├── b",
        "└── c",
        "    └── c1",
    ])
    counted = small.render({"a1x": 3, "a": 1, "Bee": 10}, max_depth=1)
    assert counted.splitlines() == ["r  n=14", "├── a (Alpha)  n=4 (1 here)  +4 below", "├── b  n=10",
                                    "└── c  n=0  +1 below"]
    assert "[second a]" in small.render(show_aliases=True)


def test_to_dict_round_trip(small, derm):
    assert Taxonomy.from_dict(small.to_dict()) == small
    again = Taxonomy.from_dict(json.loads(json.dumps(derm.to_dict())))
    assert again == derm and again.nodes == derm.nodes and again.levels == derm.levels


def test_flat():
    t = Taxonomy.flat(["cat", "dog", "cat", "Bird"], name="pets")
    assert t.name == "pets" and t.root == "root" and t.leaves == ("cat", "dog", "Bird")
    assert t.canonical("bird") == "Bird"
    assert t.map_labels(["dog", "cat"], "classes") == ["dog", "cat"]
    with pytest.raises(TaxonomyError, match="'root' collides"):
        Taxonomy.flat(["root", "x"])
    with pytest.raises(TaxonomyError, match="'Root' collides"):
        Taxonomy.flat(["Root", "x"])
    # labels that differ in case or punctuation only are one class (issue 23, defect 2)
    t = Taxonomy.flat(["Dog", "dog", "hot-dog", "Hot dog"])
    assert t.leaves == ("Dog", "hot-dog")
    assert t.canonical("DOG") == "Dog" and t.canonical("hot_dog") == "hot-dog"
    with pytest.raises(TaxonomyError, match="at least one"):
        Taxonomy.flat([])


# ---------------------------------------------------------------------- loading
def test_builtins(derm):
    assert "dermatology" in builtin_taxonomies()
    assert load_taxonomy("dermatology") is derm
    assert load_taxonomy(derm) is derm
    assert load_taxonomy(SMALL).nodes[0] == "r"


def test_load_yaml_and_json(tmp_path, small):
    y = write(tmp_path, "mine.yml", yaml.safe_dump(small.to_dict(), sort_keys=False))
    j = write(tmp_path, "mine.json", json.dumps(small.to_dict()))
    assert load_taxonomy(y) == small
    assert load_taxonomy(str(j)) == small
    nameless = write(tmp_path, "derm_lite.yaml", "root: top\nnodes: [x, {id: y, children: [z]}]\n")
    t = load_taxonomy(nameless)
    assert t.name == "derm_lite" and t.nodes == ("top", "x", "y", "z")


def test_unknown_name_and_missing_file(tmp_path):
    with pytest.raises(TaxonomyError, match="unknown taxonomy 'dermatolgy'.*dermatology"):
        load_taxonomy("dermatolgy")
    with pytest.raises(TaxonomyError, match="not found.*nothere.yaml.*built-in taxonomies: dermatology"):
        load_taxonomy(tmp_path / "nothere.yaml")
    with pytest.raises(TaxonomyError, match=r"must end in \.yaml"):
        load_taxonomy(write(tmp_path, "tree.txt", "root: r\n"))
    with pytest.raises(TaxonomyError, match="cannot load a taxonomy from int"):
        load_taxonomy(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("text,pattern", [
    ("", "bad.yaml: file is empty"),
    ("root: r\nnodes: [a, b\n", "bad.yaml: invalid YAML"),
    ("- a\n- b\n", "bad.yaml: top level must be a mapping"),
    ("nodes: [a]\n", "bad.yaml: missing 'root'"),
    ("root: r\nnodez: [a]\n", "bad.yaml: top level: unknown key.*'nodez'"),
    ("root: r\nnodes:\n  - id: a\n  - name: B\n", r"bad.yaml: nodes\[1\]: node has no 'id'"),
    ("root: r\nnodes:\n  - id: a\n    chidren: [b]\n", r"nodes\[0\] \(node 'a'\): unknown key.*'chidren'"),
    ("root: r\nnodes:\n  - {id: a, children: [x]}\n  - {id: b, children: [x]}\n",
     r"duplicate node id 'x' at nodes\[0\].*children\[0\].*nodes\[1\]"),
    ("root: r\nnodes: [r]\n", "duplicate node id 'r'"),
    ("root: r\nnodes:\n  - {id: a, aliases: [thing]}\n  - {id: b, aliases: [Thing]}\n",
     "alias 'Thing' of node 'b' clashes with 'thing' of node 'a'"),
    ("root: r\nnodes:\n  - {id: a}\n  - {id: b, name: A}\n",
     "display name 'A' of node 'b' clashes with 'a' of node 'a'"),
    ("root: r\nnodes:\n  - {id: a_b}\n  - {id: a-b}\n", "id 'a-b' of node 'a-b' clashes"),
    ("root: r\nnodes: [a, b]\nlevels:\n  lv: {g: [a, zz]}\n", "unknown label 'zz' in group 'g' of level 'lv'"),
    ("root: r\nnodes: [a, b]\nlevels:\n  lv: {g: [a], h: [b, a]}\n",
     "level 'lv' is ambiguous: node 'a' is listed in both group 'g' and group 'h'"),
    ("root: r\nnodes: [a, b]\nlevels:\n  lv: {g: []}\n", "group 'g' of level 'lv' must list at least one node"),
    ("root: r\nnodes: [a, b]\nlevels:\n  lv: 3\n", "level 'lv' must be a mapping"),
    ("root: r\nroot: s\nnodes: [a]\n", "duplicate key 'root' at line 2"),
    ("root: r\nnodes:\n  - id: no\n", r"nodes\[0\]: 'id' must be a string, got bool False \(quote it"),
    ("root: r\nnodes:\n  - {id: a, aliases: x: y}\n", "invalid YAML"),
    ("root: r\nnodes: {a: b}\n", "nodes: expected a list of nodes, got dict"),
    ("root: {id: r, children: [a]}\n", "'root'.*unknown key.*'children'"),
])
def test_malformed_yaml(tmp_path, text, pattern):
    with pytest.raises(TaxonomyError, match=pattern):
        load_taxonomy(write(tmp_path, "bad.yaml", text))


def test_malformed_json(tmp_path):
    with pytest.raises(TaxonomyError, match=r"bad.json: invalid JSON at line 1"):
        load_taxonomy(write(tmp_path, "bad.json", '{"root": "r", "nodes": [}'))
    with pytest.raises(TaxonomyError, match="bad.json: duplicate key 'root'"):
        load_taxonomy(write(tmp_path, "bad.json", '{"root": "r", "root": "s"}'))


# ---------------------------------------------------------------------- partition
@pytest.fixture(scope="module")
def counts() -> dict[str, int]:
    # subtree totals: a1=7, a=10 (1 labelled at 'a' itself), b=10 (big leaf), c=0, r=20
    return {"a1x": 3, "a1y": 4, "a2": 2, "a": 1, "b": 10, "c1": 0}


@pytest.mark.parametrize("size,expected", [
    (5, ["a", "a1x", "a1y", "a2", "b"]),   # 'a' split; its own image forms class 'a'; big leaf 'b' kept
    (7, ["a", "a1x", "a1y", "a2", "b"]),   # a1 total == 7 is not < 7, so it is split
    (8, ["a", "a1", "a2", "b"]),
    (10, ["a", "a1", "a2", "b"]),          # a total == 10 -> split; b == 10 is a leaf
    (11, ["a", "b"]),
    (20, ["a", "b"]),                      # root total == 20 -> split
    (21, ["r"]),
    (1, ["a", "a1x", "a1y", "a2", "b"]),
])
def test_partition_small(small, counts, size, expected):
    assert partition(small, counts, size) == expected
    labels = [n for n, k in counts.items() for _ in range(k)]
    assigned = class_counts(small, labels, expected)
    assert sum(assigned.values()) == len(labels) and all(v > 0 for v in assigned.values())


def test_partition_edge_cases(small):
    assert partition(small, {}, 5) == []
    assert partition(small, {"c1": 9}, 5) == ["c1"]                  # big leaf under an otherwise empty subtree
    assert partition(small, {"c": 9}, 5) == ["c"]                    # images only at an internal node
    assert partition(small, {"Bee": 2, "second a": 1}, 5) == ["r"]   # aliases resolve; whole tree < 5
    with pytest.raises(TaxonomyError, match="max_class_size"):
        partition(small, {"b": 1}, 0)
    with pytest.raises(TaxonomyError, match="max_class_size"):
        partition(small, {"b": 1}, 2.5)  # type: ignore[arg-type]
    with pytest.raises(TaxonomyError, match="count for 'b' must be >= 0"):
        partition(small, {"b": -1}, 5)
    with pytest.raises(TaxonomyError, match="unknown label 'q' in counts"):
        partition(small, {"q": 1}, 5)


def test_partition_esteva_like(derm):
    # HAM10000 class sizes, Esteva's max_class_size=1000
    ham = {"mel": 1113, "nv": 6705, "bcc": 514, "akiec": 327, "bkl": 1099, "df": 115, "vasc": 142}
    classes = partition(derm, ham, 1000)
    assert classes == ["nv", "bkl", "benign_dermal", "mel", "malignant_epidermal"]
    labels = [n for n, k in ham.items() for _ in range(k)]
    got = class_counts(derm, labels, classes)
    assert got == {"nv": 6705, "bkl": 1099, "benign_dermal": 257, "mel": 1113, "malignant_epidermal": 841}
    # PH2-style sub-labels of nv plus unspecified nevi: nv is split, its own images stay class 'nv'
    ph2 = {"Common Nevus": 80, "Atypical Nevus": 80, "nevus": 900, "Melanoma": 40}
    assert partition(derm, ph2, 1000) == ["nv", "common_nevus", "atypical_nevus", "malignant"]


def test_assign_classes(small):
    classes = ["a", "a1x", "a1y", "a2", "b"]
    assert assign_classes(small, ["a1x", "a", "second a", "Bee"], classes) == ["a1x", "a", "a2", "b"]
    assert assign_classes(small, ["a1x", "a1y", "a"], ["a1", "a"]) == ["a1", "a1", "a"]
    with pytest.raises(TaxonomyError, match="label 'a1' .*coarser than the training classes.*'a1x', 'a1y'"):
        assign_classes(small, ["a1"], ["a1x", "a1y"])
    with pytest.raises(TaxonomyError, match="label 'c1' .*outside every training class"):
        assign_classes(small, ["c1"], classes)
    with pytest.raises(TaxonomyError, match="unknown label 'zz'"):
        assign_classes(small, ["zz"], classes)
    with pytest.raises(TaxonomyError, match="listed twice"):
        assign_classes(small, ["b"], ["b", "Bee"])
    assert label_counts(small, ["b", "Bee", "a1x"]) == {"a1x": 1, "b": 2}


# ---------------------------------------------------------------------- PA
def test_node_probability(small):
    classes = ["a", "a1x", "a1y", "a2", "b"]
    probs = np.array([[0.1, 0.2, 0.3, 0.15, 0.25], [0.0, 0.0, 0.0, 0.0, 1.0]])
    np.testing.assert_allclose(node_probability(probs, classes, small, "a"), [0.75, 0.0])
    np.testing.assert_allclose(node_probability(probs, classes, small, "a1"), [0.5, 0.0])
    np.testing.assert_allclose(node_probability(probs, classes, small, "r"), [1.0, 1.0])
    np.testing.assert_allclose(node_probability(probs, classes, small, "c"), [0.0, 0.0])
    np.testing.assert_allclose(node_probability(probs, classes, small, "Bee"), [0.25, 1.0])
    with pytest.raises(TaxonomyError, match="node 'a1x' is finer than training class 'a1'"):
        node_probability(probs[:, :3], ["a1", "a2", "b"], small, "a1x")
    with pytest.raises(TaxonomyError, match=r"shape \(N, 5\).*got \(2, 3\)"):
        node_probability(probs[:, :3], classes, small, "a")


def test_aggregate_small(small):
    classes = ["a", "a1x", "a1y", "a2", "b"]
    probs = np.array([[0.1, 0.2, 0.3, 0.15, 0.25]])
    out, groups = aggregate(probs, classes, small, "top")
    assert groups == ["a", "b", "c"]
    np.testing.assert_allclose(out, [[0.75, 0.25, 0.0]])
    out, groups = aggregate(probs[:, 1:] / 0.9, classes[1:], small, "nested")
    assert groups == ["x", "rest"]
    np.testing.assert_allclose(out, [[0.2 / 0.9, 0.7 / 0.9]])
    # class 'a' holds images labelled exactly 'a': they may be 'a1x' (group x) or not
    with pytest.raises(TaxonomyError, match="class 'a' cannot be aggregated.*group 'rest'.*also holds.*'x'"):
        aggregate(probs, classes, small, "nested")
    out, groups = aggregate(probs, classes, small, {"A": ["a"], "B": ["Bee"], "C": ["c"]})  # ad-hoc mapping
    assert groups == ["A", "B", "C"]
    np.testing.assert_allclose(out, [[0.75, 0.25, 0.0]])
    out, groups = aggregate(probs[:, 1:] / 0.9, classes[1:], small, ["a1", "a", "b"])  # ad-hoc, nested groups
    assert groups == ["a1", "a", "b"]
    np.testing.assert_allclose(out, [[0.5 / 0.9, 0.15 / 0.9, 0.25 / 0.9]])
    with pytest.raises(TaxonomyError, match="training class 'a' cannot be aggregated.*coarser"):
        aggregate(probs, classes, small, ["a1", "a2", "b"])
    with pytest.raises(TaxonomyError, match="training class 'b' cannot be aggregated.*outside every group"):
        aggregate(probs, classes, small, ["a"])


def test_aggregate_builtin(derm):
    classes = ["nv", "bkl", "benign_dermal", "mel", "malignant_epidermal"]
    probs = np.array([[0.4, 0.1, 0.05, 0.3, 0.15]])
    out, groups = aggregate(probs, classes, derm, "esteva3")
    assert groups == ["benign", "malignant", "non_neoplastic"]
    np.testing.assert_allclose(out, [[0.55, 0.45, 0.0]])
    out, groups = aggregate(probs, classes, derm, "melanoma_vs_rest")
    np.testing.assert_allclose(out, [[0.3, 0.7]])
    out, groups = aggregate(probs, classes, derm, "malignant_vs_benign")
    assert groups == ["malignant", "benign"]
    np.testing.assert_allclose(out, [[0.45, 0.55]])
    out, groups = aggregate(probs, classes, derm, "esteva9")
    assert out.shape == (1, 9) and out.sum() == pytest.approx(1.0)
    with pytest.raises(TaxonomyError, match="'benign_dermal' cannot be aggregated.*level 'ham7'.*'df', 'vasc'"):
        aggregate(probs, classes, derm, "ham7")
    ham_classes = ["mel", "nv", "bcc", "akiec", "bkl", "df", "vasc", "scc"]
    out, groups = aggregate(np.full((3, 8), 1 / 8), ham_classes, derm, "ham7")
    np.testing.assert_allclose(out[:, groups.index("akiec")], 0.25)
    np.testing.assert_allclose(out.sum(axis=1), 1.0)

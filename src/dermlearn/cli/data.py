"""``dermlearn data inspect|split|download`` and ``dermlearn taxonomy show``."""
from __future__ import annotations

import argparse
import json

from dermlearn.atomic import check_output_file
from dermlearn.cli.common import (
    DATA_HELP,
    TAXONOMY_HELP,
    add_reading_options,
    print_dropped,
    reading_options,
)


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from dermlearn.data import load

    manifest = load(args.data, taxonomy=args.taxonomy, invalid="keep",
                    check_images=args.check_images, progress=not args.json,
                    **reading_options(args))
    summary = manifest.summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_format_summary(summary, manifest))
    return 1 if any(p.severity == "error" for p in manifest.problems) else 0


def _format_summary(summary: dict, manifest) -> str:
    """``data inspect``'s text: counts per class, metadata, then the problems (every one when
    few, else a count and examples per kind; ``--json`` lists them all)."""
    from dermlearn.data.problems import summarize_problems

    lines = [f"{summary['source']}  (format: {summary['format']}, taxonomy: {summary['taxonomy']})",
             f"  images: {summary['n_images']}   lesions: {summary['n_lesions']}   "
             f"patients: {summary['n_patients']}", "", f"  {'class':<24}{'images':>8}{'lesions':>9}"]
    for label, counts in summary["per_class"].items():
        lines.append(f"  {label:<24}{counts['images']:>8}{counts['lesions']:>9}")
    lines += ["", "  metadata completeness: " + ", ".join(
        f"{k} {v:.0%}" for k, v in summary["metadata_completeness"].items())]
    problems = summary["problems"]
    errors = [p for p in problems if p["severity"] == "error"]
    lines += ["", f"  problems: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)"]
    lines += [f"    {line}" for line in summarize_problems(manifest.problems, manifest.source)]
    return "\n".join(lines)


def _cmd_data_split(args: argparse.Namespace) -> int:
    from dermlearn.data import load
    from dermlearn.splits import make_splits, save_splits, split_summary

    check_output_file(args.out)
    manifest = load(args.data, taxonomy=args.taxonomy, **reading_options(args))
    splits = make_splits(manifest, args.folds, test_fraction=args.test_fraction,
                         group=args.group, seed=args.seed)
    out = save_splits(splits, args.out)
    print(split_summary(splits).to_string())
    dropped = manifest.write_dropped(out.with_name(f"{out.stem}.dropped.csv"))
    print_dropped(manifest.dropped, str(dropped) if dropped else None,
                  of=len(manifest) + len(manifest.dropped))
    print(f"\nwrote {out} ({len(splits)} images; no {args.group} in two parts)")
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from dermlearn.data.download import describe, download_dataset

    print(describe(args.dataset))
    dest = download_dataset(args.dataset, args.dest, mirror=args.mirror, progress=True)
    print(f"\n{args.dataset} is in {dest}; try: dermlearn data inspect {dest}")
    return 0


def _tree(args: argparse.Namespace):
    """``--taxonomy`` extended by ``--aliases`` (when given)."""
    from dermlearn.taxonomy import load_taxonomy, read_aliases

    taxonomy = load_taxonomy(args.taxonomy)
    return taxonomy.with_aliases(read_aliases(args.aliases), source=args.aliases) \
        if args.aliases else taxonomy


def _cmd_taxonomy_show(args: argparse.Namespace) -> int:
    from dermlearn.taxonomy import partition

    taxonomy = _tree(args)
    counts = None
    if args.data:
        from dermlearn.data import load

        options = {k: v for k, v in reading_options(args).items() if k != "aliases"}
        counts = load(args.data, taxonomy=taxonomy, **options).class_counts()
    print(taxonomy.render(counts=counts))
    print("\nlevels: " + ", ".join(f"{name} ({len(groups)})"
                                   for name, groups in taxonomy.levels.items()))
    if counts is not None:
        classes = partition(taxonomy, counts, args.max_class_size)
        print(f"\ntraining classes (partitioning, max class size {args.max_class_size}): "
              + ", ".join(classes))
    return 0


def _cmd_taxonomy_aliases(args: argparse.Namespace) -> int:
    from dermlearn.taxonomy import normalize_label

    taxonomy = _tree(args)
    rows = taxonomy.known_names()
    if args.grep:
        word = normalize_label(args.grep)
        rows = [r for r in rows if word in normalize_label(r[0])
                or word in normalize_label(r[2])]
    width = max([len(r[0]) for r in rows] + [5])
    print(f"{'label':<{width}}  {'kind':<5}  node")
    for label, kind, node in rows:
        print(f"{label:<{width}}  {kind:<5}  {node}")
    print(f"\n{len(rows)} name(s) of taxonomy {taxonomy.name!r}; labels match ignoring case, "
          f"accents and punctuation. Add your own with --aliases FILE (YAML 'label: node_id').")
    return 0 if rows else 1


def add_data_commands(commands: argparse._SubParsersAction) -> None:
    """The ``data`` and ``taxonomy`` command groups."""
    data = commands.add_parser("data", help="inspect, split and download datasets")
    data_cmds = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")

    inspect = data_cmds.add_parser("inspect", help="counts per class, metadata, every problem")
    inspect.add_argument("data", help=DATA_HELP)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument("--check-images", action="store_true",
                         help="also decode every image to find unreadable ones")
    inspect.add_argument("--taxonomy", default="dermatology", help=TAXONOMY_HELP)
    add_reading_options(inspect, lenient=False)  # inspect lists every problem, drops nothing
    inspect.set_defaults(func=_cmd_data_inspect)

    split = data_cmds.add_parser("split", help="stratified, lesion-grouped folds")
    split.add_argument("data", help=DATA_HELP)
    split.add_argument("--folds", type=int, default=5, help="number of folds")
    split.add_argument("--test-fraction", type=float, default=0.0,
                       help="share held out as fold 'test'")
    split.add_argument("--group", choices=["lesion", "patient"], default="lesion",
                       help="keep each lesion's (or patient's) images in one part")
    split.add_argument("--seed", type=int, default=0, help="random seed of the assignment")
    split.add_argument("--out", default="splits.csv", help="output CSV")
    split.add_argument("--taxonomy", default="dermatology", help=TAXONOMY_HELP)
    add_reading_options(split)
    split.set_defaults(func=_cmd_data_split)

    download = data_cmds.add_parser("download", help="fetch a public dataset (resumable)")
    download.add_argument("dataset", choices=["ham10000", "isic2019", "ph2"],
                          help="the public dataset to fetch")
    download.add_argument("dest", help="destination folder")
    download.add_argument("--mirror", default=None,
                          help="base URL of a mirror holding the same file names "
                               "(also DERMLEARN_DOWNLOAD_MIRROR)")
    download.set_defaults(func=_cmd_data_download)

    taxonomy = commands.add_parser("taxonomy", help="show a diagnosis tree and its partitioning")
    tax_cmds = taxonomy.add_subparsers(dest="taxonomy_command", required=True, metavar="SUBCOMMAND")
    show = tax_cmds.add_parser("show", help="print the tree, its levels and training classes")
    show.add_argument("--taxonomy", default="dermatology", help=TAXONOMY_HELP)
    show.add_argument("--data", default=None, help="count images per node from this dataset")
    show.add_argument("--max-class-size", type=int, default=1000,
                      help="with --data: the partitioning's largest training class (Esteva "
                      "2017's threshold)")
    add_reading_options(show)
    show.set_defaults(func=_cmd_taxonomy_show)

    aliases = tax_cmds.add_parser("aliases", help="list every label a taxonomy accepts (ids, "
                                  "names, aliases) and the node each means")
    aliases.add_argument("--grep", metavar="WORD",
                         help="only names containing WORD (ignoring case and punctuation)")
    aliases.add_argument("--taxonomy", default="dermatology", help=TAXONOMY_HELP)
    aliases.add_argument("--aliases", metavar="FILE",
                         help="YAML file of 'your label: node_id' lines to add (and check)")
    aliases.set_defaults(func=_cmd_taxonomy_aliases)

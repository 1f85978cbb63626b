"""``dermlearn data inspect|split|download`` and ``dermlearn taxonomy show``."""
from __future__ import annotations

import argparse
import json

from dermlearn.atomic import check_output_file
from dermlearn.cli.common import DATA_HELP, TAXONOMY_HELP


def _cmd_data_inspect(args: argparse.Namespace) -> int:
    from dermlearn.data import load

    manifest = load(args.data, taxonomy=args.taxonomy, strict=False,
                    check_images=args.check_images, progress=not args.json)
    summary = manifest.summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        print(_format_summary(summary))
    return 1 if any(p.severity == "error" for p in manifest.problems) else 0


def _format_summary(summary: dict) -> str:
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
    for p in problems:
        where = p["row"] or p["file"] or ""
        lines.append(f"    [{p['kind']}{'' if p['severity'] == 'error' else ', warning'}] "
                     f"{where}: {p['message']}")
    return "\n".join(lines)


def _cmd_data_split(args: argparse.Namespace) -> int:
    from dermlearn.data import load
    from dermlearn.splits import make_splits, save_splits, split_summary

    check_output_file(args.out)
    manifest = load(args.data, taxonomy=args.taxonomy)
    splits = make_splits(manifest, args.folds, test_fraction=args.test_fraction,
                         group=args.group, seed=args.seed)
    out = save_splits(splits, args.out)
    print(split_summary(splits).to_string())
    print(f"\nwrote {out} ({len(splits)} images; no {args.group} in two parts)")
    return 0


def _cmd_data_download(args: argparse.Namespace) -> int:
    from dermlearn.data.download import describe, download_dataset

    print(describe(args.dataset))
    dest = download_dataset(args.dataset, args.dest, mirror=args.mirror, progress=True)
    print(f"\n{args.dataset} is in {dest}; try: dermlearn data inspect {dest}")
    return 0


def _cmd_taxonomy_show(args: argparse.Namespace) -> int:
    from dermlearn.taxonomy import load_taxonomy, partition

    taxonomy = load_taxonomy(args.taxonomy)
    counts = None
    if args.data:
        from dermlearn.data import load

        counts = load(args.data, taxonomy=taxonomy).class_counts()
    print(taxonomy.render(counts=counts))
    print("\nlevels: " + ", ".join(f"{name} ({len(groups)})"
                                   for name, groups in taxonomy.levels.items()))
    if counts is not None:
        classes = partition(taxonomy, counts, args.max_class_size)
        print(f"\ntraining classes (partitioning, max class size {args.max_class_size}): "
              + ", ".join(classes))
    return 0


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
    inspect.set_defaults(func=_cmd_data_inspect)

    split = data_cmds.add_parser("split", help="stratified, lesion-grouped folds")
    split.add_argument("data", help=DATA_HELP)
    split.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    split.add_argument("--test-fraction", type=float, default=0.0,
                       help="share held out as fold 'test' (default 0)")
    split.add_argument("--group", choices=["lesion", "patient"], default="lesion")
    split.add_argument("--seed", type=int, default=0)
    split.add_argument("--out", default="splits.csv", help="output CSV (default splits.csv)")
    split.add_argument("--taxonomy", default="dermatology", help=TAXONOMY_HELP)
    split.set_defaults(func=_cmd_data_split)

    download = data_cmds.add_parser("download", help="fetch a public dataset (resumable)")
    download.add_argument("dataset", choices=["ham10000", "isic2019", "ph2"])
    download.add_argument("dest", help="destination folder")
    download.add_argument("--mirror", default=None,
                          help="base URL of a mirror holding the same file names "
                               "(also DERMLEARN_DOWNLOAD_MIRROR)")
    download.set_defaults(func=_cmd_data_download)

    taxonomy = commands.add_parser("taxonomy", help="show a diagnosis tree and its partitioning")
    tax_cmds = taxonomy.add_subparsers(dest="taxonomy_command", required=True, metavar="SUBCOMMAND")
    show = tax_cmds.add_parser("show", help="print the tree, its levels and training classes")
    show.add_argument("--taxonomy", default="dermatology")
    show.add_argument("--data", default=None, help="count images per node from this dataset")
    show.add_argument("--max-class-size", type=int, default=1000,
                      help="partitioning threshold (Esteva: 1000)")
    show.set_defaults(func=_cmd_taxonomy_show)

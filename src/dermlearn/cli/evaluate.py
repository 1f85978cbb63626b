"""``dermlearn evaluate``, ``explain`` and ``embed``: a model's metrics, overlays and t-SNE."""
from __future__ import annotations

import argparse
from pathlib import Path

from dermlearn.cli.common import (
    DATA_HELP,
    TAXONOMY_HELP,
    _join,
    add_reading_options,
    inputs_from_args,
    print_dropped,
    print_dropped_file,
    reading_options,
)
from dermlearn.errors import DermlearnError

#: ``--part``: which images a model may be scored on (dermlearn.inference.unseen).
PARTS = ("auto", "val", "test", "all")
PART_HELP = ("images to score: auto = every image the model never trained on (a "
             "fold ensemble's run images by the member that held them out; the run's test "
             "part left for 'test'); val = the run's validation images; test = its test part; "
             "all = every image, refused if any trained the model")


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from dermlearn.evaluation.evaluate import evaluate_model, evaluate_predictions_csv

    locked = {"task": args.task, "threshold": args.threshold,
              "threshold_from": args.threshold_from, "target": args.target,
              "aggregate": args.aggregate, "aggregate_by": args.aggregate_by,
              "subgroups": args.subgroup}
    if (args.model is None) == (args.predictions is None):
        raise DermlearnError("evaluate needs a MODEL or --predictions CSV (one of them)")
    if args.model is not None and args.taxonomy is not None:
        raise DermlearnError("--taxonomy is for --predictions: a model reads the data with the "
                             "taxonomy it was trained with")
    if args.predictions:
        metrics = evaluate_predictions_csv(args.predictions, args.data, out=args.out,
                                           taxonomy=args.taxonomy, readers=args.readers,
                                           data_options=reading_options(args),
                                           n_boot=args.bootstrap, seed=args.seed, locked=locked)
    else:
        metrics = evaluate_model(args.model, args.data, args.out, part=args.part, tta=args.tta,
                                 readers=args.readers, n_boot=args.bootstrap, seed=args.seed,
                                 explain=None if args.explain == "none" else args.explain,
                                 embed=not args.no_embed, progress=not args.quiet,
                                 locked=locked, data_options=reading_options(args))
    if args.model is not None:
        print(f"scored {metrics['source']['evaluated on']}")
    if "locked" in metrics:
        print(format_locked(metrics["locked"]))
    from dermlearn.evaluation.summary import format_metrics

    print(format_metrics(metrics))
    print(f"ECE {metrics['ece']:.3f}")
    report = Path(args.out) / "report.html"
    print(f"\nmetrics: {_join(args.out, 'metrics.json')}"
          + (f"   report: {report}" if report.exists() else ""))
    print_dropped_file(Path(args.out) / "dropped.csv")
    return 0


def _cmd_explain(args: argparse.Namespace) -> int:
    from dermlearn.explain import explain_to_dir
    from dermlearn.inference import Predictor, resolve_inputs
    from dermlearn.inference.unseen import unseen_images

    predictor = Predictor.load(args.model)
    inputs = resolve_inputs(inputs_from_args(args, args.images))
    scope = unseen_images(predictor, inputs.ids, args.part, source=" ".join(args.images))
    print(f"explaining {scope.description}")
    written = explain_to_dir(predictor, [inputs.paths[i] for i in scope.rows], args.out,
                             method=args.method)
    print(f"wrote {len(written)} {args.method} overlays to {_join(args.out)}")
    return 0


def _cmd_embed(args: argparse.Namespace) -> int:
    from dermlearn.data import load
    from dermlearn.explain import embed_unseen
    from dermlearn.inference import Predictor

    predictor = Predictor.load(args.model)
    manifest = load(args.data, taxonomy=predictor.taxonomy, **reading_options(args))
    print_dropped(manifest.dropped, of=len(manifest) + len(manifest.dropped))
    written, described = embed_unseen(predictor, manifest,
                                      args.out, part=args.part, seed=args.seed,
                                      progress=not args.quiet)
    print(f"embedded {described}")
    print("wrote " + ", ".join(str(p) for p in written.values()))
    return 0


def format_locked(locked: dict) -> str:
    """The locked operating point's lines as evaluate prints them."""
    def rate(name: str) -> str:
        r = locked[name]
        if r["value"] is None:
            return f"{name} n/a"
        return f"{name} {r['value']:.3f} ({r['ci'][0]:.3f}-{r['ci'][1]:.3f}, {r['k']}/{r['n']})"

    lines = [f"{locked['task']} at threshold {locked['threshold']:.4f} ({locked['source']}), "
             f"per {locked['unit']}, n={locked['n']}:",
             "  " + "  ".join(rate(k) for k in ("sensitivity", "specificity", "ppv", "npv"))]
    for column, groups in locked["subgroups"].items():
        for group, g in groups.items():
            flag = f"  [too small: {g['why']}]" if g["too_small"] else ""
            sens, spec = g["sensitivity"]["value"], g["specificity"]["value"]
            lines.append(f"  {column}={group}: n={g['n']} sensitivity "
                         f"{'n/a' if sens is None else format(sens, '.3f')} specificity "
                         f"{'n/a' if spec is None else format(spec, '.3f')} AUC "
                         f"{'n/a' if g.get('auc') is None else format(g['auc'], '.3f')}{flag}")
    return "\n".join(lines)


def _cmd_report(args: argparse.Namespace) -> int:
    from dermlearn.evaluation.model_report import TO_COMPLETE, write_model_report

    markdown, page = write_model_report(args.model, args.out, args.evaluation,
                                        comparison=args.compare)
    left = markdown.read_text().count(TO_COMPLETE)
    print(f"wrote {markdown} and {page}: {left} item(s) marked to complete by hand")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from dermlearn.atomic import atomic_write, atomic_write_json, check_output_dir
    from dermlearn.evaluation.compare import (
        compare_evaluations,
        comparison_markdown,
        format_comparison,
    )

    if args.out:
        check_output_dir(args.out)
    result = compare_evaluations(args.eval_a, args.eval_b, taxonomy=args.taxonomy,
                                 n_boot=args.bootstrap, seed=args.seed)
    print(format_comparison(result))
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(Path(args.out) / "comparison.json", result)
        table = comparison_markdown(result) + "\n"
        atomic_write(Path(args.out) / "comparison.md",
                     lambda tmp: Path(tmp).write_text(table, encoding="utf-8"))
        print(f"\nwrote {_join(args.out, 'comparison.json')} and comparison.md (for the "
              f"report: dermlearn report MODEL --eval EVAL_B --compare {Path(args.out)})")
    return 0


def add_evaluate_commands(commands: argparse._SubParsersAction) -> None:
    """The ``evaluate``, ``explain``, ``embed``, ``compare`` and ``report`` commands."""
    ev = commands.add_parser("evaluate", help="metrics, figures and report.html for a model "
                             "(or a predictions CSV) on a dataset")
    ev.add_argument("model", nargs="?", help="model directory (RUN/model or RUN)")
    ev.add_argument("data", help=DATA_HELP)
    ev.add_argument("--out", required=True, help="output folder (metrics.json, report.html)")
    ev.add_argument("--predictions", help="score this ISIC-format CSV instead of a model")
    ev.add_argument("--taxonomy", help="with --predictions: " + TAXONOMY_HELP
                    + " (default: dermatology)")
    ev.add_argument("--readers", help="CSV of reader operating points: name, sensitivity, "
                    "specificity[, task]")
    ev.add_argument("--bootstrap", type=int, default=1000,
                    help="bootstrap resamples for the confidence intervals")
    ev.add_argument("--part", choices=PARTS, default="auto", help=PART_HELP)
    ev.add_argument("--tta", type=int, default=1, help="test-time views to average (1-8)")
    ev.add_argument("--explain", choices=["saliency", "gradcam", "none"], default="saliency",
                    help="overlays of example images in the report, as dermlearn explain "
                    "--method (none: no overlays)")
    ev.add_argument("--no-embed", action="store_true", help="skip the t-SNE embedding")
    ev.add_argument("--seed", type=int, default=0, help="random seed (bootstrap, t-SNE)")
    locked = ev.add_argument_group(
        "locked operating point", "a threshold fixed before the test and applied unchanged "
        "(Esteva 2017, Haenssle 2018): sensitivity, specificity, PPV, NPV with Wilson 95% CIs")
    locked.add_argument("--task", choices=["melanoma_vs_rest", "malignant_vs_benign"],
                        default="melanoma_vs_rest", help="the binary task")
    locked.add_argument("--threshold", type=float, help="a fixed threshold on the task's "
                        "probability")
    locked.add_argument("--threshold-from", metavar="RUN_OR_CSV", help="choose the threshold "
                        "on a run's validation predictions (or a predictions CSV with labels), "
                        "never on the test's images")
    locked.add_argument("--target", metavar="RATE=X", help="with --threshold-from: e.g. "
                        "sensitivity=0.95 or specificity=0.9")
    locked.add_argument("--aggregate", choices=["lesion", "patient"], help="decide per lesion "
                        "(or patient): the max (or --aggregate-by mean) of its images' scores")
    locked.add_argument("--aggregate-by", choices=["max", "mean"], default="max",
                        help="with --aggregate: how a lesion's (or patient's) image scores "
                        "combine")
    locked.add_argument("--subgroup", action="append", metavar="COL", default=[],
                        help="figures at the locked threshold per value of this column "
                        "(repeatable; e.g. sex, site/localization, label_source/dx_type)")
    ev.add_argument("--quiet", action="store_true", help="no progress bars")
    add_reading_options(ev)
    ev.set_defaults(func=_cmd_evaluate)

    ex = commands.add_parser("explain", help="saliency / Grad-CAM overlays for images")
    ex.add_argument("model", help="model directory (RUN/model or RUN)")
    ex.add_argument("images", nargs="+", help="image files or a folder of images")
    ex.add_argument("--out", required=True, help="output folder for the overlays")
    ex.add_argument("--method", choices=["saliency", "gradcam"], default="saliency",
                    help="saliency: input gradients (Esteva); gradcam: class activation of the "
                    "last convolutional stage")
    ex.add_argument("--part", choices=PARTS, default="auto", help=PART_HELP)
    add_reading_options(ex, lenient=False)
    ex.set_defaults(func=_cmd_explain)

    em = commands.add_parser("embed", help="t-SNE of penultimate features (PNG + CSV)")
    em.add_argument("model", help="model directory (RUN/model or RUN)")
    em.add_argument("data", help=DATA_HELP)
    em.add_argument("--out", required=True,
                    help="output folder (tsne.csv, tsne_by_class.png, tsne_by_correctness.png)")
    em.add_argument("--part", choices=PARTS, default="auto", help=PART_HELP)
    em.add_argument("--seed", type=int, default=0, help="t-SNE random state")
    em.add_argument("--quiet", action="store_true", help="no progress bars")
    add_reading_options(em)
    em.set_defaults(func=_cmd_embed)

    cmp = commands.add_parser("compare", help="two evaluations of the same images, paired "
                              "(differences with lesion-level bootstrap CIs and p-values)")
    cmp.add_argument("eval_a", metavar="EVAL_A", help="a dermlearn evaluate output folder")
    cmp.add_argument("eval_b", metavar="EVAL_B", help="another, of the same images")
    cmp.add_argument("--out", help="folder for comparison.json and comparison.md (default: "
                     "print only)")
    cmp.add_argument("--taxonomy", default="dermatology", help=TAXONOMY_HELP)
    cmp.add_argument("--bootstrap", type=int, default=2000,
                     help="bootstrap resamples for the paired differences' confidence "
                     "intervals and p-values")
    cmp.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    cmp.set_defaults(func=_cmd_compare)

    rep = commands.add_parser("report", help="a model report (TRIPOD+AI / CLAIM items, Markdown "
                              "and HTML) from the model's files and an evaluation")
    rep.add_argument("model", help="model directory (RUN/model or RUN)")
    rep.add_argument("--eval", dest="evaluation", metavar="EVAL_DIR",
                     help="a dermlearn evaluate output folder (its figures on held-out images)")
    rep.add_argument("--compare", metavar="COMPARE_DIR", help="a dermlearn compare --out "
                     "folder: its paired table becomes the report's comparison section")
    rep.add_argument("--out", default="model-report.md",
                     help="the Markdown file to write; the HTML goes beside it")
    rep.set_defaults(func=_cmd_report)

"""The command line of the analysis: `python -m analysis RESULTS_DIR [...]`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.detectors import has_detectors
from analysis.figures import (FIGURE_FORMATS, plot_detectors, plot_regions, plot_regret, save_formats,
                              write_figures)
from analysis.pick import pick_json, pick_report, recommend
from analysis.probes import probes_with_batches
from analysis.loading import ZETA_COLUMNS, load_runs, populations, select_population, zeta_mismatches
from analysis.regret import DRAWS, regret_study, runs_values, seed_values
from analysis.reports import (detectors_report, probes_report, regret_report, seed_populations_report,
                              selection_report, signals_report)
from analysis.seeds import seed_populations
from analysis.selection import select_models, tau_across_runs, tau_along_epochs
from runner import safe_files


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Print the four-region model-selection table and "
                                                 "Kendall's tau for a folder of run records.",
                                     allow_abbrev=False)
    parser.add_argument("folder", help="folder holding the run records (*.csv)")
    parser.add_argument("--data", metavar="DATA", default=None,
                        help="analyse only the runs trained on this data (dataset/noise-rate/size, e.g. "
                             "cifar10/symmetric-0.5/n1000); needed when the folder holds runs on several")
    parser.add_argument("--epoch", type=int, default=None,
                        help="0-based epoch to compare the runs at (default: each run's last)")
    parser.add_argument("--convention", choices=sorted(ZETA_COLUMNS), default="paper",
                        help="running mean of zeta: the paper's (default) or the reference notebook's")
    parser.add_argument("--figures", metavar="DIR", default=None,
                        help="also write the across-run figures into DIR")
    parser.add_argument("--formats", nargs="+", choices=["png", "pdf", "svg"], default=list(FIGURE_FORMATS),
                        help="file formats of every figure (default: png pdf)")
    parser.add_argument("--curves", metavar="PATTERN", nargs="+", default=None,
                        help="with --figures, also each matching run's curves (e.g. '*')")
    parser.add_argument("--compare", metavar="PATTERN", nargs="+", default=None,
                        help="with --figures, also the curves of the matching runs side by side on shared "
                             "axes, in the order of the patterns (compare.png)")
    parser.add_argument("--regret", action="store_true",
                        help="also draw random sub-populations of 4 to all runs and print each selection "
                             "rule's regret (best test accuracy drawn minus the pick's); with --per-seed, "
                             "drawn within each seed's runs")
    parser.add_argument("--draws", type=int, default=DRAWS, metavar="N",
                        help=f"with --regret, sub-populations drawn per size (default {DRAWS})")
    parser.add_argument("--per-seed", action="store_true",
                        help="also treat each seed's runs as a population of its own and summarize the "
                             "rules and tau over the populations (with --figures: a region plot per seed)")
    parser.add_argument("--pick", action="store_true",
                        help="print only the one recommended run, with its checkpoint, the rule that chose it "
                             "and why, the other rules' picks where they differ, and warnings")
    parser.add_argument("--json", action="store_true", help="with --pick, print it as JSON")
    return parser.parse_args(argv)


def user_regret_study(table, args: argparse.Namespace):
    """The regret study of `python -m analysis --regret` on the folder's runs."""
    if args.draws < 1:
        raise ValueError(f"--draws must be at least 1, got {args.draws}")
    populations = (seed_values(table, args.epoch, args.convention) if args.per_seed
                   else [runs_values(table, args.epoch, args.convention)])
    return regret_study(populations, draws=args.draws)


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (2 with a one-line message on stderr for bad input)."""
    args = parse_args(argv)
    try:
        if args.json and not args.pick:
            raise ValueError("--json goes with --pick; add --pick")
        loaded = load_runs(args.folder)
        for name, reason in loaded.unreadable.items():
            print(f"analysis: skipped {name}: {reason}", file=sys.stderr)
        if loaded.nested_note():
            print(f"analysis: {loaded.nested_note()}", file=sys.stderr)
        if loaded.table.empty:
            raise ValueError(f"no run records in {args.folder}")
        for run in zeta_mismatches(loaded.table):
            print(f"analysis: {run}: stored susceptibility differs from the recomputed one",
                  file=sys.stderr)
        table = select_population(loaded.table, args.data)
        if args.pick:
            recommendation = recommend(table, args.folder, args.epoch, args.convention)
            print(pick_json(recommendation) if args.json else pick_report(recommendation))
            return 0
        selection = select_models(table, args.epoch, args.convention)
        across = tau_across_runs(table, args.epoch, args.convention)
        along = tau_along_epochs(table, args.convention)
        print(f"data: {populations(table).iloc[0]}")
        print(selection_report(selection, across, along))
        print()
        print(signals_report(table, args.epoch, args.convention))
        if probes_with_batches(table):
            print()
            print(probes_report(table, args.epoch, args.convention))
        if has_detectors(table):
            print()
            print(detectors_report(table, args.folder))
        per_seed = seed_populations(table, args.epoch, args.convention) if args.per_seed else None
        if per_seed is not None:
            print()
            print(seed_populations_report(per_seed, along))
        study = user_regret_study(table, args) if args.regret else None
        scope = "within each seed's runs" if args.per_seed else "drawn from all the runs"
        if study is not None:
            print()
            print(regret_report(study, scope))
        if args.figures:
            paths = write_figures(table, selection, args.figures, args.epoch, args.convention,
                                  args.curves, tuple(args.formats), args.compare)
            if has_detectors(table):
                paths += save_formats(plot_detectors(table), Path(args.figures) / "detectors", tuple(args.formats))
            if study is not None:
                title = f"{table['run'].nunique()} runs, drawn {'within each seed' if args.per_seed else 'from all'}"
                paths += save_formats(plot_regret({title: study}, "each seed's runs" if args.per_seed else "all runs"),
                                      Path(args.figures) / "regret", tuple(args.formats))
            for seed, seed_selection in (per_seed.selections.items() if per_seed else ()):
                paths += save_formats(plot_regions(seed_selection, f"seed {seed}"),
                                      Path(args.figures) / f"regions_seed{seed}", tuple(args.formats))
            print(f"wrote {len(paths)} figure files to {args.figures}")
    except (FileNotFoundError, ValueError, safe_files.UnwritableFile) as error:
        print(f"analysis: error: {error}", file=sys.stderr)
        return 2
    return 0

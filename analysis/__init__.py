"""The analysis of run records: the paper's figures, model selection and rank correlations.

    python -m analysis RESULTS_DIR [--per-seed] [--figures DIR] ...

One module per purpose, none of them needing torch:

- `loading`: a folder of records as one table (one row per run and epoch), ζ recomputed;
- `selection`: the four regions, the run each rule picks, Kendall's τ, and their warnings;
- `signal_rules`: the other signals without clean labels, across runs and for early stopping;
- `seeds`: the comparisons within each seed's population, summarized over the seeds;
- `regret`: how many runs the selection rules need: their regret in random sub-populations;
- `naming`: runs as a paper names them;
- `reports`: the printed tables and reports;
- `figures`: the figures (the only module that needs matplotlib);
- `cli`: the command line.

`results.ipynb` and `tools/` use these modules directly.
"""

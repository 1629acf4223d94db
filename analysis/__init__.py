"""Analysis of run outputs: metrics, statistics, Pareto fronts, figures. No torch here."""

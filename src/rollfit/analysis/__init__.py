"""rollfit.analysis: using a trained surrogate (predict, evaluate, plot, report, optimize)."""

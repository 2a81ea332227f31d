"""Hyperparameter sweeps on Ray Tune (optional extra ``rollfit[ray]``).

``space.load_space`` parses and checks ``SPACE.yaml`` without Ray; ``runner.run_sweep``
runs the trials on Ray Tune; ``results`` writes the table, best config and plot.
"""

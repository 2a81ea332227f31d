"""The pipeline layer: what a command does end to end, above training and analysis.

``run.train``/``run.resume`` (one path: data -> trainer -> run folder -> report) and
``cv.cross_validate`` (K retrained folds). ``training/`` never imports ``analysis/``; this
layer joins them. Import the submodules directly (``from rollfit.pipeline.run import train``).
"""

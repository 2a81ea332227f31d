"""Run folders and the checkpoint format: where a run's files live and how they are read.

``folder.RunFolder`` names every file of a run (config, logs, checkpoints, plots, metrics,
report, lock) so that no command guesses paths; ``checkpoint`` reads and writes the
checkpoint files inside it. This layer sits below ``training`` (the trainer writes
checkpoints through it) and above ``data``/``model``; it never imports training code.
"""

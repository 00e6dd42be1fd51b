"""Training of the livesr generators: data preparation, degradation, losses, discriminators, trainer.

Run with `python -m models.train {prepare,fit,export} --help`. Never imported by the runtime path.
"""

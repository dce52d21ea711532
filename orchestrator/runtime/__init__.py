"""Where and when trials run: the Ray session, cluster checks, the Tuner (build, fit,
restore), the trial function and its checkpoints. Used by ``search`` and ``transfer``."""

"""``raytrain tune``: hyperparameter search over ``raytrain fit`` runs with Ray Tune, Optuna and ASHA.

``space.py`` / ``params.py`` read and validate the search-space file; ``trial.py`` is the trial function;
``stopping.py`` the ASHA tie-break, the patience rule and the status file; ``status.py`` the driver's record of how
each trial ended; ``orchestrate.py`` builds and runs the Tuner; ``api.py`` is :func:`raytrain.tune` and the CLI.
``experiment.py`` reads an experiment folder back, ``report.py`` writes its tables, ``analysis.py`` / ``plots.py``
are Optuna's analysis of it, and ``results.py`` is ``raytrain results``. Nothing is imported here: importing
``raytrain.tuning`` does not import Ray.
"""

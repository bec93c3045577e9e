"""The training/validation engine: plain functions (train_one_epoch, evaluate, predict, optimizer, EMA, ...).

Nothing is imported here; import the module you need, e.g. ``from raytrain.engine.validate import evaluate``.
"""

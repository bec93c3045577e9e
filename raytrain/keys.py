"""The names of what a run reports: loss parts, validation metrics, learning rates, epoch bookkeeping.

Every module that writes or reads an epoch's metrics (the loop, ``results.csv``, trackers, tune's stopping rules
and reports) imports these names from here, so they are spelled once. They are Ultralytics' column names.
"""

from __future__ import annotations

LOSS_NAMES = ("box_loss", "cls_loss", "dfl_loss")  # DetectionLoss's parts, in its order
TRAIN_LOSS_KEYS = tuple(f"train/{n}" for n in LOSS_NAMES)
VAL_LOSS_KEYS = tuple(f"val/{n}" for n in LOSS_NAMES)

PRECISION = "metrics/precision(B)"
RECALL = "metrics/recall(B)"
MAP50 = "metrics/mAP50(B)"
MAP50_95 = "metrics/mAP50-95(B)"
METRIC_KEYS = (PRECISION, RECALL, MAP50, MAP50_95)  # Ultralytics' metric columns of results.csv
F1 = "metrics/f1(B)"  # F1 at the P/R operating point: DetectionMetrics.compute() returns it too
VAL_KEYS = (*METRIC_KEYS, F1, *VAL_LOSS_KEYS)  # what one validation pass contributes to an epoch's row

LR_KEYS = ("lr/pg0", "lr/pg1", "lr/pg2")  # the optimizer's three parameter groups (see engine/optim.py)
EPOCH = "epoch"  # from 1
FITNESS = "fitness"  # the number that picks best.pt, drives patience and is tune's default metric
TIME = "time"  # cumulative training seconds (Ultralytics' results.csv column)
EPOCH_SECONDS = "time/epoch"  # this epoch's seconds, validation and saving included
TRAIN_SECONDS = "time/train"  # this epoch's training seconds only

# results.csv, column by column, as in Ultralytics.
RESULTS_COLUMNS = (EPOCH, TIME, *TRAIN_LOSS_KEYS, *METRIC_KEYS, *VAL_LOSS_KEYS, *LR_KEYS)
# Every key of an epoch's report (the loop reports these; tune's metric must be one of them).
EPOCH_KEYS = (EPOCH, *TRAIN_LOSS_KEYS, *VAL_KEYS, FITNESS, *LR_KEYS, TIME, EPOCH_SECONDS, TRAIN_SECONDS)

# What a tune trial measures of its model before training (raytrain.deploy), reported with every epoch: latency at
# batch 1 (median and interquartile range over the timed runs, milliseconds), parameters, GFLOPs at the trial's imgsz.
LATENCY_MS = "latency_ms"
LATENCY_IQR_MS = "latency_iqr_ms"
PARAMS = "params"
GFLOPS = "gflops"
DEPLOY_KEYS = (LATENCY_MS, PARAMS, GFLOPS)  # the ones an objective or a constraint may name
# Not a metric: a tune trial whose model breaks a constraint before training reports this key (the reason) once, with
# its measured values, and ends; the driver marks it ``infeasible``.
INFEASIBLE = "infeasible"

# Not a metric: a run that hits an error no retry can fix (bad config, data or checkpoint) reports only this key, with
# the one-line message, and ends; the driver turns it into the same one-line error instead of a retry.
FATAL_ERROR = "fatal_error"

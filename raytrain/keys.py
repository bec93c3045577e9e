"""The names of what a run reports: loss parts, validation metrics, learning rates, epoch bookkeeping.

Every module that writes or reads an epoch's metrics (the loop, ``results.csv``, trackers, tune's stopping rules
and reports) imports these names from here, so they are spelled once. They are Ultralytics' column names.
"""

from __future__ import annotations

# A loss names its three parts (``loss.names``, from the family: DFL heads log dfl_loss, YOLO26 logs l1_loss);
# these are every name a family may use, for readers that accept any run.
LOSS_NAMES = ("box_loss", "cls_loss", "dfl_loss", "l1_loss")
DFL_LOSS_NAMES = LOSS_NAMES[:3]  # YOLOv8's and YOLO11's parts (and a loss function that does not name its parts)


def train_loss_keys(names: tuple[str, ...]) -> tuple[str, ...]:
    """The results columns of a loss's parts: ``train/box_loss`` ..."""
    return tuple(f"train/{n}" for n in names)


def val_loss_keys(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f"val/{n}" for n in names)


TRAIN_LOSS_KEYS = train_loss_keys(LOSS_NAMES)
VAL_LOSS_KEYS = val_loss_keys(LOSS_NAMES)

PRECISION = "metrics/precision(B)"
RECALL = "metrics/recall(B)"
MAP50 = "metrics/mAP50(B)"
MAP50_95 = "metrics/mAP50-95(B)"
METRIC_KEYS = (PRECISION, RECALL, MAP50, MAP50_95)  # Ultralytics' metric columns of results.csv
F1 = "metrics/f1(B)"  # F1 at the P/R operating point: DetectionMetrics.compute() returns it too
VAL_KEYS = (*METRIC_KEYS, F1, *VAL_LOSS_KEYS)  # every key a validation pass may contribute to an epoch's row


def val_keys(loss_names: tuple[str, ...]) -> tuple[str, ...]:
    """What one validation pass with a loss of these part names contributes to an epoch's row."""
    return (*METRIC_KEYS, F1, *val_loss_keys(loss_names))

LR_KEYS = ("lr/pg0", "lr/pg1", "lr/pg2")  # the optimizer's three parameter groups (see engine/optim.py)
EPOCH = "epoch"  # from 1
FITNESS = "fitness"  # the number that picks best.pt, drives patience and is tune's default metric
TIME = "time"  # cumulative training seconds (Ultralytics' results.csv column)
EPOCH_SECONDS = "time/epoch"  # this epoch's seconds, validation and saving included
TRAIN_SECONDS = "time/train"  # this epoch's training seconds only


def results_columns(loss_names: tuple[str, ...]) -> tuple[str, ...]:
    """results.csv, column by column, as in Ultralytics, for a loss with these part names."""
    return (EPOCH, TIME, *train_loss_keys(loss_names), *METRIC_KEYS, *val_loss_keys(loss_names), *LR_KEYS)


def epoch_keys(loss_names: tuple[str, ...]) -> tuple[str, ...]:
    """Every key of an epoch's report for a loss with these part names."""
    return (EPOCH, *train_loss_keys(loss_names), *val_keys(loss_names), FITNESS, *LR_KEYS, TIME, EPOCH_SECONDS,
            TRAIN_SECONDS)


# Every key any run's epoch report may hold (the trackers' filter; tune's metric must be one of them).
EPOCH_KEYS = epoch_keys(LOSS_NAMES)

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

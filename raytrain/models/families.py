"""The registered detector families, declared once as data: YOLOv8, YOLO11 and YOLO26.

Each table mirrors the family's layer graph in Ultralytics 8.4 (``model.model[i]`` is the same layer, state_dict keys
are identical), with every per-scale rule in its row: YOLO11 and YOLO26 turn C3k inner blocks on for the m, l and x
scales (``c3k=MLX``); YOLO26's SPPF adds its input and has no activation after ``cv1``. Channels are written for
width 1.0 and scaled per model (:class:`raytrain.models.spec.Scale`).
"""

from __future__ import annotations

from raytrain.models.spec import FamilySpec, HeadSpec, Layer, LossSpec, OnScales, Scale

MLX = OnScales("mlx")


def _scales(depth: tuple[float, ...], width: tuple[float, ...], max_channels: tuple[int, ...]) -> dict[str, Scale]:
    return {s: Scale(d, w, c) for s, d, w, c in zip("nsmlx", depth, width, max_channels, strict=True)}


YOLOV8 = FamilySpec(
    name="yolov8",
    title="YOLOv8",
    scales=_scales((0.33, 0.33, 0.67, 1.0, 1.0), (0.25, 0.5, 0.75, 1.0, 1.25), (1024, 1024, 768, 512, 512)),
    layers=(
        # backbone
        Layer(-1, "Conv", 64, args={"k": 3, "s": 2}),  # 0  P1/2
        Layer(-1, "Conv", 128, args={"k": 3, "s": 2}),  # 1  P2/4
        Layer(-1, "C2f", 128, 3, {"shortcut": True}),  # 2
        Layer(-1, "Conv", 256, args={"k": 3, "s": 2}),  # 3  P3/8
        Layer(-1, "C2f", 256, 6, {"shortcut": True}),  # 4
        Layer(-1, "Conv", 512, args={"k": 3, "s": 2}),  # 5  P4/16
        Layer(-1, "C2f", 512, 6, {"shortcut": True}),  # 6
        Layer(-1, "Conv", 1024, args={"k": 3, "s": 2}),  # 7  P5/32
        Layer(-1, "C2f", 1024, 3, {"shortcut": True}),  # 8
        Layer(-1, "SPPF", 1024, args={"k": 5}),  # 9
        # PAN neck
        Layer(-1, "Upsample"),  # 10
        Layer((-1, 6), "Concat"),  # 11 cat backbone P4
        Layer(-1, "C2f", 512, 3),  # 12
        Layer(-1, "Upsample"),  # 13
        Layer((-1, 4), "Concat"),  # 14 cat backbone P3
        Layer(-1, "C2f", 256, 3),  # 15 (P3/8 out)
        Layer(-1, "Conv", 256, args={"k": 3, "s": 2}),  # 16
        Layer((-1, 12), "Concat"),  # 17 cat neck P4
        Layer(-1, "C2f", 512, 3),  # 18 (P4/16 out)
        Layer(-1, "Conv", 512, args={"k": 3, "s": 2}),  # 19
        Layer((-1, 9), "Concat"),  # 20 cat SPPF P5
        Layer(-1, "C2f", 1024, 3),  # 21 (P5/32 out)
        Layer((15, 18, 21), "Detect"),  # 22
    ),
    head=HeadSpec(reg_max=16, class_branch="conv"),
    loss=LossSpec(topk=10),
)


def _c3k2_rows(*, neck_c3k: bool | OnScales, neck_attn: bool, sppf: dict) -> tuple[Layer, ...]:
    """YOLO11's and YOLO26's shared graph; they differ in the neck's C3k2 blocks and the SPPF."""
    last_neck = {"c3k": True, "attn": True} if neck_attn else {"c3k": True}
    return (
        # backbone
        Layer(-1, "Conv", 64, args={"k": 3, "s": 2}),  # 0  P1/2
        Layer(-1, "Conv", 128, args={"k": 3, "s": 2}),  # 1  P2/4
        Layer(-1, "C3k2", 256, 2, {"c3k": MLX, "e": 0.25}),  # 2
        Layer(-1, "Conv", 256, args={"k": 3, "s": 2}),  # 3  P3/8
        Layer(-1, "C3k2", 512, 2, {"c3k": MLX, "e": 0.25}),  # 4
        Layer(-1, "Conv", 512, args={"k": 3, "s": 2}),  # 5  P4/16
        Layer(-1, "C3k2", 512, 2, {"c3k": True}),  # 6
        Layer(-1, "Conv", 1024, args={"k": 3, "s": 2}),  # 7  P5/32
        Layer(-1, "C3k2", 1024, 2, {"c3k": True}),  # 8
        Layer(-1, "SPPF", 1024, args=sppf),  # 9
        Layer(-1, "C2PSA", 1024, 2),  # 10
        # PAN neck
        Layer(-1, "Upsample"),  # 11
        Layer((-1, 6), "Concat"),  # 12 cat backbone P4
        Layer(-1, "C3k2", 512, 2, {"c3k": neck_c3k}),  # 13
        Layer(-1, "Upsample"),  # 14
        Layer((-1, 4), "Concat"),  # 15 cat backbone P3
        Layer(-1, "C3k2", 256, 2, {"c3k": neck_c3k}),  # 16 (P3/8 out)
        Layer(-1, "Conv", 256, args={"k": 3, "s": 2}),  # 17
        Layer((-1, 13), "Concat"),  # 18 cat neck P4
        Layer(-1, "C3k2", 512, 2, {"c3k": neck_c3k}),  # 19 (P4/16 out)
        Layer(-1, "Conv", 512, args={"k": 3, "s": 2}),  # 20
        Layer((-1, 10), "Concat"),  # 21 cat C2PSA P5
        Layer(-1, "C3k2", 1024, 1 if neck_attn else 2, last_neck),  # 22 (P5/32 out)
        Layer((16, 19, 22), "Detect"),  # 23
    )


_C3K2_SCALES = _scales((0.5, 0.5, 0.5, 1.0, 1.0), (0.25, 0.5, 1.0, 1.0, 1.5), (1024, 1024, 512, 512, 512))

YOLO11 = FamilySpec(
    name="yolo11",
    title="YOLO11",
    scales=_C3K2_SCALES,
    layers=_c3k2_rows(neck_c3k=MLX, neck_attn=False, sppf={"k": 5}),
    head=HeadSpec(reg_max=16, class_branch="depthwise"),
    loss=LossSpec(topk=10),
)

YOLO26 = FamilySpec(
    name="yolo26",
    title="YOLO26",
    scales=_C3K2_SCALES,
    layers=_c3k2_rows(neck_c3k=True, neck_attn=True, sppf={"k": 5, "n": 3, "shortcut": True, "act": False}),
    head=HeadSpec(reg_max=1, class_branch="depthwise", one_to_one=True),
    loss=LossSpec(topk=10, one_to_one_topk=7),
)

FAMILY_LIST = (YOLOV8, YOLO11, YOLO26)

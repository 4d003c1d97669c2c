"""Names of the architectures and methods, and the defaults among them: importable without torch
(for CLI parsers and the task spec)."""

from __future__ import annotations

ARCHITECTURES: tuple[str, ...] = (
    "deeplabv3_resnet101",
    "deeplabv3_resnet50",
    "deeplabv3_mobilenet_v3_large",
    "lraspp_mobilenet_v3_large",
    "fcn_resnet50",
)
# Networks whose head normalises a pooled 1x1 map (DeepLab v3's ASPP image pooling): BatchNorm cannot
# train them on a batch of one image.
BATCH_OF_TWO: tuple[str, ...] = tuple(a for a in ARCHITECTURES if a.startswith("deeplabv3_"))
# What `strata experiment` and the benchmarks default to: small enough to train on a CPU.
SMALL_ARCHITECTURE = "lraspp_mobilenet_v3_large"
# The papers' network and crop: what a deployment with GPUs sets (STRATA_DEFAULT_ARCHITECTURE,
# STRATA_DEFAULT_IMAGE_SIZE; docker-compose.yml does).
PAPER_ARCHITECTURE, PAPER_IMAGE_SIZE = "deeplabv3_resnet101", 512
# What a model's first task trains when its spec names neither, unless the deployment says otherwise:
# the small network at half the crop, so that the quick start on a machine without a GPU finishes in
# minutes (measured: docs/results.md, "CPU defaults").
DEFAULT_ARCHITECTURE, DEFAULT_IMAGE_SIZE = SMALL_ARCHITECTURE, 256

METHODS: tuple[str, ...] = ("ft", "joint", "ld", "le", "ef", "ef+ld", "ld+le", "mib", "plop", "frozen-old")
# What a service task may ask for: "joint" needs every earlier step's images, which the service
# by design does not keep; it is an upper bound for experiments only.
SERVICE_METHODS: tuple[str, ...] = tuple(m for m in METHODS if m != "joint")

# The method a task gets when it names none: the one our measurements favour (docs/results.md,
# issue 8: CamVid 8-3, 8-1 and 5-1, overlapped, old classes labelled background as when
# annotators label only the new classes, every method under one recipe). MiB ends highest on all
# three (8-1: 44.8 all-class mIoU, 98 % of joint training's 45.9; 5-1: 42.3, 92 %); frozen-old
# keeps old classes best but learns small new ones poorly from a small parent's features, PLOP
# loses old classes faster at this scale, and ILT's losses forget everything within two steps.
DEFAULT_METHOD = "mib"

# What a step with no previous model trains with, whatever its method: plain cross-entropy.
BASE_METHOD = "ft"

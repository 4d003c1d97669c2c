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
# What a service's first task trains when it names no model: the papers' network.
DEFAULT_ARCHITECTURE = "deeplabv3_resnet101"
# What `strata experiment` and the benchmarks default to: small enough to train on a CPU.
SMALL_ARCHITECTURE = "lraspp_mobilenet_v3_large"

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

"""``strata experiment``: run an incremental scenario with one method and write its results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.data.protocols import OLD_LABELS, PROTOCOLS
from services.experiments.config import EXPERIMENT_IMAGE_SIZE
from services.learning.config import (
    BATCHNORM_POLICIES,
    DEFAULT_LAMBDA_D,
    DEFAULT_LAMBDA_E,
    DEFAULT_LAMBDA_POD,
    DEFAULT_LAMBDA_U,
    LD_FORMS,
    TrainConfig,
)
from services.learning.names import METHODS, SMALL_ARCHITECTURE

EXAMPLE = (
    "example: strata experiment --data /data/camvid --scenario 8-3 --protocol overlapped "
    "--method ef+ld --image-size 128 --epochs 10 --out results.json"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="run a class-incremental scenario with one method; print and save per-step mIoU",
        description=__doc__,
        epilog=EXAMPLE,
    )
    p.add_argument("--data", type=Path, required=True, help="dataset folder (directory layout or Pascal VOC 2012)")
    p.add_argument("--scenario", required=True, help="classes per step, e.g. 8-3, 15-5, 15-1, 15-5s, 10-2-2-2")
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)} (joint: the upper bound)")
    p.add_argument("--protocol", choices=PROTOCOLS, default="overlapped")
    p.add_argument("--old-labels", choices=OLD_LABELS, default="drop",
                   help="drop: old classes are background in new steps (MiB); keep: they stay labelled (ILT)")
    p.add_argument("--model", default=SMALL_ARCHITECTURE,
                   help="a services.learning.zoo architecture, e.g. deeplabv3_resnet101")
    p.add_argument("--image-size", type=int, default=EXPERIMENT_IMAGE_SIZE,
                   help="shorter side of every image, in training (before the random scale) and evaluation (pixels)")
    p.add_argument("--crop-size", type=int, default=None,
                   help="side of the square training crops (pixels); default --image-size")
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs, help="epochs of each incremental step")
    p.add_argument("--base-epochs", type=int, default=None,
                   help="epochs of step 0 (and of joint steps); default --epochs")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--base-lr", type=float, default=None,
                   help="learning rate of step 0 (and of joint steps); default --lr")
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    weights = p.add_mutually_exclusive_group()
    weights.add_argument("--no-pretrained", action="store_true", help="random initialisation, no ImageNet backbone")
    weights.add_argument("--backbone-weights", type=Path, default=None, help="local backbone weights file")
    p.add_argument("--lambda-d", type=float, default=None,
                   help=f"weight of output distillation L'_D (default {DEFAULT_LAMBDA_D:g})")
    p.add_argument("--lambda-e", type=float, default=None,
                   help=f"weight of feature distillation L'_E (default {DEFAULT_LAMBDA_E:g})")
    p.add_argument("--lambda-u", type=float, default=None,
                   help=f"weight of MiB's unbiased KD (default {DEFAULT_LAMBDA_U:g})")
    p.add_argument("--lambda-pod", type=float, default=None,
                   help=f"weight of PLOP's Local POD (default {DEFAULT_LAMBDA_POD:g})")
    p.add_argument("--batchnorm", choices=BATCHNORM_POLICIES, default=TrainConfig.batchnorm,
                   help="BatchNorm statistics: re-estimated after each training (default), moved by training "
                   "only, or frozen at the parent's in incremental steps")
    p.add_argument("--class-balance", type=float, default=TrainConfig.class_balance,
                   help="power of median-frequency class weights in the classification loss: 0 none, 0.5 square "
                   f"root, 1 full (default {TrainConfig.class_balance:g})")
    p.add_argument("--ld-form", choices=LD_FORMS, default=None,
                   help="L'_D as in the ILT paper (default) or MiB's renormalised form")
    p.add_argument("--limit-images", type=int, default=None, help="use a seeded sample of N images per split")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="mask and base-model caches; default STRATA_DATA_DIR/cache")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write any cache")
    p.add_argument("--device", default=TrainConfig.device, help="auto, cpu, cuda or cuda:N")
    p.add_argument("--workers", type=int, default=TrainConfig.num_workers, help="data-loading processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imported here so that `strata --help` does not pay for torch.
    from services.errors import StrataError
    from services.experiments.config import ExperimentConfig
    from services.experiments.results import write_result
    from services.experiments.runner import run_experiment
    from services.learning.errors import PretrainedWeightsUnavailable

    try:
        config = ExperimentConfig(
            data=args.data, scenario=args.scenario, method=args.method, protocol=args.protocol,
            old_labels=args.old_labels, model=args.model, image_size=args.image_size, crop_size=args.crop_size,
            epochs=args.epochs,
            base_epochs=args.base_epochs, batch_size=args.batch_size, lr=args.lr, base_lr=args.base_lr, seed=args.seed,
            pretrained=not args.no_pretrained, backbone_weights=args.backbone_weights,
            limit_images=args.limit_images, cache_dir=None if args.no_cache else _cache_dir(args),
            device=args.device, num_workers=args.workers, train_split=args.train_split,
            val_split=args.val_split, method_weights=_weights(args), batchnorm=args.batchnorm,
            class_balance=args.class_balance,
        )
        result = run_experiment(config, progress=not args.quiet)
    except StrataError as err:  # bad settings, data or weights: said in the flags' terms, no traceback
        hint = ""
        if isinstance(err, PretrainedWeightsUnavailable):
            hint = (f". Download {err.file_name} elsewhere and pass --backbone-weights PATH, or train from random "
                    "initialisation with --no-pretrained")
        print(f"strata experiment: {err}{hint}", file=sys.stderr)
        return 2
    if args.out is not None:
        write_result(result, args.out)
        print(f"results written to {args.out}")
    return 0


def _cache_dir(args: argparse.Namespace) -> Path:
    if args.cache_dir is not None:
        return args.cache_dir
    from services.config import get_settings

    return get_settings().cache_dir


def _weights(args: argparse.Namespace) -> dict[str, float | str]:
    given = {"lambda_d": args.lambda_d, "lambda_e": args.lambda_e, "lambda_u": args.lambda_u,
             "lambda_pod": args.lambda_pod, "ld_form": args.ld_form}
    return {k: v for k, v in given.items() if v is not None}


def main(argv: list[str] | None = None) -> int:
    """``python -m services.cli.experiment experiment ...``: this command alone. It imports none of
    the service's dependencies (database, queue, web), so a machine that holds only PyTorch,
    torchvision, Pillow and tqdm, e.g. a lent GPU machine, can run the experiments."""
    parser = argparse.ArgumentParser(prog="strata")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

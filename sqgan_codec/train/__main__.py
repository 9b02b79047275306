"""Training entry point: ``python -m sqgan_codec.train {segmenter,ssm,image,joint,coarse,erasure,export-*} ...``.

Under ``torchrun`` (WORLD_SIZE > 1) the SQ-GAN stages train data-parallel; see docs/training.md.
"""
from __future__ import annotations

import argparse

from . import coarse, erasure, export, segmenter, sqgan


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sqgan_codec.train")
    sub = parser.add_subparsers(dest="command", required=True)
    segmenter.add_arguments(sub.add_parser("segmenter", help="train the bundled segmenter"))
    for stage in sqgan.STAGES:
        sqgan.add_arguments(sub.add_parser(stage, help=sqgan.STAGE_HELP[stage]), stage)
    coarse.add_arguments(sub.add_parser("coarse", help="train the coarse decoder on a frozen SQ-GAN model"))
    erasure.add_arguments(sub.add_parser("erasure", help="train the erasure adapter (the de-masker for lost "
                                                         "packets) on a frozen SQ-GAN model"))
    export.add_arguments(sub)
    args = parser.parse_args(argv)
    if args.command == "segmenter":
        segmenter.run(args)
    elif args.command in sqgan.STAGES:
        sqgan.run(args, args.command)
    elif args.command == "coarse":
        coarse.run(args)
    elif args.command == "erasure":
        erasure.run(args)
    elif args.command == "export-segmenter":
        export.export_segmenter(args)
    elif args.command == "export-sqgan":
        export.export_sqgan(args)
    elif args.command == "export-coarse":
        export.export_coarse(args)
    elif args.command == "export-erasure":
        export.export_erasure(args)


if __name__ == "__main__":
    main()

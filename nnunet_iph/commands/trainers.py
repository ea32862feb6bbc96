"""``nnunet-iph trainers``: every trainer name ``nnUNetv2_train -tr`` accepts from nnunet-iph."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trainers", help="list nnunet-iph's trainers (generated Adam variants included), "
                                        "one line each, and how the sampling and schedule suffixes are formed")
    p.add_argument("--names", action="store_true", help="only the names, one per line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nnunet_iph.trainer_catalog import FOREGROUND_HELP, SCHEDULE_HELP, nnunet_trainers, package_trainers

    trainers = package_trainers()
    if args.names:
        print("\n".join(trainers))
        return 0
    width = max(len(n) for n in trainers)
    defined = [i for i in trainers.values() if not i.generated]
    generated = [i for i in trainers.values() if i.generated]
    print(f"nnunet-iph trainers ({len(defined)} classes in nnunet_iph/trainers/, {len(generated)} generated):")
    for title, infos in (("", defined), ("\ngenerated <Trainer>Adam variants (every trainer derived from "
                                         "nnUNetTrainerFocalDice):", generated)):
        if title:
            print(title)
        for info in infos:
            where = f"  [{info.module}]" if info.module else ""
            print(f"{info.name:<{width}}  {info.description or '-'}{where}")
    print(f"\nsampling suffix, made by name: {FOREGROUND_HELP}")
    print(f"schedule suffixes, made by name: {SCHEDULE_HELP}")
    print(f"nnU-Net's own trainers ({len(nnunet_trainers())} classes, e.g. nnUNetTrainer) work too; "
          "nnUNet_extTrainer folders add more (see `nnunet-iph env`).")
    return 0

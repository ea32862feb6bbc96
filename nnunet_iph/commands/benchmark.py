"""``nnunet-iph benchmark ctich``: the whole pipeline on the PhysioNet CT-ICH scans, every model under one protocol."""

from __future__ import annotations

import argparse
from copy import deepcopy
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROTOCOL_DIR = REPO / "benchmarks" / "ctich"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("benchmark", help="real-data benchmarks (PhysioNet CT-ICH) under a fixed protocol",
                       description="Run a benchmark end to end; see docs/benchmark-ctich.md.")
    ss = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    c = ss.add_parser("ctich", help="PhysioNet CT-ICH: convert, plan, train, predict, evaluate, analyse",
                      description="Convert the PhysioNet CT-ICH release, plan, train every model of the protocol "
                                  "(same plan, patch, batch and iterations), ensemble, evaluate (HD95, surface "
                                  "Dice, volume error) and analyse; results in WORKDIR/results. Re-running "
                                  "continues an interrupted run (finished steps are skipped, trainings resume).")
    c.add_argument("--data", help="PhysioNet CT-ICH release folder (ct_scans/, masks/, slice table); "
                                  "needed for the first run")
    c.add_argument("--workdir", required=True, help="work folder outside the repository (nnU-Net folders, logs, "
                                                    "results)")
    c.add_argument("--protocol", default="cpu",
                   help="cpu (benchmarks/ctich/cpu.toml, default), gpu (benchmarks/ctich/gpu.toml) or a "
                        "protocol file")
    c.add_argument("--models", nargs="+", metavar="NAME",
                   help="only these models of the protocol (the baseline is always kept)")
    c.add_argument("--fold", type=int, nargs="+", help="report these folds instead of the protocol's eval_folds")
    c.add_argument("--prepare-only", action="store_true",
                   help="stop after conversion, plans and preprocessing (gpu: after writing the SLURM scripts)")
    c.add_argument("--submit", action="store_true",
                   help="gpu protocol: submit the SLURM scripts (nnunet-iph slurm submit) after preparing")
    c.add_argument("--list", action="store_true", help="print the protocol's models and training runs, run nothing")
    c.add_argument("--no-progress", action="store_true", help="no progress bars")
    c.set_defaults(func=run_ctich)


def protocol_path(spec: str) -> Path:
    if spec in ("cpu", "gpu"):
        path = PROTOCOL_DIR / f"{spec}.toml"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: protocol file not found (nnunet-iph installed without its "
                                    "repository?); pass --protocol PATH/TO/{spec}.toml")
        return path
    return Path(spec)


def select(raw: dict, models: list[str] | None, folds: list[int] | None, source: Path):
    """The protocol with only some models / other folds; validated again like the file itself."""
    from nnunet_iph.benchmarking.protocol import build_protocol

    raw = deepcopy(raw)
    if models:
        names = [m.get("name") for m in raw.get("model", [])]
        unknown = [m for m in models if m not in names]
        if unknown:
            raise ValueError(f"{source}: no model(s) {unknown}; the protocol has {names}")
        raw["model"] = [m for m in raw["model"] if m.get("name") in models or m.get("baseline")]
    if folds:
        raw.setdefault("data", {})["eval_folds"] = list(folds)
    return build_protocol(raw, source=source)


def run_ctich(args: argparse.Namespace) -> int:
    from nnunet_iph.benchmarking.protocol import load_protocol

    path = protocol_path(args.protocol).resolve()
    protocol = load_protocol(path)
    if args.models or args.fold:
        protocol = select(protocol.raw, args.models, args.fold, path)
    if args.list:
        print(f"protocol {protocol.name} ({path}), dataset {protocol.dataset}, folds {list(protocol.eval_folds)}")
        for m in protocol.models:
            print(f"  {m.name}{' (baseline)' if m.baseline else ''}: "
                  + ", ".join(r.model for r in protocol.member_runs(m, protocol.eval_folds[0])))
        print(f"{len(protocol.runs())} training run(s)")
        return 0
    if args.data and not Path(args.data).is_dir():
        raise FileNotFoundError(f"--data {args.data}: folder not found")
    if args.submit and protocol.kind != "gpu":
        raise ValueError("--submit is for the gpu protocol (the cpu protocol runs here)")

    from nnunet_iph.benchmarking.ctich import CTICHBenchmark

    bench = CTICHBenchmark(protocol, args.workdir, args.data, progress=not args.no_progress)
    status = bench.run(only_prepare=args.prepare_only)
    done = sum(v == "done" for v in status.values())
    print(f"{done} step(s) run, {len(status) - done} already finished; work folder {bench.ws.root}")
    if protocol.kind == "gpu":
        from nnunet_iph.benchmarking.gpu import trainings_finished

        if args.submit:
            from nnunet_iph.cluster.slurm import submit

            submit(bench.ws.slurm)
        if not trainings_finished(bench):
            print(f"GPU protocol prepared. Submit the grid:  nnunet-iph slurm submit {protocol.experiment} "
                  f"-o {bench.ws.slurm}\n(with nnUNet_* exported: eval \"$(nnunet-iph env --workdir {bench.ws.nnunet})\"); "
                  "its last job runs this command again to ensemble and analyse.")
            return 0
    if (bench.ws.results / "README.md").is_file():
        print(f"results: {bench.ws.results / 'README.md'}")
    return 0

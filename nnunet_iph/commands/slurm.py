"""``nnunet-iph slurm plan|submit|status|collect``: the experiment grid as SLURM array jobs."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from dataclasses import asdict
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("slurm", help="plan, submit and monitor the experiment grid as SLURM array jobs "
                                     "(see docs/cluster.md)")
    ss = p.add_subparsers(dest="slurm_command", required=True, metavar="ACTION")

    pp = ss.add_parser("plan", help="write one sbatch script per stage, plus plan.json, into -o DIR")
    pp.add_argument("experiment", help="experiment description (.toml or .json)")
    pp.add_argument("-o", "--out", required=True, help="folder for scripts, logs and state")
    pp.add_argument("--dry-run", action="store_true", help="print the scripts instead of writing them")
    pp.set_defaults(func=run_plan)

    ps = ss.add_parser("submit", help="(re)plan, then sbatch every stage in order, chaining afterok dependencies")
    ps.add_argument("experiment", help="experiment description (.toml or .json)")
    ps.add_argument("-o", "--out", required=True, help="folder for scripts, logs and state")
    ps.add_argument("--resubmit", action="store_true",
                    help="only failed / missing tasks (finished ones stay, interrupted ones resume)")
    ps.add_argument("--stages", help="comma-separated stage names to submit (default: all)")
    ps.add_argument("--dry-run", action="store_true", help="print the sbatch commands; submit and write nothing")
    ps.set_defaults(func=run_submit)

    pt = ss.add_parser("status", help="done / running / pending / failed / missing per task, and what to resubmit")
    pt.add_argument("out", help="the folder given to plan/submit -o")
    pt.add_argument("--json", action="store_true", help="one JSON object per task instead of the summary")
    pt.set_defaults(func=run_status)

    pc = ss.add_parser("collect", help="CSV of every training task's validation Dice (analysis job)")
    pc.add_argument("out", help="the folder given to plan/submit -o")
    pc.add_argument("-o", "--csv", help="write here (default: print)")
    pc.set_defaults(func=run_collect)


def _plan(args: argparse.Namespace, write: bool):
    """The checked experiment; with ``write``, its scripts and plan.json in ``-o`` (a dry run writes nothing)."""
    from nnunet_iph.cluster.experiment import load_experiment
    from nnunet_iph.cluster.scripts import write_plan

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"-o {out}: an existing file, not a folder (-o is the folder for the scripts, "
                                 "logs and state)")
    exp = load_experiment(args.experiment, out_dir=out)
    for note in exp.notes:
        print(f"nnunet-iph slurm: warning: {note}", file=sys.stderr)
    if write:
        write_plan(exp, out)
    return exp


def run_plan(args: argparse.Namespace) -> int:
    from nnunet_iph.cluster.scripts import render_script, script_path

    exp = _plan(args, write=not args.dry_run)
    if args.dry_run:
        for stage in exp.stages:
            print(f"# ===== {script_path(Path(args.out).resolve(), stage)}")
            print(render_script(exp, stage, args.out))
        return 0
    n = sum(max(1, len(s.tasks)) for s in exp.stages)
    print(f"wrote {len(exp.stages)} scripts ({n} tasks) to {Path(args.out).resolve()}:")
    for s in exp.stages:
        after = f" after {', '.join(s.after)}" if s.after else ""
        print(f"  {s.name}.sbatch  {s.kind}, {max(1, len(s.tasks))} task(s){after}")
    return 0


def run_submit(args: argparse.Namespace) -> int:
    from nnunet_iph.cluster.scripts import plan_record
    from nnunet_iph.cluster.slurm import submit

    exp = _plan(args, write=not args.dry_run)
    only = {s.strip() for s in args.stages.split(",") if s.strip()} if args.stages else None
    submit(args.out, resubmit=args.resubmit, only=only, dry_run=args.dry_run,
           plan=plan_record(exp, args.out) if args.dry_run else None)
    return 0


def run_status(args: argparse.Namespace) -> int:
    from nnunet_iph.cluster.slurm import format_status, grid_status, load_plan

    statuses = grid_status(args.out)
    if args.json:
        for s in statuses:
            print(json.dumps(asdict(s)))
    else:
        print(format_status(statuses, args.out, load_plan(args.out).get("experiment", "")))
    return 0


def run_collect(args: argparse.Namespace) -> int:
    from nnunet_iph.cluster.slurm import collect_rows

    rows = collect_rows(args.out)
    buf = io.StringIO()
    fields = ["stage", "trainer", "plans", "configuration", "fold", "done", "n_cases", "dice"]
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    if args.csv:
        from nnunet_iph.imageio import write_text

        write_text(buf.getvalue(), args.csv)
        print(f"wrote {len(rows)} rows to {args.csv}")
    else:
        print(buf.getvalue(), end="")
    return 0

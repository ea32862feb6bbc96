"""CPU cost of every network class's reference trainer, relative to nnU-Net's PlainConvUNet.

For each configuration (the ``2d`` and ``3d_fullres`` of an nnU-Net plans file, or representative
head-CT-like ones) and each architecture trainer (default: one per network class, found by the
trainer discovery; ``--architectures`` names others): forward + backward seconds per batch (median of
``--repeats`` rounds after one warm-up, deep supervision on, the plans' batch and patch size; the
networks are interleaved within each round so load on a shared machine hits all alike) and peak
memory (peak RSS growth, VmHWM - VmRSS, of a fresh subprocess during one forward/backward after a
warm-up one, over the RSS with network, batch and warm-up state in place: activations +
gradients), each also as a ratio to PlainConvUNet built by nnU-Net's default trainer in the same
run. ``--repeats 0`` times that single pass instead of interleaved rounds (cheaper, noisier).

Then the loss: one full training step (PlainConvUNet forward, deep-supervised loss, backward, SGD
step) with the focal + Dice loss vs nnU-Net's default DC_and_CE_loss, interleaved, and the loss
alone (forward + backward on fixed logits). Target: focal + Dice <= 1.05x per training step.

    python benchmarks/networks_speed.py --plans $nnUNet_preprocessed/Dataset501_IPHPhantom/nnUNetPlans.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BASELINE = "nnUNetTrainer"


def reference_architectures() -> list[str]:
    """One trainer per network class, from the trainer discovery: the first defined for that class
    (the reference architecture; later ones are encoder variants, which ``--architectures`` can name),
    so a network added with its trainer is benchmarked without editing this script."""
    import inspect

    import nnunet_iph.trainers as trainers

    first: dict[type, str] = {}
    for cls in sorted(trainers.DEFINED_TRAINERS.values(),
                      key=lambda c: (c.__module__, inspect.getsourcelines(c)[1])):
        network = getattr(cls.build_network_architecture, "network_class", None)
        if network is not None:
            first.setdefault(network, cls.__name__)
    return list(first.values())


def representative_plans() -> dict:
    """Head-CT-like 2d / 3d_fullres configurations with nnU-Net's topology, small enough for a CPU."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.networks.conftest import nnunet_configuration, nnunet_plans

    return nnunet_plans({"2d": nnunet_configuration([192, 160], [0.45, 0.45], batch_size=4),
                         "3d_fullres": nnunet_configuration([32, 96, 80], [5.0, 0.45, 0.45], batch_size=2)})


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset VmHWM (Linux >= 4.0). getrusage's ru_maxrss cannot be used: it survives fork + exec,
    so a child started by a big parent reports the parent's peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _build(trainer_name: str, plans: dict, configuration: str, channels: int, classes: int):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    import nnunet_iph.trainers as trainers

    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    cls = nnUNetTrainer if trainer_name == BASELINE else getattr(trainers, trainer_name)
    return cls.build_network_architecture(pm, cm, channels, classes, True), cm


def _forward_backward(net, x) -> float:
    net.zero_grad(set_to_none=True)
    start = time.perf_counter()
    out = net(x)
    sum(o.float().mean() for o in (out if isinstance(out, list) else [out])).backward()
    return time.perf_counter() - start


def memory_worker(trainer_name: str, plans: dict, configuration: str, channels: int, classes: int,
                  threads: int) -> dict:
    """Peak RSS growth of one warm-up + one forward/backward, in a fresh process."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net, cm = _build(trainer_name, plans, configuration, channels, classes)
    x = torch.randn(cm.batch_size, channels, *cm.patch_size)
    _forward_backward(net, x)  # warm-up: lazy allocations, oneDNN primitives
    net.zero_grad(set_to_none=True)
    baseline_rss = _status_mb("VmRSS")
    _reset_peak_rss()
    seconds = _forward_backward(net, x)
    peak = _status_mb("VmHWM")
    return {"peak_mb": max(0.0, peak - baseline_rss), "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
            "single_pass_seconds": seconds}


def time_round_robin(trainer_names: list[str], plans: dict, configuration: str, channels: int, classes: int,
                     repeats: int, threads: int) -> dict[str, float]:
    """Median fwd+bwd seconds per batch; networks interleaved so that load changes on a shared
    machine hit all of them alike (ratios stay meaningful even when absolute times drift)."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    nets = {}
    for name in trainer_names:
        try:
            nets[name], cm = _build(name, plans, configuration, channels, classes)
        except Exception as error:  # noqa: BLE001 - reported in the table
            print(f"(could not build {name}: {error})", file=sys.stderr)
    x = torch.randn(cm.batch_size, channels, *cm.patch_size)
    times: dict[str, list[float]] = {name: [] for name in nets}
    for r in range(repeats + 1):
        for name, net in nets.items():
            t = _forward_backward(net, x)
            if r:
                times[name].append(t)
        print(f"({configuration}: round {r}/{repeats} done)", file=sys.stderr, flush=True)
        for net in nets.values():
            net.zero_grad(set_to_none=True)
    return {name: float(np.median(v)) for name, v in times.items()}


def loss_benchmark(plans: dict, configuration: str, channels: int, classes: int, repeats: int, threads: int) -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunet_iph.losses import FocalFBetaLoss
    from nnunet_iph.trainers.focal_dice import deep_supervision_weights

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    pm = PlansManager(plans)
    cm = pm.get_configuration(configuration)
    net = nnUNetTrainer.build_network_architecture(pm, cm, channels, classes, True)
    optimizer = torch.optim.SGD(net.parameters(), 1e-2, momentum=0.99, nesterov=True, weight_decay=3e-5)
    scales = 1 / np.cumprod(np.vstack(cm.pool_op_kernel_sizes), axis=0)[:-1]
    weights = deep_supervision_weights(len(scales), False, False)
    losses = {
        "DC_and_CE_loss (nnU-Net)": DeepSupervisionWrapper(DC_and_CE_loss(
            {"batch_dice": cm.batch_dice, "smooth": 1e-5, "do_bg": False, "ddp": False}, {}, weight_ce=1,
            weight_dice=1, ignore_label=None, dice_class=MemoryEfficientSoftDiceLoss), weights),
        "focal + Dice (ours)": DeepSupervisionWrapper(FocalFBetaLoss(batch_dice=cm.batch_dice), weights),
    }
    x = torch.randn(cm.batch_size, channels, *cm.patch_size)
    seg = torch.randint(0, classes, (cm.batch_size, 1, *cm.patch_size)).float()
    targets = [F.interpolate(seg, size=[int(round(p * s)) for p, s in zip(cm.patch_size, scale)], mode="nearest")
               for scale in scales]
    step_times: dict[str, list[float]] = {k: [] for k in losses}
    loss_times: dict[str, list[float]] = {k: [] for k in losses}
    with torch.no_grad():
        fixed = [o.detach() for o in net(x)]
    for i in range(repeats + 1):
        for name, loss_fn in (losses.items() if i % 2 else reversed(list(losses.items()))):
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(net(x), targets)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12)
            optimizer.step()
            if i:
                step_times[name].append(time.perf_counter() - start)
            logits = [o.clone().requires_grad_(True) for o in fixed]
            start = time.perf_counter()
            loss_fn(logits, targets).backward()
            if i:
                loss_times[name].append(time.perf_counter() - start)
    med = lambda v: float(np.median(v))  # noqa: E731
    base, ours = list(losses)
    paired = [o / b for o, b in zip(step_times[ours], step_times[base])]  # same round: same load
    return {"step": {k: med(v) for k, v in step_times.items()}, "loss": {k: med(v) for k, v in loss_times.items()},
            "step_ratio_paired": med(paired),
            "step_ratio_from_loss_cost": (med(step_times[base]) + med(loss_times[ours]) - med(loss_times[base]))
            / med(step_times[base])}


def run_worker_subprocess(args: list[str]) -> dict:
    # fixed mmap threshold: freed tensors go back to the OS at once, so RSS tracks live memory
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    proc = subprocess.run([sys.executable, __file__, "--worker", *args], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", env=env)
    if proc.returncode:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plans", type=Path, help="nnUNetPlans.json (default: representative configurations)")
    parser.add_argument("--configurations", nargs="+", default=["2d", "3d_fullres"])
    parser.add_argument("--architectures", nargs="+",
                        help="trainer names (default: one per network class, see reference_architectures)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved timing rounds; 0: time the memory subprocess's single pass instead")
    parser.add_argument("--loss-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: shared machine)")
    parser.add_argument("--skip-loss", action="store_true", help="skip the loss comparison")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    plans = json.loads(args.plans.read_text(encoding="utf-8")) if args.plans else representative_plans()
    dataset_json = args.plans.parent / "dataset.json" if args.plans else None
    channels, classes = 1, 2
    if dataset_json is not None and dataset_json.is_file():
        ds = json.loads(dataset_json.read_text(encoding="utf-8"))
        channels, classes = len(ds["channel_names"]), len(ds["labels"])
    if args.worker:
        trainer, configuration = args.worker
        print(json.dumps(memory_worker(trainer, plans, configuration, channels, classes, args.threads)))
        return

    source = str(args.plans) if args.plans else "representative configurations (no --plans)"
    print(f"# networks_speed: {source}; {args.threads} thread(s), median of {args.repeats} interleaved rounds "
          f"after 1 warm-up; {channels} channel(s), {classes} classes; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    results: dict = {"plans": source, "threads": args.threads, "configurations": {}}
    common = ["--threads", str(args.threads)] + (
        ["--plans", str(args.plans)] if args.plans else [])
    architectures = args.architectures or reference_architectures()
    for configuration in args.configurations:
        if configuration not in plans["configurations"]:
            print(f"(configuration {configuration} not in the plans: skipped)\n")
            continue
        from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

        cm = PlansManager(plans).get_configuration(configuration)
        print(f"## {configuration}: patch {cm.patch_size}, batch {cm.batch_size}, "
              f"{len(cm.pool_op_kernel_sizes)} stages\n")
        print("| network | params (M) | fwd+bwd s/batch | x PlainConvUNet | peak MB | x PlainConvUNet |")
        print("|---|---:|---:|---:|---:|---:|")
        names = [BASELINE, *architectures]
        seconds = (time_round_robin(names, plans, configuration, channels, classes, args.repeats, args.threads)
                   if args.repeats > 0 else {})
        rows = {}
        for trainer in names:
            rows[trainer] = r = run_worker_subprocess([trainer, configuration, *common])
            if trainer in seconds:
                r["seconds"] = seconds[trainer]
            elif "single_pass_seconds" in r:  # --repeats 0: the memory run's one timed pass
                r["seconds"] = r["single_pass_seconds"]
            base = rows[BASELINE]
            label = "PlainConvUNet (nnU-Net)" if trainer == BASELINE else trainer.removeprefix("nnUNetTrainer")
            if "error" in r or "seconds" not in r:
                print(f"| {label} | failed: {r.get('error', 'see stderr')} |||||")
                continue
            time_ratio = r["seconds"] / base["seconds"] if "seconds" in base else float("nan")
            mem_ratio = r["peak_mb"] / base["peak_mb"] if base.get("peak_mb") else float("nan")
            print(f"| {label} | {r['params_m']:.2f} | {r['seconds']:.3f} | {time_ratio:.2f} | "
                  f"{r['peak_mb']:.0f} | {mem_ratio:.2f} |", flush=True)
        results["configurations"][configuration] = {"patch_size": list(cm.patch_size),
                                                    "batch_size": cm.batch_size, "networks": rows}
        print()

    if args.skip_loss:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return
    configuration = "2d" if "2d" in plans["configurations"] else args.configurations[0]
    loss = loss_benchmark(plans, configuration, channels, classes, args.loss_repeats, args.threads)
    results["loss"] = {"configuration": configuration, **loss}
    base, ours = "DC_and_CE_loss (nnU-Net)", "focal + Dice (ours)"
    print(f"## loss, {configuration}, PlainConvUNet with deep supervision (median of {args.loss_repeats})\n")
    print("| loss | training step s | loss fwd+bwd ms |")
    print("|---|---:|---:|")
    for name in (base, ours):
        print(f"| {name} | {loss['step'][name]:.3f} | {1000 * loss['loss'][name]:.1f} |")
    step_ratio = loss["step_ratio_paired"]
    print(f"\nfocal + Dice / DC_and_CE per training step: {step_ratio:.3f}x (median of per-round ratios; "
          f"target <= 1.05x: {'met' if step_ratio <= 1.05 else 'NOT met'}); ratio of medians "
          f"{loss['step'][ours] / loss['step'][base]:.3f}x; step + the loss's own extra cost: "
          f"{loss['step_ratio_from_loss_cost']:.3f}x; loss alone: {loss['loss'][ours] / loss['loss'][base]:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

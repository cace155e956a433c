"""Training and evaluation throughput, sweeper's loop beside the paper's public loop.

Why both in one process: a speed-up is only believable against a baseline measured on the
same device, at the same batch size, in the same run. The reference loop imitates the public
TRADES / RobustResNet code: a CPU DataLoader over a tensor dataset with per-sample crop and
flip in __getitem__ (as torchvision's transforms do), fp32 NCHW, the attack and loss written
as that code writes them, and a `.item()` per step. Ours: the data resident on the device as
uint8, batched augmentation (sweeper.data.train_batches), sweeper.training's step (bf16
autocast, channels_last, fused SGD on CUDA), PGD with input-only gradients.

FLOPs are counted from the model's MACs with one rule for both loops (see
sweeper.perf.calibrate's docstring): forward = 2 * MACs per image, training backward = 2x forward,
attack backward = 1x forward (input gradient only). The reference's redundant forwards (its
TRADES recomputes f(x) at every attack step) and its weight gradients during PGD evaluation
are work it does but is not credited for, so images/s and TFLOP/s have the same ratio.

    python bench/throughput.py --quick --json                 # CPU smoke run (CI)
    python bench/throughput.py --models wrn-28-10 --batch-size 128 --steps 20
    python bench/throughput.py --packing 4                    # small nets: 1 vs 4 trials
    python bench/throughput.py --workers 4 --models wrn-70-16 # one trial on 4 GPUs (DDP)
    python bench/throughput.py --workers 1 --models wrn-28-10 # the DDP path on one GPU: NCCL
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing as mp
import os
import queue as queue_mod
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from reference_loop import reference_timing  # bench/ is on sys.path when run as a script

from sweeper.config import RuntimeConfig
from sweeper.models.spec import ArchSpec
from sweeper.perf import calibrate as cal
from sweeper.perf import timing as perf

MODELS = ("wrn-28-10", "robustresnet-a1", "wrn-16-4")  # wrn-16-4: the small ablation network
SMALL_MODEL = "wrn-16-4"
METHODS = ("trades", "pgd", "pgd20-eval")
BARRIER_TIMEOUT_S = 900  # packed trials wait this long for each other's warm-up
QUICK_OVERRIDES = {"depths": (1, 1, 1), "widths": (1, 1, 1)}  # tiny stand-ins for CPU CI


def arch_for(name: str, *, quick: bool) -> ArchSpec:
    """The named model; in quick mode the same block type at depth 1 and width 1 per stage."""
    from sweeper.models.presets import resolve_arch

    base = cal.CALIBRATION_MODELS.get(name, name)
    fields = {"preset": base} if isinstance(base, str) else dict(base)
    if quick:
        fields.update(QUICK_OVERRIDES)
    return resolve_arch(fields)


# ---------------------------------------------------------------------------------------------
# side by side


def units_per_image(method: str) -> float:
    return cal.eval_units(20) if method == "pgd20-eval" else cal.train_units(method, 10)


def make_record(
    model: str,
    loop: str,
    method: str,
    timing: perf.Timing,
    *,
    spec: ArchSpec,
    macs: int,
    batch_size: int,
    device: torch.device,
    quick: bool,
) -> dict[str, Any]:
    name = perf.device_name(device)
    runtime = RuntimeConfig()  # what a trial runs: bf16 training, fp32 evaluation, on CUDA
    bf16 = runtime.bf16 and (method != "pgd20-eval" or not runtime.eval_fp32)
    precision = "bf16" if loop != "reference" and device.type == "cuda" and bf16 else "fp32"
    ips = timing.images_per_s
    tflops = ips * units_per_image(method) * 2 * macs / 1e12
    peak = perf.peak_bf16_tflops(name)
    return {
        "model": model,
        "loop": loop,
        "method": method,
        "batch_size": batch_size,
        "images_per_s": ips,
        "tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "peak_mem_bytes": timing.peak_mem_bytes,
        "device": name,
        "precision": precision,
        "macs": macs,
        "block": spec.block,
        "depths": list(spec.depths),
        "widths": list(spec.widths),
        "flops_per_image": units_per_image(method) * 2 * macs,
        "images": timing.images,
        "seconds": timing.seconds,
        "quick": quick,
    }


def run_side_by_side(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    from sweeper.models import count_macs

    runtime = RuntimeConfig(compile=args.compile)
    records = []
    for model in args.models:
        spec = arch_for(model, quick=args.quick)
        macs = int(count_macs(spec))
        for method in args.methods:
            kw = {
                "batch_size": args.batch_size,
                "steps": args.steps,
                "warmup": args.warmup,
                "device": device,
            }
            timings = {
                "reference": reference_timing(spec, method, workers=args.ref_workers, **kw)[0],
                "sweeper": perf.sweeper_timing(spec, method, runtime, **kw),
            }
            pair = {
                loop: make_record(
                    model,
                    loop,
                    method,
                    t,
                    spec=spec,
                    macs=macs,
                    batch_size=args.batch_size,
                    device=device,
                    quick=args.quick,
                )
                for loop, t in timings.items()
            }
            if device.type == "cuda":
                torch.cuda.empty_cache()
            ref_ips = pair["reference"]["images_per_s"]
            pair["sweeper"]["speedup"] = pair["sweeper"]["images_per_s"] / ref_ips
            for record in pair.values():
                record.update(args.stamp)
            records.extend(pair.values())
            emit(args, records[-2:])
    return records


# ---------------------------------------------------------------------------------------------
# packing: N trials sharing one device


def _trial(args: dict[str, Any], ready: Any = None) -> dict[str, float]:
    """One trial's training loop, timed after its private warm-up (allocator, cuDNN
    autotuning); `ready` (a barrier's wait) lets packed trials start their timed loops together."""
    device = torch.device(args["device"])
    if device.type == "cpu":
        threads = 1 if args["quick"] else (os.cpu_count() or 1) // args["n"]
        torch.set_num_threads(max(1, threads))
    torch.backends.cudnn.benchmark = True  # as a trial runs
    spec = ArchSpec(**args["spec"])
    runtime = RuntimeConfig(compile=args["compile"])
    t = perf.sweeper_timing(
        spec,
        "trades",
        runtime,
        batch_size=args["batch_size"],
        steps=args["steps"],
        warmup=args["warmup"],
        device=torch.device(args["device"]),
        ready=ready,
    )
    return {"images": t.images, "start": t.start, "end": t.start + t.seconds}


def _packed_worker(args: dict[str, Any], barrier: Any, queue: Any) -> None:
    queue.put(_trial(args, barrier.wait))


def packed_images_per_s(n: int, payload: dict[str, Any]) -> float:
    """Aggregate images/s of n concurrent trial processes (first start to last end); n = 1
    runs in this process (the same code, one trial alone on the device)."""
    if n == 1:
        r = _trial({**payload, "n": 1})
        if torch.device(payload["device"]).type == "cuda":
            torch.cuda.empty_cache()  # leave the device to the packed processes
        return r["images"] / (r["end"] - r["start"])
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, queue = ctx.Barrier(n, timeout=BARRIER_TIMEOUT_S), ctx.Queue()
    procs = [
        ctx.Process(target=_packed_worker, args=({**payload, "n": n}, barrier, queue))
        for _ in range(n)
    ]
    for p in procs:
        p.start()
    results: list[dict[str, float]] = []
    while len(results) < n:  # poll, so a crashed worker fails the run instead of hanging it
        try:
            results.append(queue.get(timeout=5))
        except queue_mod.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead:
                raise RuntimeError(f"a packed trial process failed (exit codes {dead})") from None
    for p in procs:
        p.join()
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return sum(r["images"] for r in results) / span


def run_packing(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    spec = arch_for(SMALL_MODEL, quick=args.quick)
    payload = {
        "device": str(device),
        "spec": spec.model_dump(mode="json"),
        "compile": args.compile,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "quick": args.quick,
    }
    single = packed_images_per_s(1, payload)
    packed = packed_images_per_s(args.packing, payload)
    record = {
        "model": SMALL_MODEL,
        "loop": "sweeper",
        "method": "trades",
        "mode": "packing",
        "batch_size": args.batch_size,
        "trials": args.packing,
        "single_images_per_s": single,
        "packed_images_per_s": packed,
        "packing_speedup": packed / single,
        "device": perf.device_name(device),
        "quick": args.quick,
        "processes": True,
        **args.stamp,
    }
    emit(args, [record])
    return [record]


# ---------------------------------------------------------------------------------------------
# data parallel: one trial's training step on N workers (the path of runtime.workers = N)


def run_data_parallel(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """Per model and training method: images/s of the N-worker DDP step (N processes, one GPU
    each, NCCL; gloo on CPU) at the global batch --batch-size, beside one worker without DDP at
    the same global batch in this process. N = 1 times the DDP wrapper alone: on a GPU, a real
    one-rank NCCL run (what a one-GPU machine can check of the multi-worker path)."""
    from sweeper.models import count_macs

    runtime = RuntimeConfig(compile=args.compile)
    records = []
    methods = [m for m in args.methods if m != "pgd20-eval"]  # evaluation only shards points
    for model in args.models:
        spec = arch_for(model, quick=args.quick)
        macs = int(count_macs(spec))
        for method in methods:
            kw = {"batch_size": args.batch_size, "steps": args.steps, "warmup": args.warmup}
            one = perf.sweeper_timing(spec, method, runtime, device=device, **kw)
            if device.type == "cuda":
                torch.cuda.empty_cache()  # leave the GPU to the worker processes
            many = perf.data_parallel_timing(spec, method, runtime, workers=args.workers,
                                             device_type=device.type, **kw)  # fmt: skip
            record = make_record(model, "sweeper-ddp", method, many, spec=spec, macs=macs,
                                 batch_size=args.batch_size, device=device,
                                 quick=args.quick)  # fmt: skip
            peak = perf.peak_bf16_tflops(record["device"])
            record.update(
                mode="data_parallel",
                workers=args.workers,
                backend="nccl" if device.type == "cuda" else "gloo",
                mfu=record["tflops"] / (peak * args.workers) if peak else None,  # per GPU
                one_worker_images_per_s=one.images_per_s,
                speedup_vs_one_worker=many.images_per_s / one.images_per_s,
                scaling_efficiency=many.images_per_s / one.images_per_s / args.workers,
                **args.stamp,
            )
            records.append(record)
            emit(args, [record])
    return records


# ---------------------------------------------------------------------------------------------


def emit(args: argparse.Namespace, records: list[dict[str, Any]]) -> None:
    """JSON lines (one record per line) with --json, else a readable line per record."""
    for r in records:
        if args.json:
            print(json.dumps(r), flush=True)
        elif r.get("mode") == "data_parallel":
            print(
                f"{r['model']:16s} {r['method']:11s} {r['workers']} workers ({r['backend']}) "
                f"{r['images_per_s']:9.1f} img/s, one worker {r['one_worker_images_per_s']:.1f} "
                f"img/s: x{r['speedup_vs_one_worker']:.2f}, efficiency "
                f"{100 * r['scaling_efficiency']:.0f}%",
                flush=True,
            )
        elif r.get("mode") == "packing":
            print(
                f"{r['model']} packing x{r['trials']}: 1 trial {r['single_images_per_s']:.1f} "
                f"img/s, packed {r['packed_images_per_s']:.1f} img/s, "
                f"ratio {r['packing_speedup']:.2f}",
                flush=True,
            )
        else:
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a"
            mem = f"{r['peak_mem_bytes'] / 2**30:.2f} GiB" if r["peak_mem_bytes"] else "n/a"
            extra = f"  speedup x{r['speedup']:.2f}" if "speedup" in r else ""
            print(
                f"{r['model']:16s} {r['method']:11s} {r['loop']:9s} {r['images_per_s']:9.1f} "
                f"img/s {r['tflops']:8.3f} TFLOP/s MFU {mfu:>6s} mem {mem}{extra}",
                flush=True,
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick", action="store_true", help="tiny models, batch 4, 2 steps, 1 CPU thread (CI)"
    )
    p.add_argument(
        "--models",
        type=lambda s: s.split(","),
        default=list(MODELS),
        help=f"comma-separated, from {', '.join(MODELS)} or any preset",
    )
    p.add_argument(
        "--methods",
        type=lambda s: s.split(","),
        default=list(METHODS),
        help=f"comma-separated, from {', '.join(METHODS)}",
    )
    p.add_argument("--batch-size", type=int, default=None, help="default 128 (quick: 4)")
    p.add_argument("--steps", type=int, default=None, help="timed steps (default 20, quick 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5, quick 1)")
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--ref-workers",
        type=int,
        default=None,
        help="reference DataLoader workers (default 1 on CUDA as the public TRADES code, 0 on CPU)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile sweeper's model")
    p.add_argument(
        "--packing",
        type=int,
        default=0,
        metavar="N",
        help="instead: small net, 1 trial vs N concurrent trial processes",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="instead: one trial's training step on N data-parallel workers (DDP) vs one",
    )
    p.add_argument("--json", action="store_true", help="JSON lines, one record per line")
    args = p.parse_args(argv)
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        p.error(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    for model in args.models:
        try:
            arch_for(model, quick=False)
        except ValueError as err:  # names the valid presets
            p.error(f"--models {model}: {err}")
    args.batch_size = args.batch_size or (4 if args.quick else 128)
    args.steps = args.steps or (2 if args.quick else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 5)
    return args


def _commit() -> str | None:
    """The checkout's short commit, for the records (None outside a git checkout)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = perf.resolve_device(args.device)
    if args.ref_workers is None:
        args.ref_workers = 1 if device.type == "cuda" else 0
    args.stamp = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "torch": torch.__version__,
    }
    if not args.json:
        print(
            f"# {perf.device_name(device)}, {args.stamp}, batch {args.batch_size}, "
            f"{args.steps} timed steps after {args.warmup}"
        )
    # cuDNN autotuning for both loops: a trial turns it on, and granting the reference the
    # same one-line flag keeps the comparison about the loops
    with perf.timing_settings(device, quick=args.quick):
        if args.packing:
            run_packing(args, device)
        elif args.workers:
            run_data_parallel(args, device)
        else:
            run_side_by_side(args, device)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""All-reduce bus-bandwidth check for qwen35-prov's preflight.

Runs where PyTorch and NCCL/RCCL are (inside the pinned SGLang image): one process per local GPU,
optionally across the nodes of a multi-node replica (--nnodes/--node-rank/--master-addr, with the
NCCL/GLOO interface variables already in the environment). Prints one JSON object on stdout (rank 0 of
node 0) and exits 0 on pass, 1 when the bandwidth is under the floor or a result is wrong, 2 on bad usage,
3 on timeout. Bus bandwidth follows nccl-tests: busbw = algbw * 2 * (n - 1) / n.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import sys
import time

SIZE_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def parse_size(text: str) -> int:
    text = text.strip().upper().rstrip("B")
    if text and text[-1] in SIZE_UNITS:
        return int(float(text[:-1]) * SIZE_UNITS[text[-1]])
    return int(text)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1M,16M,64M,256M,1G", help="message sizes (bytes; K/M/G suffixes)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--nproc", type=int, default=0, help="processes (GPUs) on this node; 0 = every visible GPU")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=29511)
    p.add_argument("--backend", choices=("nccl", "gloo"), default="nccl",
                   help="nccl on GPUs (RCCL on ROCm); gloo on CPUs, for testing this script without GPUs")
    p.add_argument("--floor-gbps", type=float, default=0.0,
                   help="fail when the best bus bandwidth at >= --floor-min-size is under this (GB/s)")
    p.add_argument("--floor-min-size", default="256M", help="message size from which the floor applies")
    p.add_argument("--timeout", type=int, default=300, help="give up after this many seconds")
    args = p.parse_args(argv)
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.floor_min_size = parse_size(args.floor_min_size)
    return args


def local_gpu_count(backend: str) -> int:
    import torch

    if backend == "gloo":
        return 1
    return torch.cuda.device_count()


def worker(local_rank: int, args, queue) -> None:
    import torch
    import torch.distributed as dist

    world = args.nnodes * args.nproc
    rank = args.node_rank * args.nproc + local_rank
    if args.backend == "nccl":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        sync = torch.cuda.synchronize
    else:
        device = torch.device("cpu")
        sync = lambda: None  # noqa: E731
    dist.init_process_group(args.backend, init_method=f"tcp://{args.master_addr}:{args.master_port}",
                            world_size=world, rank=rank, timeout=datetime.timedelta(seconds=args.timeout))
    rows = []
    for size in args.sizes:
        elements = max(1, size // 4)
        check = torch.full((elements,), float(rank + 1), dtype=torch.float32, device=device)
        dist.all_reduce(check)
        sync()
        expected = world * (world + 1) / 2
        correct = bool(torch.all(check == expected).item())
        del check
        data = torch.zeros(elements, dtype=torch.float32, device=device)
        for _ in range(args.warmup):
            dist.all_reduce(data)
        sync()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(args.iters):
            dist.all_reduce(data)
        sync()
        seconds = (time.perf_counter() - start) / args.iters
        algbw = elements * 4 / seconds / 1e9
        rows.append({"bytes": elements * 4, "time_us": round(seconds * 1e6, 1), "algbw_gbps": round(algbw, 2),
                     "busbw_gbps": round(algbw * 2 * (world - 1) / world, 2), "correct": correct})
        del data
    if rank == 0:
        info = {"world_size": world, "backend": args.backend, "torch": torch.__version__}
        if args.backend == "nccl":
            info["device_name"] = torch.cuda.get_device_name(0)
            nccl = getattr(torch.cuda, "nccl", None)
            if nccl is not None:
                version = nccl.version()
                info["nccl_version"] = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        queue.put({**info, "results": rows})
    dist.destroy_process_group()


def verdict(report: dict, floor: float, floor_min_size: int) -> dict:
    rows = report["results"]
    large = [r["busbw_gbps"] for r in rows if r["bytes"] >= floor_min_size] or [r["busbw_gbps"] for r in rows]
    peak = max(large)
    wrong = [r["bytes"] for r in rows if not r["correct"]]
    report["peak_busbw_gbps"] = peak
    report["floor_gbps"] = floor
    if wrong:
        report["status"], report["message"] = "fail", f"all-reduce gave wrong sums at sizes {wrong}"
    elif floor and peak < floor:
        report["status"] = "fail"
        report["message"] = (f"bus bandwidth {peak:.1f} GB/s is under the floor of {floor:.1f} GB/s "
                             f"over {report['world_size']} GPUs")
    else:
        report["status"] = "pass"
        report["message"] = f"bus bandwidth {peak:.1f} GB/s over {report['world_size']} GPUs" + (
            f" (floor {floor:.1f} GB/s)" if floor else "")
    return report


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        gpus = local_gpu_count(args.backend)
    except ImportError as exc:
        print(json.dumps({"status": "fail", "message": f"PyTorch is not available here: {exc}"}))
        return 2
    if args.nproc == 0:
        args.nproc = gpus if args.backend == "nccl" else 2
    if args.backend == "nccl" and args.nproc > gpus:
        print(json.dumps({"status": "fail", "message": f"asked for {args.nproc} GPUs, {gpus} visible"}))
        return 2
    world = args.nnodes * args.nproc
    if world < 2:
        print(json.dumps({"status": "skipped", "world_size": world,
                          "message": f"{world} GPU: nothing to all-reduce"}))
        return 0
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(i, args, queue)) for i in range(args.nproc)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + args.timeout
    report = None
    while time.monotonic() < deadline and any(p.is_alive() for p in procs):
        try:
            report = queue.get(timeout=1)
            break
        except Exception:  # queue.Empty
            if any(p.exitcode not in (None, 0) for p in procs):
                break
    for p in procs:
        p.join(timeout=max(1, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
    failed = [p.exitcode for p in procs if p.exitcode not in (0, None)]
    if report is None:
        if args.node_rank != 0 and not failed:
            return 0  # non-head nodes report nothing; the head's JSON carries the result
        reason = f"ranks exited with {failed}" if failed else f"no result within {args.timeout} s"
        print(json.dumps({"status": "fail", "world_size": world, "message": f"all-reduce test failed: {reason}"}))
        return 3 if not failed else 1
    report = verdict(report, args.floor_gbps, args.floor_min_size)
    print(json.dumps(report))
    return 0 if report["status"] == "pass" else 1


if __name__ == "__main__":
    sys.exit(main())

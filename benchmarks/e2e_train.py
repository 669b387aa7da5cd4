#!/usr/bin/env python3
"""End-to-end training benchmark: tessera vs PyTorch on Fashion-MNIST, same models, same
hyperparameters, in one run.

    OPENBLAS_NUM_THREADS=1 /usr/bin/python3 benchmarks/e2e_train.py --epochs 5
    /usr/bin/python3 benchmarks/e2e_train.py --epochs 1 --max-steps 300 --models cnn   # quick

For every model (cnn, mlp) and precision (fp32, bf16; tessera also cfp8) it trains with SGD +
momentum 0.9, lr 0.05, batch 64, and prints training images/s (evaluation excluded), test
accuracy per epoch, the training time until test accuracy first reaches the target (91% by
default; measured at epoch ends), and the ratios tessera / PyTorch. PyTorch 1.13 is Debian's
python3-torch (bf16 = torch.autocast("cpu", dtype=torch.bfloat16)); both use 2 threads.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530  # the same normalization tessera applies (core/data.cc)


def load_idx(path):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load(split):
    prefix = "train" if split == "train" else "t10k"
    x = load_idx(f"{DATA}/{prefix}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    y = load_idx(f"{DATA}/{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
    return ((x - MEAN) / STD)[:, None, :, :], y  # NCHW for PyTorch


def torch_run(model_name, precision, args):
    import torch
    import torch.nn as nn

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    if model_name == "cnn":
        model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(3136, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    total_steps = args.max_steps or args.epochs * (60000 // args.batch)
    import math

    def lr_at(step):  # tessera's schedules (core/optim.cc), stepped per batch
        if args.schedule == "cosine":
            return 0.5 * args.lr * (1 + math.cos(math.pi * min(1.0, step / total_steps)))
        return args.lr
    xtr, ytr = load("train")
    xte, yte = load("test")
    xtr, ytr, xte, yte = map(torch.from_numpy, (xtr, ytr, xte, yte))
    loss_fn = nn.CrossEntropyLoss()
    epochs, steps, train_time = [], 0, 0.0
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        perm = torch.randperm(len(xtr), generator=g)
        model.train()
        t0 = time.perf_counter()
        images = 0
        for i in range(0, len(xtr) - args.batch + 1, args.batch):
            idx = perm[i:i + args.batch]
            xb, yb = xtr[idx], ytr[idx]
            for group in opt.param_groups:
                group["lr"] = lr_at(steps)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            images += len(idx)
            steps += 1
            if args.max_steps and steps >= args.max_steps:
                break
        dt = time.perf_counter() - t0
        train_time += dt
        model.eval()
        correct = 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for i in range(0, len(xte), 1000):
                correct += (model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
        epochs.append({"epoch": epoch + 1, "images_per_s": images / dt, "test_accuracy": correct / len(xte),
                       "train_time": train_time})
        print(f"  pytorch {model_name} {precision} epoch {epoch + 1}: {images / dt:8.0f} images/s, "
              f"test accuracy {100 * correct / len(xte):.2f}%", flush=True)
        if args.max_steps and steps >= args.max_steps:
            break
    return epochs


def tessera_run(model_name, precision, args):
    with tempfile.TemporaryDirectory() as tmp:
        metrics = os.path.join(tmp, "m.jsonl")
        cmd = [args.tessera, "train", "--model", model_name, "--precision", precision, "--epochs", str(args.epochs),
               "--batch-size", str(args.batch), "--lr", str(args.lr), "--momentum", "0.9", "--seed", str(args.seed),
               "--threads", str(args.threads), "--metrics", metrics, "--no-progress", "--schedule", args.schedule]
        if args.max_steps:
            cmd += ["--max-steps", str(args.max_steps)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        epochs, train_time = [], 0.0
        with open(metrics) as f:
            for line in f:
                rec = json.loads(line)
                if "test_accuracy" not in rec:
                    continue
                train_time += rec["seconds"]
                epochs.append({"epoch": rec["epoch"], "images_per_s": rec["images_per_s"],
                               "test_accuracy": rec["test_accuracy"], "train_time": train_time})
                print(f"  tessera {model_name} {precision} epoch {rec['epoch']}: {rec['images_per_s']:8.0f} images/s, "
                      f"test accuracy {100 * rec['test_accuracy']:.2f}%", flush=True)
    return epochs


def summarize(epochs, target):
    ips = float(np.median([e["images_per_s"] for e in epochs]))
    best = max(e["test_accuracy"] for e in epochs)
    reach = next((e["train_time"] for e in epochs if e["test_accuracy"] >= target), None)
    return ips, best, reach


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="cnn,mlp")
    p.add_argument("--precisions", default="fp32,bf16,cfp8")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--max-steps", type=int, default=0, help="stop each run after N steps (throughput only)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--schedule", default="constant", choices=["constant", "cosine"],
                   help="learning-rate schedule, the same in both (cosine: to 0 over the run, per step)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--target", type=float, default=0.91)
    p.add_argument("--tessera", default=os.path.join(os.path.dirname(__file__), "..", "build", "runtime", "tessera"))
    args = p.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != "1":
        print("note: set OPENBLAS_NUM_THREADS=1 so OpenBLAS threads do not fight PyTorch's", file=sys.stderr)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("PyTorch is the peer of this benchmark: apt-get install python3-torch (or make bench)")

    rows = []
    torch_cache = {}
    for model in args.models.split(","):
        for prec in args.precisions.split(","):
            t = summarize(tessera_run(model, prec, args), args.target)
            ref_prec = "bf16" if prec == "cfp8" else prec  # PyTorch has no cfp8: its bf16 is the peer
            if (model, ref_prec) not in torch_cache:
                torch_cache[(model, ref_prec)] = summarize(torch_run(model, ref_prec, args), args.target)
            pt = torch_cache[(model, ref_prec)]
            rows.append((model, prec, ref_prec, t, pt))

    print(f"\nbatch {args.batch}, SGD momentum 0.9, lr {args.lr} ({args.schedule}), {args.threads} threads, "
          f"{args.epochs} epoch(s){', max ' + str(args.max_steps) + ' steps' if args.max_steps else ''}; "
          f"time to {100 * args.target:.0f}% = training time until the first epoch-end evaluation reaching it")
    hdr = f"{'model':6} {'tessera':8} {'img/s':>8} {'best acc':>9} {'to target':>10} | {'pytorch':8} {'img/s':>8} {'best acc':>9} {'to target':>10} | {'speed ratio':>11}"
    print(hdr)
    print("-" * len(hdr))
    fmt_t = lambda s: f"{s:9.1f}s" if s is not None else "       n/a"
    for model, prec, ref, (ti, tb, tr), (pi, pb, pr) in rows:
        print(f"{model:6} {prec:8} {ti:8.0f} {100 * tb:8.2f}% {fmt_t(tr)} | {ref:8} {pi:8.0f} {100 * pb:8.2f}% {fmt_t(pr)} |"
              f" {ti / pi:10.2f}x")


if __name__ == "__main__":
    main()

"""The ``nas`` command. Input errors print one line and exit 2; ``--debug`` shows tracebacks."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from nas.archspec import read_arch_spec, self_contained
from nas.config import DEFAULT_OBJECTIVES, SearchConfig, default_objectives
from nas.errors import UserError
from nas.train.config import TrainConfig

EXAMPLES = {
    "search": """examples:
  nas search --space elasticvit --device pixel6
  nas search --space elasticvit --device pixel6,pixel4 --objectives naswot,latency --budget 500
  nas search --space elasticvit --device pixel6 --objectives latency,max:params --max-latency 20 --budget 100000
  nas search --space my_space.toml --device ./my_tables/ --strategy optuna-tpe --seed 3 --json
  nas search --space nb201 --device pixel2 --objectives latency,max:nb201-cifar10 --budget 300   # NB201 benchmark mode
  nas search --space nb201 --device pixel2,eyeriss --objectives latency,synflow --budget 200  # a front over 2 devices
  nas search --space nb201 --device fpga --objectives max:nb201-cifar10,params --constraint "latency<=3.5"
  nas search --space nb201 --device my_ms.csv --metric acc=my_results.csv:top1 --objectives latency,max:acc
  nas search --space elasticvit-tiny --supernet runs/<train run>/ --objectives accuracy,macs --budget 100
  nas search --space vit-resnas-micro --supernet runs/<train run>/ --strategy evolution --preset resnas --max-macs 7
  nas search --space elasticvit --device pixel6 --optuna-storage sqlite:///runs/studies.db   # optuna-dashboard
  nas search --space elasticvit --device pixel6 --ray --budget 2000                # a local Ray instance
  nas search --space elasticvit --device pixel6 --ray auto --workers 16 --threads 2 # the cluster on this node
  ray job submit -- nas search --space elasticvit --device pixel6 --ray --out /shared/runs/r1  # on the cluster""",
    "train": """examples:
  nas train --space elasticvit-tiny --data fashion-mnist --steps 600 --batch-size 64
  nas train --space elasticvit-tiny --data fashion-mnist:/data/fmnist --sampler elasticvit --epochs 2
  nas train --space elasticvit-tiny --data cifar10:/data/cifar-10-batches-py --sampler sandwich --ema 0.999 --epochs 5
  nas train --resume runs/20261124-train-elasticvit-tiny-fashion-mnist-1a2b3c
  nas train --space asvit-tiny --arch seed --data fashion-mnist --steps 300 --retokenize 0.5   # one As-ViT network
  nas train --space vit-resnas-micro --data fashion-mnist --sampler multi-arch --subnets 4 --batch-size 64 --steps 300
  nas train --space elasticvit-tiny --data fashion-mnist --steps 600 --ray --workers 2 --threads 1   # Ray Train, 2 ranks
  nas train --space elasticvit --data imagefolder:/shared/in100 --epochs 20 --ray auto --workers 8 --gpus-per-worker 1""",
    "tune": """examples:
  nas tune --space elasticvit-tiny --data fashion-mnist --steps 300 --lr 1e-4,1e-3,3e-3 --sampler sandwich,elasticvit
  nas tune --space elasticvit-tiny --data fashion-mnist --steps 300 --lr 1e-4:1e-2 --subnets 2,4 --search optuna --samples 16
  nas tune --space elasticvit-tiny --data cifar10:/data/cifar-10-batches-py --epochs 2 --lr 1e-3,3e-3 --ray auto --json""",
    "resume": """examples:
  nas resume runs/20261124-elasticvit-pixel6-a1b2c3
  nas resume runs/20261124-elasticvit-pixel6-a1b2c3 --budget 1000   # extend a finished run
  nas resume runs/20261124-elasticvit-pixel6-a1b2c3 --ray ray://head:10001   # go on on another cluster""",
    "latency": """examples:
  nas latency --space elasticvit --device pixel6 --arch elastic_S1 --json
  nas latency --space elasticvit --arch elastic_M                    # every device with a table
  nas latency --space elasticvit --device pixel6 --arch '[192, [16,24,40,64,96,192,272], ...]' --blocks
  nas latency --space nb201 --device fpga,my_phone --archs cells.csv --csv    # every row of a file, one call""",
    "proxies": """examples:
  nas proxies --space nb201 --n 200 --proxies synflow,jacob_cov,naswot,params --truth nb201_cifar10.csv
  nas proxies --space elasticvit-tiny --n 50 --supernet runs/<train run>/      # correlation with supernet accuracy
  nas proxies --space elasticvit --n 20 --proxies all --ensemble logrank --json
  nas proxies --space nb201 --n 1000 --out runs/nb201-proxies                   # re-run to resume""",
    "lut": """examples:
  nas lut build    --space elasticvit-tiny --device local-cpu      # measure every block on this machine (~6 min)
  nas lut build    --space elasticvit --device local-cpu --max-blocks 300   # a designed subset + a fitted model
  nas lut validate --space elasticvit-tiny --device local-cpu      # whole networks end to end, fitted correction
  nas lut sample   --space nb201 --device local-cpu --n 20 --out my_ms.csv   # 20 whole networks, no table needed
  nas lut fit      --space nb201 --measured my_ms.csv --name laptop          # a few-shot device from them
run `nas lut build --help` / `nas lut validate --help` / `nas lut fit --help` for their options""",
    "lut fit": """examples:
  nas lut fit --space nb201 --measured my_phone.csv --name my_phone      # then --device my_phone anywhere
  nas lut fit --space elasticvit --measured ms.csv --out ./tables/phone --json
  nas lut fit --space elasticvit-tiny --measured laptop.csv --method ridge
the file has columns arch (the space's architecture string or compact JSON encoding) and ms, >= 5 rows;
docs/latency-tables.md ("Few-shot devices") says how good 10, 20, 50, 100 rows are""",
    "lut sample": """examples:
  nas lut sample --space nb201 --device local-cpu --n 20 --out laptop.csv
  nas lut sample --space elasticvit-tiny --device onnxruntime-cpu --n 50 --threads 2 --out ort.csv
  nas lut sample --space elasticvit --device android --adb-serial R58M123 --n 20 --out phone.csv
then `nas lut fit --space S --measured FILE.csv`""",
    "lut build": """examples:
  nas lut build --space elasticvit-tiny --device local-cpu            # ~6 min; then --device local-cpu anywhere
  nas lut build --space nb201 --device onnxruntime-cpu --threads 2
  nas lut build --space elasticvit --device local-cpu --max-blocks 400   # measure a designed subset, fit the rest
  nas lut build --space elasticvit-tiny --device local-cpu --out ./tables/laptop   # a folder of your own
  nas lut build --space elasticvit --device android --adb-serial R58M123 --android-runtime onnxruntime
re-run the same command to resume an interrupted build; --fresh starts over""",
    "lut validate": """examples:
  nas lut validate --space elasticvit-tiny --device local-cpu --n 100
  nas lut validate --space nb201 --device local-cpu --n 60 --calibrate 12 --json
  nas lut validate --space elasticvit-tiny --device ./tables/laptop --no-save   # report only, keep the table as is""",
    "lut spu-calibrate": """examples:
  python3 -m venv ~/spu-venv && ~/spu-venv/bin/pip install spu==0.9.5     # once; never into vitnas's venv
  nas lut spu-calibrate --spu-python ~/spu-venv/bin/python --out semi2k.csv
then point a device TOML's `ops` at semi2k.csv (docs/mpc.md); ~1-3 minutes on 2 cores""",
    "import-weights": """examples:
  nas import-weights --from elasticvit-original supernet_checkpoint.pth.tar --space elasticvit \\
      --data imagefolder:/data/imagenet --out elasticvit-original.safetensors
  nas search --space elasticvit --supernet elasticvit-original.safetensors --objectives accuracy,latency --device pixel6
  nas import-weights --from elasticvit-original weights.safetensors --space elasticvit --out w.safetensors --allow-missing --json""",
    "design": """examples:
  nas design --space deepmad-resnet --max-flops 4.13G --max-params 25.55M             # DeepMAD-R50's budgets
  nas design --space deepmad-mobilenet --max-flops 4.5G --max-params 29M --rho 0.5 --json
  nas design --space deepmad-resnet --max-flops 1.82G --max-params 11.69M --solver evolution --time-limit 10
  nas design --space deepmad-tiny --max-flops 30M --max-params 1M --corrected --out runs/tiny-design
  nas design --space deepmad-resnet --evaluate deepmad-r50 --json                      # score a given structure
  nas design --space deepmad-resnet --evaluate runs/tiny-design/structure.json""",
    "export": """examples:
  nas export runs/20261124-elasticvit-tiny-nodevice-a1b2c3 --point 0                # Pareto point 0, torch + ONNX
  nas export runs/<run> --id elasticvit-tiny-0484911d592e --format torch --out ./model
  nas export runs/<run> --point 3 --format onnx --json
then: import nas.export, timm; timm.create_model("vitnas_elasticvit", pretrained_cfg_overlay=dict(file="./model/model.safetensors"))""",
    "report": """examples:
  nas report runs/20261124-elasticvit-pixel6-a1b2c3          # (re)writes RUN_DIR/report.html and its PNGs
  nas report runs/<run> --json""",
    "evals": """examples:
  nas evals runs/<run> --format csv                          # RUN_DIR/evals.csv
  nas evals runs/<run> --format parquet --out evals.parquet
  nas evals runs/<run> --format parquet --json                # then pandas.read_parquet(...)""",
    "spaces": "examples:\n  nas spaces\n  nas spaces --json",
    "devices": "examples:\n  nas devices                  # kind: blocks (summed per block), mpc (analytic), network (one value per architecture)\n  nas devices --json",
    "convert-checkpoint": """examples:
  nas convert-checkpoint runs/2026-06-01-train-elasticvit-tiny-ab12      # a run directory
  nas convert-checkpoint old/checkpoint.pt
reads tensors and plain data only (torch.load weights_only=True: a planted pickle is refused, nothing runs);
writes checkpoint.safetensors beside the old file and leaves that file in place""",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nas", description="Neural-architecture search for vision transformers and CNN/ViT hybrids.",
                formatter_class=argparse.RawDescriptionHelpFormatter,
                epilog="run `nas <command> --help` for a command's options and examples")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name: str, help_: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        return c

    s = cmd("search", "search a space for the Pareto front of accuracy estimate vs. latency/cost")
    s.add_argument("--space", required=True, help="space name (see `nas spaces`) or path to a space TOML")
    s.add_argument("--device", help="device(s), comma-separated (see `nas devices`): a name, a table folder, or a "
                                    "CSV of whole-network latencies (arch,ms; FILE.csv:COLUMN for another column)")
    s.add_argument("--objectives", default=None,
                   help="comma-separated: latency, latency:<device>, macs, params, accuracy (needs --supernet), "
                        "a proxy such as naswot, or a table metric (a --metric NAME, or shipped: nb201-cifar10); "
                        "max:X / min:X sets the direction; a bare --metric name is minimised, shipped metrics and "
                        f"proxies keep their own (nb201-cifar10: maximised) (default: {DEFAULT_OBJECTIVES}; "
                        "accuracy,latency with --supernet; macs instead of latency without --device)")
    s.add_argument("--metric", action="append", default=[], metavar="NAME=FILE.csv:COLUMN",
                   help="a metric from a CSV keyed by 'arch' (architecture string / JSON encoding) or 'arch_id'; "
                        "repeatable; recorded as column metric_NAME, usable in --objectives and --constraint")
    s.add_argument("--constraint", action="append", default=[], metavar="NAME<=VALUE",
                   help="a bound on a cheap metric, repeatable: latency (every device), latency:<device>, macs, "
                        "params or a metric, with <= or >=, in the units of the CSV columns (ms, millions, the "
                        "metric's own), e.g. --constraint 'latency<=20' --constraint 'nb201-cifar10>=93'")
    s.add_argument("--allow-missing", action="store_true",
                   help="an architecture a whole-network table or metric lacks becomes a failed row, not an error")
    s.add_argument("--supernet", metavar="CKPT", help="a `nas train` checkpoint or run directory: accuracy comes from it")
    s.add_argument("--strategy", default=SearchConfig.strategy,
                   help="nsga2 (pymoo), optuna-nsga2, optuna-tpe, evolution, random, asvit (As-ViT seed search + "
                        "auto-scaling; --budget = REINFORCE steps) or mpcvit (MPCViT's differentiable search)")
    s.add_argument("--budget", type=int, default=None,
                   help=f"architectures to evaluate (default {SearchConfig.budget}: minutes on 2 cores with naswot); "
                        "with --strategy asvit, REINFORCE steps (default: the space's reinforce_steps)")
    s.add_argument("--population", type=int, default=None,
                   help=f"population / batch size (default {SearchConfig.population}; a --preset's initial population; "
                        "optuna-tpe: a random start of min(P, 16), batches of min(P, 8))")
    s.add_argument("--preset", help="a published configuration of the strategy: resnas (ViT-ResNAS's evolution: 500 + 19 x "
                                    "150 evaluations, MACs in [0.975 C, C] for C = --max-macs) or elasticvit (ElasticViT's; "
                                    "MACs in [T, T + 20] for T = --min-macs)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-latency", type=float, metavar="MS", help="constraint: latency on every device <= MS")
    s.add_argument("--max-macs", type=float, metavar="M", help="constraint: MACs <= M millions")
    s.add_argument("--min-macs", type=float, metavar="M", help="constraint: MACs >= M millions")
    s.add_argument("--max-params", type=float, metavar="M", help="constraint: parameters <= M millions")
    s.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                   help="torch threads for proxy evaluation (recorded: scores depend on it)")
    s.add_argument("--out", type=Path, help="run directory (default runs/<date>-<space>-<device>-<id>)")
    d = s.add_argument_group("designer options (--strategy mpcvit; docs/mpc.md)")
    d.add_argument("--mu", help="RSAttn ratios to binarise at, comma-separated in (0, 1] (default 0.1,0.3,0.5,0.7)")
    d.add_argument("--data", help="training data, as for `nas train` (e.g. fashion-mnist)")
    d.add_argument("--steps", type=int, help="optimiser steps of the search and of each retraining")
    d.add_argument("--teacher", help="a `nas train --arch all-softmax` run: token-level distillation when retraining")
    d.add_argument("--beta-ratio", type=float, metavar="R", help="MPCViT+: search per-token GeLU linearisation, keep R of the tokens")
    s.add_argument("--optuna-storage", metavar="URL", help="mirror every evaluation as a trial of an optuna study "
                                                          "named after the run: sqlite:///PATH or journal:PATH "
                                                          "(browse with optuna-dashboard)")
    _ray_flags(s)
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    t = cmd("train", "train a weight-sharing supernet on real data")
    t.add_argument("--space", help="space name or TOML path (its family must have a supernet)")
    t.add_argument("--data", help="fashion-mnist[:DIR], cifar10:DIR, cifar100:DIR or imagefolder:DIR[:SIZE]")
    t.add_argument("--sampler", default=TrainConfig.sampler, help="uniform, sandwich (default), complexity, elasticvit, multi-arch (ViT-ResNAS: --subnets per pass)")
    t.add_argument("--arch", help="train this one network of the space, no supernet: a preset, an architecture string, "
                                  "JSON, or a JSON file (e.g. a `nas design` structure.json)")
    t.add_argument("--patch-mixup", action="store_true",
                   help="ViT-ResNAS patch-token mixup: a patch head learns each token's label (with --sampler multi-arch)")
    t.add_argument("--retokenize", type=float, metavar="SHARE",
                   help="As-ViT progressive re-tokenisation: the first SHARE of the steps on coarse tokens (with --arch)")
    n = t.add_mutually_exclusive_group()
    n.add_argument("--steps", type=int, help="optimiser steps")
    n.add_argument("--epochs", type=float, help="epochs over the training split")
    t.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    t.add_argument("--lr", type=float, default=TrainConfig.lr, help=f"peak AdamW learning rate (default {TrainConfig.lr})")
    t.add_argument("--subnets", type=int, help="subnets per step (default: 4; 2 for uniform and multi-arch, "
                                               "where they share one pass)")
    t.add_argument("--alpha-div", action=argparse.BooleanOptionalAction, default=None,
                   help="in-place distillation with alpha-divergence (default: on for complexity/elasticvit)")
    t.add_argument("--teacher", action="append", default=[], metavar="NAME:CKPT",
                   help="timm model and its checkpoint; repeat for an ensemble (their mean replaces the labels)")
    t.add_argument("--ema", type=float, metavar="DECAY", help="keep an EMA of the weights; evaluation uses it "
                                                           "(default: the space's recipe, elasticvit 0.99985; 0: off)")
    t.add_argument("--agc", type=float, metavar="FACTOR", help="adaptive gradient clipping "
                                                            "(default: the space's recipe, elasticvit 0.1; 0: off)")
    t.add_argument("--bn-batches", type=int, metavar="N", help="BN recalibration batches before an evaluation, in "
                   "training and in a search with the supernet (default: the space's recipe, elasticvit 129 and 65 of 96)")
    t.add_argument("--accumulate", type=int, default=1, help="micro-batches per optimiser step")
    t.add_argument("--heldout", type=int, default=TrainConfig.heldout, help="training images held out for search")
    t.add_argument("--eval-every", type=int, help="steps between evaluations (default: each epoch and the end)")
    t.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    t.add_argument("--max-bad-steps", type=int, default=TrainConfig.max_bad_steps,
                   help="stop after this many non-finite losses in a row (default 10)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    t.add_argument("--out", type=Path, help="run directory (default runs/<date>-train-<space>-<data>-<id>)")
    t.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a training run from its checkpoint")
    _ray_flags(t, what="train with Ray Train workers (data-parallel)")
    t.add_argument("--no-progress", action="store_true")
    t.add_argument("--json", action="store_true")

    tu = cmd("tune", "sweep supernet-training hyperparameters with Ray Tune (each trial a `nas train` run)")
    tu.add_argument("--space", required=True, help="space name or TOML path (its family must have a supernet)")
    tu.add_argument("--data", required=True, help="as for nas train")
    n = tu.add_mutually_exclusive_group(required=True)
    n.add_argument("--steps", type=int, help="optimiser steps per trial")
    n.add_argument("--epochs", type=float, help="epochs per trial")
    tu.add_argument("--lr", default=str(TrainConfig.lr), help="comma-separated values, or LOW:HIGH (log-uniform; "
                                                               "random and optuna searches)")
    tu.add_argument("--sampler", default=TrainConfig.sampler, help="comma-separated samplers")
    tu.add_argument("--subnets", help="comma-separated subnets per step (default: the sampler's)")
    tu.add_argument("--search", default="grid", help="grid (every combination), random, or optuna (multi-objective: "
                                                     "smallest and largest subnet accuracy)")
    tu.add_argument("--samples", type=int, default=1, help="trials: repeats of the grid, or draws (default 1)")
    tu.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    tu.add_argument("--heldout", type=int, default=TrainConfig.heldout)
    tu.add_argument("--eval-every", type=int, help="steps between evaluations, each reported to Tune (default: each epoch)")
    tu.add_argument("--bn-batches", type=int, metavar="N", help="BN recalibration batches per evaluated subnet, as for "
                                                              "nas train (default: the space's recipe)")
    tu.add_argument("--seed", type=int, default=0)
    tu.add_argument("--threads", type=int, default=1, help="CPUs (torch threads) per trial (default 1)")
    tu.add_argument("--ray", nargs="?", const="local", default="local", metavar="ADDRESS",
                    help="the Ray cluster (default: a local instance, or RAY_ADDRESS)")
    tu.add_argument("--gpus-per-trial", type=float, default=0.0)
    tu.add_argument("--out", type=Path, help="sweep directory (default runs/<date>-tune-<space>-<data>-<id>)")
    tu.add_argument("--json", action="store_true")

    r = cmd("resume", "continue an interrupted search without recomputing finished evaluations")
    r.add_argument("run_dir", type=Path)
    r.add_argument("--budget", type=int, help="raise the budget of the run")
    _ray_flags(r, resume=True)
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--json", action="store_true")

    la = cmd("latency", "MACs, parameters and predicted latency of one architecture")
    la.add_argument("--space", required=True)
    la.add_argument("--device", help="device(s), comma-separated (default: every device with a table for the space)")
    which = la.add_mutually_exclusive_group(required=True)
    which.add_argument("--arch", help="a preset name, JSON (the family's encoding or {gene: value}), or @file.json")
    which.add_argument("--archs", type=Path, metavar="FILE.csv",
                       help="predict every architecture of a CSV (column arch: the space's string form) in one call")
    la.add_argument("--blocks", action="store_true", help="also list every table entry summed (--arch only)")
    fmt = la.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true")
    fmt.add_argument("--csv", action="store_true", help="with --archs: arch,arch_id,macs_m,params_m,latency_<device>_ms")

    px = cmd("proxies", "score sampled architectures with training-free proxies; with accuracy, rank-correlate them")
    px.add_argument("--space", required=True)
    px.add_argument("--n", type=int, default=50, help="architectures to sample (default 50)")
    px.add_argument("--proxies", default=",".join(_default_proxies()),
                    help="comma-separated proxy names or 'all' (default: every proxy but grasp and linear_regions)")
    px.add_argument("--ensemble", default="ranksum", help="rank aggregation: ranksum (default), logrank, vote")
    px.add_argument("--supernet", metavar="CKPT", help="a `nas train` checkpoint: correlate with supernet accuracy")
    px.add_argument("--truth", metavar="CSV[:COLUMN]", help="ground truth: a CSV with an 'arch' column and an accuracy column")
    px.add_argument("--seed", type=int, default=0)
    px.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    px.add_argument("--out", type=Path, help="report directory (default runs/<date>-proxies-<space>-<id>); an existing "
                                             "report directory with the same settings is resumed")
    px.add_argument("--no-progress", action="store_true")
    px.add_argument("--json", action="store_true")

    lut = cmd("lut", "build latency tables on a device you can reach, and validate them end to end")
    lsub = lut.add_subparsers(dest="lut_command", required=True, parser_class=_Parser)

    def lcmd(name: str, help_: str) -> argparse.ArgumentParser:
        c = lsub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES.get(f"lut {name}"),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        c.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        return c

    from nas.latency.measure import Protocol

    lb = lcmd("build", "measure every block a space uses (or a designed subset) into a latency table")
    lb.add_argument("--space", required=True)
    lb.add_argument("--device", required=True, help="local-cpu (torch eager), onnxruntime-cpu, local-cuda, or android (adb)")
    lb.add_argument("--out", type=Path, help="table folder (default: $VITNAS_TABLES/<device>, "
                                             "~/.local/share/vitnas/predictors/<device>)")
    lb.add_argument("--name", help="the table's device name, for --device later (default: --device, or the --out folder's name)")
    lb.add_argument("--max-blocks", type=int, metavar="N",
                    help="when the space has more blocks, measure a designed subset of about N and fit the rest")
    lb.add_argument("--fresh", action="store_true", help="discard a partial build and measure from scratch")
    lb.add_argument("--threads", type=int, default=Protocol.threads, help=f"runtime threads (default {Protocol.threads})")
    lb.add_argument("--batch", type=int, default=Protocol.batch, help=f"batch size (default {Protocol.batch})")
    lb.add_argument("--warmup", type=int, default=Protocol.warmup, help=f"warm-up calls (default {Protocol.warmup})")
    lb.add_argument("--repeats", type=int, default=Protocol.repeats, help=f"timed samples (default {Protocol.repeats})")
    lb.add_argument("--min-sample-ms", type=float, default=Protocol.min_sample_ms,
                    help=f"calls per sample are chosen so a sample lasts this long (default {Protocol.min_sample_ms})")
    lb.add_argument("--max-spread", type=float, default=Protocol.max_spread,
                    help=f"re-measure a block whose IQR/median exceeds this (default {Protocol.max_spread})")
    lb.add_argument("--retries", type=int, default=Protocol.retries, help=f"re-measurements (default {Protocol.retries})")
    lb.add_argument("--passes", type=int, default=Protocol.passes,
                    help=f"passes over all blocks, keeping each block's median (default {Protocol.passes})")
    lb.add_argument("--no-context", action="store_true",
                    help="time blocks in a tight loop of themselves, not after other blocks (see docs/latency-tables.md)")
    ad = lb.add_argument_group("android (adb; docs/latency-android.md)")
    ad.add_argument("--adb-serial", help="the phone's serial (adb devices)")
    ad.add_argument("--android-runtime", default="onnxruntime", help="onnxruntime (onnxruntime_perf_test) or tflite (benchmark_model)")
    ad.add_argument("--android-binary", help="the benchmark binary on the phone (default: under /data/local/tmp)")
    ad.add_argument("--taskset", default="70", help="CPU mask to pin the benchmark to (default 70: the big cores of most SoCs)")
    ad.add_argument("--convert", help="command that turns {onnx} into a .tflite in {outdir} (tflite only)")
    lb.add_argument("--no-progress", action="store_true")
    lb.add_argument("--json", action="store_true")

    lv = lcmd("validate", "measure sampled subnets end to end and compare with the table's predictions")
    lv.add_argument("--space", required=True)
    lv.add_argument("--device", required=True, help="a table you built (device name, folder or .toml)")
    lv.add_argument("--n", type=int, default=100, help="subnets to sample (default 100)")
    lv.add_argument("--calibrate", type=int, default=20,
                    help="of those, how many fit the correction (default 20); figures are on the others")
    lv.add_argument("--seed", type=int, default=0)
    lv.add_argument("--passes", type=int, help="passes over the networks, keeping each one's median "
                                                "(default: the table's protocol)")
    lv.add_argument("--out", type=Path, help="report folder (default runs/<date>-lut-validate-<space>-<device>-<id>); "
                                             "re-run with the same --out to resume")
    lv.add_argument("--no-save", action="store_true", help="do not write the correction into the table")
    lv.add_argument("--no-progress", action="store_true")
    lv.add_argument("--json", action="store_true")

    ls = lcmd("sample", "measure N sampled whole networks end to end (no table needed): the arch,ms file `lut fit` reads")
    ls.add_argument("--space", required=True)
    ls.add_argument("--device", required=True, help="local-cpu (torch eager), onnxruntime-cpu, local-cuda, or android (adb)")
    ls.add_argument("--n", type=int, default=20, help="networks to sample and measure (default 20)")
    ls.add_argument("--out", type=Path, required=True, metavar="FILE.csv",
                    help="the arch,ms CSV to write (measurements are logged to FILE.measure.jsonl: re-run to resume)")
    ls.add_argument("--seed", type=int, default=0)
    ls.add_argument("--threads", type=int, default=Protocol.threads, help=f"runtime threads (default {Protocol.threads})")
    ls.add_argument("--batch", type=int, default=Protocol.batch, help=f"batch size (default {Protocol.batch})")
    ls.add_argument("--warmup", type=int, default=Protocol.warmup, help=f"warm-up calls (default {Protocol.warmup})")
    ls.add_argument("--repeats", type=int, default=Protocol.repeats, help=f"timed samples (default {Protocol.repeats})")
    ls.add_argument("--min-sample-ms", type=float, default=Protocol.min_sample_ms,
                    help=f"calls per sample are chosen so a sample lasts this long (default {Protocol.min_sample_ms})")
    ls.add_argument("--retries", type=int, default=Protocol.retries, help=f"re-measurements (default {Protocol.retries})")
    ls.add_argument("--passes", type=int, default=Protocol.passes, help=f"passes over the networks (default {Protocol.passes})")
    sad = ls.add_argument_group("android (adb; docs/latency-android.md)")
    sad.add_argument("--adb-serial", help="the phone's serial (adb devices)")
    sad.add_argument("--android-runtime", default="onnxruntime", help="onnxruntime (onnxruntime_perf_test) or tflite (benchmark_model)")
    sad.add_argument("--android-binary", help="the benchmark binary on the phone (default: under /data/local/tmp)")
    sad.add_argument("--taskset", default="70", help="CPU mask to pin the benchmark to (default 70)")
    sad.add_argument("--convert", help="command that turns {onnx} into a .tflite in {outdir} (tflite only)")
    ls.add_argument("--no-progress", action="store_true")
    ls.add_argument("--json", action="store_true")

    lf = lcmd("fit", "fit a latency predictor for a new device from a few whole networks measured on it")
    lf.add_argument("--space", required=True)
    lf.add_argument("--measured", required=True, type=Path, metavar="FILE.csv",
                    help="columns arch,ms: >= 5 whole networks measured on the device (`nas lut sample` writes one)")
    lf.add_argument("--name", help="the device's name, for --device later (default: the --out folder's name, else the file's)")
    lf.add_argument("--out", type=Path, help="device folder (default: $VITNAS_TABLES/<name>, ~/.local/share/vitnas/predictors/<name>)")
    lf.add_argument("--method", default="auto", help="auto (lowest cross-validated MAPE; default), ridge, single, flops")
    lf.add_argument("--seed", type=int, default=0, help="cross-validation folds (default 0)")
    lf.add_argument("--json", action="store_true")

    sc = lcmd("spu-calibrate", "regenerate the SEMI2K MPC protocol table with SecretFlow SPU's simulator (its own venv)")
    sc.add_argument("--spu-python", required=True, metavar="PYTHON",
                    help="the Python of a separate venv with spu==0.9.5 (numpy < 2, jax 0.4.34); never vitnas's own")
    sc.add_argument("--out", type=Path, default=Path("semi2k.csv"),
                    help="protocol table to write (default ./semi2k.csv; the shipped one is predictors/mpc-protocols/semi2k.csv)")
    sc.add_argument("--from-output", type=Path, metavar="FILE", help=argparse.SUPPRESS)  # recorded probe output
    sc.add_argument("--json", action="store_true")

    de = cmd("design", "design a network by solving a mathematical program (DeepMAD), no training")
    de.add_argument("--space", required=True, help="a DeepMAD space: deepmad-resnet, deepmad-mobilenet, deepmad-tiny")
    de.add_argument("--max-flops", type=_si, metavar="F", help="FLOPs budget in the original code's count (4.13G, 30M)")
    de.add_argument("--max-params", type=_si, metavar="P", help="parameters budget, classifier excluded (25.55M)")
    de.add_argument("--max-layers", type=_si, metavar="N", help="conv-layer budget (optional)")
    de.add_argument("--rho", type=float, help="effectiveness bound rho0 (default: the space's, 0.3 ResNet / 0.5 MobileNet)")
    de.add_argument("--solver", default="mp", help="mp (scipy differential evolution, mixed-integer; default) or "
                                                   "evolution (the original TinyNAS search)")
    de.add_argument("--evaluate", metavar="ARCH", help="print the breakdown of this structure (preset, JSON or file); "
                                                       "writes nothing")
    de.add_argument("--entropy", default="code", help="code (1/2 log widths, as released; default) or paper (log)")
    de.add_argument("--corrected", action="store_true", help="score at the network's own resolution with true "
                                                             "K1DWSEK1 feature sizes (the code scores at 224, SE sides 1)")
    de.add_argument("--seed", type=int, default=0)
    de.add_argument("--time-limit", type=float, metavar="S", help="stop the solver after S seconds")
    de.add_argument("--maxiter", type=int, default=5000, help="mp: generations at most (default 5000; stops at convergence)")
    de.add_argument("--popsize", type=int, default=16, help="mp: population per variable (default 16)")
    de.add_argument("--restarts", type=int, default=3, help="mp: independent solver runs, the best wins (default 3)")
    de.add_argument("--population", type=int, default=256, help="evolution: population (default 256)")
    de.add_argument("--iterations", type=int, default=500_000, help="evolution: children to score (default 500000)")
    de.add_argument("--out", type=Path, help="run directory (default runs/<date>-<space>-design-<id>)")
    de.add_argument("--no-progress", action="store_true", help="no progress bar")
    de.add_argument("--json", action="store_true", help="print the breakdown as JSON")

    ex = cmd("export", "export a Pareto point (or any evaluated architecture) as safetensors + config.json "
                       "(timm-loadable) and ONNX, with a parity check")
    ex.add_argument("run_dir", type=Path, help="a `nas search` / `nas design` run directory")
    which = ex.add_mutually_exclusive_group(required=True)
    which.add_argument("--point", type=int, metavar="K", help="row K (0-based) of the run's pareto.csv")
    which.add_argument("--id", dest="arch_id", metavar="ARCH_ID", help="any architecture id in the run's evals.jsonl")
    ex.add_argument("--format", default="all", help="torch (model.safetensors + config.json), onnx (model.onnx), "
                                                    "or all (default)")
    ex.add_argument("--out", type=Path, help="export directory, must not exist or be empty "
                                             "(default RUN_DIR/exports/<arch id>[-torch|-onnx])")
    ex.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ex.add_argument("--json", action="store_true", help="print the parity record (as appended to exports.jsonl)")

    rp = cmd("report", "write a run's self-contained report.html (figures inlined; the PNGs beside it)")
    rp.add_argument("run_dir", type=Path, help="a `nas search` run directory")
    rp.add_argument("--json", action="store_true")

    ev = cmd("evals", "write every evaluation of a run as CSV or Parquet (schema: docs/runs.md)")
    ev.add_argument("run_dir", type=Path, help="a `nas search` or `nas design` run directory")
    ev.add_argument("--format", default="csv", help="csv (default) or parquet")
    ev.add_argument("--out", type=Path, help="output file (default RUN_DIR/evals.csv or evals.parquet)")
    ev.add_argument("--json", action="store_true")

    iw = cmd("import-weights", "convert a supernet trained with the authors' code into a vitnas supernet checkpoint")
    iw.add_argument("ckpt", metavar="CKPT", help="the original checkpoint (.pth.tar with model_ema / state_dict, "
                                                 "a bare state_dict, or .safetensors); read without running code")
    iw.add_argument("--from", dest="origin", required=True, choices=["elasticvit-original"],
                    help="whose format: elasticvit-original (microsoft/Moonlit ElasticViT; its EMA weights if present)")
    iw.add_argument("--space", required=True, help="the space the weights belong to (elasticvit)")
    iw.add_argument("--data", help="the dataset a search recalibrates BN on and scores with (as for nas train)")
    iw.add_argument("--heldout", type=int, default=TrainConfig.heldout, help="training images held out for search")
    iw.add_argument("--allow-missing", action="store_true",
                    help="keep initial values for tensors the checkpoint lacks (default: refuse)")
    iw.add_argument("--out", type=Path, required=True, help="the supernet checkpoint to write (for nas search --supernet)")
    iw.add_argument("--json", action="store_true")

    sp = cmd("spaces", "list the search spaces that ship with vitnas")
    sp.add_argument("--json", action="store_true")
    dv = cmd("devices", "list the devices with latency tables, with provenance")
    dv.add_argument("--json", action="store_true")
    cc = cmd("convert-checkpoint", "rewrite a vitnas 0.1 checkpoint.pt as checkpoint.safetensors (no pickle)")
    cc.add_argument("path", type=Path, metavar="CHECKPOINT_OR_RUN_DIR")
    return p


def _ray_flags(p: argparse.ArgumentParser, resume: bool = False, what: str = "score on Ray actors") -> None:
    where = " (default: as the run was started)" if resume else ""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help=f"{what}: alone, a local Ray instance (or the cluster in RAY_ADDRESS, as under "
                        f"`ray job submit`); with an address (auto, HOST:PORT, ray://HOST:10001), that cluster{where}")
    if resume:
        g.add_argument("--no-ray", action="store_true", help="score in this process, even if the run used Ray")
    p.add_argument("--workers", type=int, metavar="N", help="Ray actors (default: cluster CPUs / --threads)")
    p.add_argument("--gpus-per-worker", type=float, metavar="G", help="GPUs per actor, may be fractional (default 0)")


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        out = COMMANDS[args.command](args)
    except UserError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        sys.exit(130)
    if out is not None:
        print(out)


def _default_proxies() -> tuple[str, ...]:
    from nas.proxy_report import DEFAULT_PROXIES

    return DEFAULT_PROXIES


def cmd_proxies(a: argparse.Namespace) -> str:
    from nas.proxy_report import ProxyReportConfig, format_table, parse_proxy_list, prepare_report, run_report
    from nas.runs import locked, new_run_dir

    cfg = ProxyReportConfig(space=a.space, n=a.n, proxies=parse_proxy_list(a.proxies), seed=a.seed, threads=a.threads,
                            ensemble=a.ensemble, supernet=a.supernet, truth=a.truth).validate()
    cfg = cfg.absolute()
    prepared = prepare_report(cfg)  # truth file, supernet: checked before a directory exists
    space = prepared.space
    if a.out is not None and (a.out / "config.toml").exists():
        old = ProxyReportConfig.from_toml(a.out / "config.toml")
        if old != cfg:
            raise UserError(f"--out {a.out} holds a report with other settings; choose another directory")
        run_dir = a.out
    else:
        run_dir = new_run_dir(cfg, a.out, f"proxies-{space.name}")
    with locked(run_dir):
        print(f"report directory: {run_dir}", file=sys.stderr)
        rep = run_report(cfg, run_dir, progress=not a.no_progress, prepared=prepared)
    if a.json:
        return json.dumps(rep.summary(), indent=2)
    lines = [f"scored {len(rep.ids)} architectures with {len(cfg.proxies)} proxies ({rep.failed} failed scores) "
             f"-> {run_dir / 'proxies.csv'}"]
    if rep.correlations:
        lines += ["rank correlation with accuracy:", format_table(rep.correlations), f"plot: {run_dir / 'correlations.png'}"]
    return "\n".join(lines)


def _devices(text: str | None) -> tuple[str, ...]:
    return tuple(d.strip() for d in (text or "").split(",") if d.strip())


def cmd_search(a: argparse.Namespace) -> str | None:
    from nas.runs import locked, new_run_dir
    from nas.search.loop import prepare

    if a.strategy == "asvit":
        return _search_asvit(a)
    if a.strategy == "mpcvit":
        from nas.search import mpcvit

        return mpcvit.cli(a)
    if any(v is not None for v in (a.mu, a.data, a.steps, a.teacher, a.beta_ratio)):
        raise UserError("--mu, --data, --steps, --teacher and --beta-ratio are for --strategy mpcvit")
    devices = _devices(a.device)
    from nas.search.presets import preset_defaults

    defaults = preset_defaults(a.preset) if a.preset else {"budget": SearchConfig.budget, "population": SearchConfig.population}
    cfg = SearchConfig(space=a.space, devices=devices,
                       objectives=a.objectives or default_objectives(a.supernet is not None, bool(devices)),
                       strategy=a.strategy, budget=a.budget if a.budget is not None else defaults["budget"],
                       population=a.population if a.population is not None else defaults["population"], seed=a.seed,
                       max_latency=a.max_latency, max_macs=a.max_macs, max_params=a.max_params, threads=a.threads,
                       min_macs=a.min_macs, preset=a.preset, metrics=tuple(a.metric), constraints=tuple(a.constraint),
                       allow_missing=a.allow_missing,
                       supernet=a.supernet, ray=a.ray, workers=a.workers, gpus_per_worker=a.gpus_per_worker,
                       optuna_storage=a.optuna_storage)
    session = prepare(cfg)  # every input check happens before anything is written
    runner = _start_runner(session)  # so is joining a Ray cluster
    try:
        run_dir = new_run_dir(session.cfg, a.out, session.label)
        with locked(run_dir):
            return _run(session, run_dir, a, runner)
    finally:
        runner.close()


def _search_asvit(a: argparse.Namespace, run_dir: Path | None = None, cfg: SearchConfig | None = None) -> str:
    """As-ViT's two-phase design (seed search, then auto-scaling): not an ask/tell search."""
    from nas.runs import locked, new_run_dir
    from nas.search.asvit import run_asvit
    from nas.spaces import get_space

    if cfg is None and (a.device or a.supernet or a.objectives not in (None, "ntk,length_distortion")):
        raise UserError("--strategy asvit optimises its own two measures (ntk, length_distortion): "
                        "drop --device/--supernet/--objectives")
    space = get_space(cfg.space if cfg is not None else a.space)
    if space.family != "asvit":
        raise UserError(f"--strategy asvit needs an As-ViT space (e.g. asvit), not {space.name!r}")
    if cfg is None:
        steps = a.budget if a.budget is not None else int(space.scaling.get("reinforce_steps", 500))
        path = Path(a.space)
        cfg = SearchConfig(space=str(path.resolve()) if a.space.endswith(".toml") and path.exists() else a.space,
                           objectives="ntk,length_distortion", strategy="asvit", budget=steps, seed=a.seed,
                           threads=a.threads, fingerprints={"space": space.fingerprint}).validate()
    if cfg.fingerprints.get("space", space.fingerprint) != space.fingerprint:
        raise UserError(f"cannot resume: space {space.name!r} changed since the run started (its measurements would "
                        "not mean the same); start a new run")
    from contextlib import nullcontext

    fresh = run_dir is None  # `nas resume` already holds the run's lock
    if fresh:
        run_dir = new_run_dir(cfg, a.out, f"{space.name}-asvit")
    with locked(run_dir) if fresh else nullcontext():
        print(f"run directory: {run_dir}  (if interrupted: nas resume {run_dir})", file=sys.stderr)
        res = run_asvit(space, run_dir, seed=cfg.seed, steps=cfg.budget, threads=cfg.threads, progress=not a.no_progress)
    from nas.run_report import write_report

    report = write_report(run_dir)
    if a.json:
        return json.dumps({**res.summary(), "report": str(report)}, indent=2)
    lines = [f"seed topology: {res.seed_arch}  ({cfg.budget} REINFORCE steps, {res.measured} networks measured "
             f"in {res.seconds:.0f}s)", f"scaled family -> {res.family_csv}"]
    lines += [f"  {r['role']:>8}  {r['arch']:44s} {r['params_m']:8.2f} M params {r['macs_g']:7.2f} GMACs" for r in res.family]
    lines.append(f"report: {report} (figures beside it)")
    return "\n".join(lines)


def cmd_resume(a: argparse.Namespace) -> str | None:
    from nas.runs import locked, write_atomic
    from nas.search.loop import prepare

    if not a.run_dir.is_dir():
        raise UserError(f"{a.run_dir} is not a directory")
    with locked(a.run_dir):
        cfg = SearchConfig.from_toml(a.run_dir / "config.toml")
        if cfg.strategy == "asvit":
            if a.budget is not None:
                raise UserError("an As-ViT run cannot change its number of REINFORCE steps; start a new run")
            return _search_asvit(a, a.run_dir, cfg)
        if cfg.strategy == "mpcvit":
            from nas.search import mpcvit

            return mpcvit.cli(a, a.run_dir, cfg)
        if a.budget is not None:
            log = a.run_dir / "evals.jsonl"
            done = log.read_bytes().count(b"\n") if log.exists() else 0
            if a.budget < done:
                raise UserError(f"--budget {a.budget} is below the {done} evaluations already in {log}")
            cfg = cfg.with_(budget=a.budget)
        where = {"ray": None, "workers": None, "gpus_per_worker": None} if a.no_ray else \
            {k: v for k, v in (("ray", a.ray), ("workers", a.workers), ("gpus_per_worker", a.gpus_per_worker))
             if v is not None}
        cfg = cfg.with_(**where)  # where it runs never changes the result
        session = prepare(cfg)
        runner = _start_runner(session)
        try:
            if a.budget is not None or where:
                write_atomic(a.run_dir / "config.toml", session.cfg.to_toml())
            return _run(session, a.run_dir, a, runner)
        finally:
            runner.close()


def _start_runner(session):
    from nas.search.loop import make_runner

    runner = make_runner(session)
    if session.cfg.ray is not None and not session.evaluator.expensive_columns:
        print("note: --ray is not used: this search has no expensive metric (latency and cost are vectorised "
              "in this process)", file=sys.stderr)
    runner.start()
    return runner


def _run(session, run_dir: Path, a: argparse.Namespace, runner) -> str | None:
    from nas.search.loop import run

    print(f"run directory: {run_dir}  (if interrupted: nas resume {run_dir})", file=sys.stderr)
    fitted = _fitted_notes(session.tables)
    for line in fitted:  # a few-shot device is an estimate: say how good, before and after the run
        print(line, file=sys.stderr)
    result = run(session, run_dir, progress=not a.no_progress, runner=runner)
    if a.json:
        quality = {t.device: t.quality for t in session.tables if t.kind == "fitted"}
        return json.dumps({**result.summary(), **({"fitted_devices": quality} if quality else {})}, indent=2)
    lines = [f"evaluated {result.evaluated} architectures in {result.seconds:.1f}s ({result.failed} failed)",
             f"Pareto front: {result.front} architectures -> {result.pareto_csv}", *fitted]
    if result.report:
        lines.append(f"report: {result.report} (figures beside it)")
    return "\n".join(lines)


def _fitted_notes(tables: list) -> list[str]:
    return [f"device {t.device}: {t.describe()} (cross-validated; not a measured table)"
            for t in tables if t.kind == "fitted"]


def cmd_train(a: argparse.Namespace) -> str | None:
    from contextlib import nullcontext

    from nas.runs import locked, new_run_dir
    from nas.train.checkpoint import find_checkpoint
    from nas.train.trainer import Trainer

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if a.resume is not None:
        if not a.resume.is_dir():
            raise UserError(f"--resume {a.resume} is not a directory")
        out = a.resume
        cfg = TrainConfig.from_toml(out / "config.toml")
        where = {k: v for k, v in (("ray", a.ray), ("workers", a.workers), ("gpus_per_worker", a.gpus_per_worker))
                 if v is not None}
        if cfg.ray is not None or where:
            cfg = dataclasses.replace(cfg, **where).validate()
            check = Trainer(cfg, out, progress=False)  # a wrong space, data or checkpoint fails here, in one line
            if (ckpt := find_checkpoint(out)) is not None:
                check.load(ckpt)
            del check  # the workers load their own
            return _train_ray(cfg, out, a)
        trainer = Trainer(cfg, out, progress=not a.no_progress)
        if (ckpt := find_checkpoint(out)) is not None:
            trainer.load(ckpt)
        else:
            trainer.truncate_logs()  # killed before the first checkpoint: start over
        if rank == 0:
            print(f"resuming {out} at step {trainer.step} of {trainer.total}", file=sys.stderr)
    else:
        if not a.space or not a.data:
            raise UserError("nas train needs --space and --data (or --resume RUN_DIR)")
        if a.steps is None and a.epochs is None:
            raise UserError("give --steps or --epochs")
        if world > 1 and a.out is None:
            raise UserError("under torchrun, give every rank the same --out")
        cfg = TrainConfig(space=a.space, data=a.data, sampler=a.sampler, subnets=a.subnets, steps=a.steps,
                          epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, alpha_div=a.alpha_div,
                          teachers=tuple(a.teacher), ema=a.ema, agc=a.agc, bn_batches=a.bn_batches,
                          accumulate=a.accumulate, heldout=a.heldout,
                          eval_every=a.eval_every, checkpoint_every=a.checkpoint_every, max_bad_steps=a.max_bad_steps,
                          seed=a.seed, threads=a.threads, ray=a.ray, workers=a.workers, gpus_per_worker=a.gpus_per_worker,
                          arch=None if a.arch is None else self_contained(a.arch), retokenize=a.retokenize,
                          patch_mixup=a.patch_mixup)
        if cfg.ray is not None and world > 1:
            raise UserError("--ray starts its own training workers: run it without torchrun")
        trainer = Trainer(cfg, Path("."), progress=not a.no_progress)  # checks everything before writing
        if cfg.ray is not None:
            cfg, label = trainer.cfg, f"train-{trainer.space.name}-{a.data.split(':')[0]}"
            del trainer  # the workers load their own
            return _train_ray(cfg, None, a, label)
        if rank == 0:
            out = new_run_dir(trainer.cfg, a.out, f"train-{trainer.space.name}-{a.data.split(':')[0]}")
            print(f"run directory: {out}  (if interrupted: nas train --resume {out})", file=sys.stderr)
        else:
            out = a.out
        trainer.out = out
    if world > 1:
        import torch.distributed as dist

        dist.barrier()  # rank 0 has created the run directory
    with locked(out) if rank == 0 else nullcontext():
        result = trainer.run()
    if rank != 0:
        return None
    return _train_summary(result, a)


def _train_ray(cfg: TrainConfig, out: Path | None, a: argparse.Namespace, label: str = "") -> str | None:
    """``nas train --ray``: Ray Train workers run the trainer; this process only waits."""
    from nas.runners import connect, disconnect
    from nas.runs import locked, new_run_dir, write_atomic
    from nas.train import distributed

    owned = connect(cfg.ray)
    try:
        cfg = dataclasses.replace(cfg, workers=distributed.workers_for(cfg))  # stored: it changes the result
        if out is None:
            out = new_run_dir(cfg, a.out, label)
            print(f"run directory: {out}  (if interrupted: nas train --resume {out})", file=sys.stderr)
        else:
            write_atomic(out / "config.toml", cfg.to_toml())
            print(f"resuming {out} from its last checkpoint", file=sys.stderr)
        print(f"training on Ray: {cfg.workers} workers of {cfg.threads} CPU{'s' * (cfg.threads > 1)}"
              f"{f' and {cfg.gpus_per_worker:g} GPU' if cfg.gpus_per_worker else ''}", file=sys.stderr)
        with locked(out):
            result = distributed.train(cfg, out)
    finally:
        disconnect(owned)
    return _train_summary(result, a)


def _train_summary(result: dict, a: argparse.Namespace) -> str:
    if a.json:
        return json.dumps(result, indent=2)
    skipped = f" ({result['skipped_steps']} skipped: non-finite loss)" if result["skipped_steps"] else ""
    lines = [f"trained {result['step']}/{result['total']} steps in {result['seconds']:.0f}s{skipped}; "
             f"checkpoint: {result['checkpoint']}"]
    for e in result["evaluation"]:
        lines.append(f"  {e['role']:9s} {e['macs_m']:7.2f} M MACs  {e['resolution']:4d} px  held-out accuracy {100 * e['accuracy']:.2f} %")
    return "\n".join(lines)


def cmd_tune(a: argparse.Namespace) -> str:
    from nas.runs import new_run_dir
    from nas.train import distributed as d
    from nas.train.trainer import Trainer

    sweep = {"lr": d.parse_values("--lr", a.lr, float), "sampler": d.parse_values("--sampler", a.sampler, str)}
    if a.subnets:
        sweep["subnets"] = d.parse_values("--subnets", a.subnets, int)
    base = TrainConfig(space=a.space, data=a.data, steps=a.steps, epochs=a.epochs, batch_size=a.batch_size,
                       heldout=a.heldout, eval_every=a.eval_every, bn_batches=a.bn_batches, seed=a.seed,
                       threads=a.threads, ray=a.ray)
    d.check_sweep(base, sweep, a.search, a.samples)
    first = {k: (v[0] if isinstance(v, list) else v.low) for k, v in sweep.items()}
    trainer = Trainer(dataclasses.replace(base, **first), Path("."), progress=False)  # space and data checks
    out = new_run_dir(_Sweep(base, sweep, a.search, a.samples), a.out,
                      f"tune-{trainer.space.name}-{a.data.split(':')[0]}")
    del trainer
    print(f"sweep directory: {out}", file=sys.stderr)
    rows = d.tune(base, sweep, out, search=a.search, samples=a.samples, gpus_per_trial=a.gpus_per_trial)
    if a.json:
        return json.dumps({"sweep_dir": str(out), "tune_csv": str(out / "tune.csv"), "trials": rows}, indent=2)

    def fmt(v):
        return "-" if v is None else f"{100 * v:6.2f}%"
    lines = [f"{len(rows)} trials -> {out / 'tune.csv'}  (* no other trial is better on both accuracies)",
             f"  {'trial':28s} {'lr':>9s} {'sampler':>10s} {'subnets':>7s} {'smallest':>8s} {'largest':>8s}"]
    for r in rows:
        lines.append(f"{'*' if r['pareto'] else ' '} {r['trial'][:28]:28s} {r['lr']:9.2e} {r['sampler']:>10s} "
                     f"{str(r.get('subnets') or ''):>7s} {fmt(r['accuracy_smallest']):>8s} {fmt(r['accuracy_largest']):>8s}"
                     f"{'  ' + r['error'] if r['error'] else ''}")
    return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _Sweep:
    """What a `nas tune` directory's config.toml records: the base trainer config and the sweep."""
    base: TrainConfig
    sweep: dict
    search: str
    samples: int

    def to_toml(self) -> str:
        import tomli_w

        dims = {k: (v if isinstance(v, list) else {"loguniform": [v.low, v.high]}) for k, v in self.sweep.items()}
        base = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self.base).items()
                if v is not None and k not in self.sweep}
        return "# written by `nas tune`: the trainer settings every trial shares, and the sweep\n" + \
            tomli_w.dumps({**base, "sweep": {"search": self.search, "samples": self.samples, **dims}})


def _si(text: str) -> float:
    """A count with an optional SI suffix: 4.13G, 25.55M, 30k, 1e9."""
    from decimal import Decimal, InvalidOperation

    t = text.strip()
    scale = {"k": 3, "K": 3, "M": 6, "G": 9, "T": 12}.get(t[-1:], 0)
    try:  # decimal, so 1.82G is exactly 1820000000
        return float(Decimal(t[:-1] if scale else t).scaleb(scale))
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"expected a number with an optional k/M/G suffix, got {text!r}") from None


def cmd_latency(a: argparse.Namespace) -> str:
    from nas.latency import device_dirs, load_table, table_path
    from nas.spaces import get_space

    space = get_space(a.space)
    devices = _devices(a.device)
    if not devices:
        devices = tuple(d for d in device_dirs() if _has_table(table_path, d, space))
    tables = [load_table(d, space, check=False) for d in devices]
    if a.archs is not None:
        return _latency_batch(a, space, tables)
    if a.csv:
        raise UserError("--csv is for --archs FILE.csv (one row per architecture); use --json with --arch")
    spec = read_arch_spec(a.arch)
    arch = space.parse_arch(spec)
    import numpy as np

    cost = space.cost(np.asarray([arch.genome]))
    latency = {t.device: float(t.predict(space, np.asarray([arch.genome]))[0]) for t in tables}
    out: dict[str, Any] = {
        "space": space.name,
        "arch": a.arch if isinstance(spec, str) else None,
        "arch_id": arch.id,
        "macs_m": float(cost["macs"][0]) / 1e6,
        "params_m": float(cost["params"][0]) / 1e6,
        **{f"{k.replace('params', 'params_m', 1)}": float(v[0]) / 1e6 for k, v in cost.items() if k.startswith("params_")},
        "latency_ms": latency,
        "table_version": {t.device: t.version for t in tables},
        "decoded": space.decode(arch),
    }
    if a.blocks:
        out["blocks"] = {t.device: t.block_rows(space, arch) for t in tables}
    if a.json:
        return json.dumps(out, indent=2)
    lines = [f"{out['arch'] or arch.id} ({space.name}): {out['macs_m']:.1f} M MACs, {out['params_m']:.2f} M params"]
    lines += [f"  {d:10s} {ms:8.2f} ms   ({out['table_version'][d]})" for d, ms in latency.items()]
    lines += [f"  {n}" for n in _fitted_notes(tables)]
    if a.blocks:
        for d, blocks in out["blocks"].items():
            lines.append(f"  blocks on {d}:")
            lines += [f"    {b['key']:48s} {b['ms']:8.3f}" for b in blocks]
    return "\n".join(lines)


def _latency_batch(a: argparse.Namespace, space, tables: list) -> str:
    """Every architecture of ``--archs``: one vectorised prediction per device."""
    import csv as _csv
    import io

    from nas.latency.network import arch_index, read_keyed_csv

    if a.blocks:
        raise UserError("--blocks lists one architecture's table entries; use it with --arch")
    data = read_keyed_csv(a.archs)
    if data.key != "arch":
        raise UserError(f"{a.archs}:1: needs a column 'arch' (the space's architecture string or JSON encoding)")
    genomes = arch_index(data, space).genomes()  # errors name the file, the line and the architecture
    cost = space.cost(genomes)
    latency = {t.device: t.predict(space, genomes) for t in tables}
    ids = space.ids(genomes)
    texts = [str(t).strip() for t in data.cells["arch"]]
    if a.json:
        rows = [{"space": space.name, "arch": texts[i], "arch_id": ids[i], "macs_m": float(cost["macs"][i]) / 1e6,
                 "params_m": float(cost["params"][i]) / 1e6,
                 **{k.replace("params", "params_m", 1): float(v[i]) / 1e6 for k, v in cost.items() if k.startswith("params_")},
                 "latency_ms": {d: float(v[i]) for d, v in latency.items()},
                 "table_version": {t.device: t.version for t in tables},
                 "decoded": space.decode(space.arch(genomes[i]))} for i in range(data.rows)]
        return json.dumps(rows, indent=2)
    buf = io.StringIO()
    w = _csv.writer(buf, lineterminator="\n")
    w.writerow(["arch", "arch_id", "macs_m", "params_m", *(f"latency_{d}_ms" for d in latency)])
    for i in range(data.rows):
        w.writerow([texts[i], ids[i], f"{cost['macs'][i] / 1e6:.6g}", f"{cost['params'][i] / 1e6:.6g}",
                    *(f"{v[i]:.6g}" for v in latency.values())])
    return buf.getvalue().rstrip("\n") if a.csv else _latency_lines(space, texts, ids, cost, latency, tables)


def _latency_lines(space, texts, ids, cost, latency, tables) -> str:
    lines = [f"{len(ids)} architectures of {space.name}; latency in ms on " + ", ".join(t.device for t in tables)]
    for i in range(len(ids)):
        lines.append(f"  {ids[i]}  {cost['macs'][i] / 1e6:9.1f} M MACs  "
                     + "  ".join(f"{d} {v[i]:8.2f}" for d, v in latency.items()))
    return "\n".join(lines)


def cmd_design(a: argparse.Namespace) -> str:
    from nas.design import write_run
    from nas.design.deepmad import DesignConfig, breakdown, design
    from nas.spaces import get_space

    space = get_space(a.space)
    if space.family != "deepmad":
        raise UserError(f"`nas design` solves DeepMAD programs; space {space.name!r} is of family {space.family!r} "
                        "(use `nas search` for it, or --space deepmad-resnet / deepmad-mobilenet / deepmad-tiny)")
    if a.entropy not in ("code", "paper"):
        raise UserError(f"--entropy must be 'code' or 'paper', got {a.entropy!r}")
    from nas.design.deepmad_objective import Objective

    if a.evaluate:
        arch = space.parse_arch(read_arch_spec(a.evaluate))
        out = breakdown(space, arch.genome, Objective(a.entropy, a.corrected))
        return json.dumps(out, indent=2) if a.json else _format_breakdown(out, f"{a.evaluate} ({space.name})")
    if a.max_flops is None or a.max_params is None:
        raise UserError("nas design needs --max-flops and --max-params (or --evaluate ARCH)")
    cfg = DesignConfig(space=a.space, max_flops=a.max_flops, max_params=a.max_params, rho=a.rho, max_layers=a.max_layers,
                       solver=a.solver, seed=a.seed, entropy=a.entropy, corrected=a.corrected, popsize=a.popsize, restarts=a.restarts,
                       maxiter=a.maxiter, population=a.population, iterations=a.iterations, time_limit=a.time_limit,
                       fingerprint=space.fingerprint).validate()
    from nas.design.deepmad import check_budgets

    check_budgets(space, cfg.budgets(space))  # an infeasible budget fails here, before anything is written
    bar = None
    if not a.no_progress:
        from tqdm import tqdm

        total = None if cfg.solver == "mp" else cfg.iterations  # mp stops when it converges: no known total
        bar = tqdm(total=total, unit="gen" if cfg.solver == "mp" else "child", desc=f"design ({cfg.solver})",
                   dynamic_ncols=True, file=sys.stderr, mininterval=0.5)

    def progress(done: int, best: float) -> None:
        bar.set_postfix(best=f"{best:.1f}", refresh=False)
        bar.update(done - bar.n)

    try:
        result = design(space, cfg, progress if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    from nas.runs import new_run_dir

    run_dir = new_run_dir(cfg, a.out, f"{space.name}-design")
    write_run(run_dir, space, result)
    from nas.run_report import write_report

    report = write_report(run_dir)
    best = {k: result.summary[k] for k in ("score", "entropy", "penalty", "rho", "rho_per_stage", "flops", "params",
                                           "params_with_fc", "layers", "solve_s", "structure")}
    if a.json:
        return json.dumps(best, indent=2)
    return "\n".join([f"run directory: {run_dir}",
                      _format_breakdown(best, f"designed by {cfg.solver} in {best['solve_s']:.1f}s "
                                              f"({result.summary['evaluated']} structures scored)"),
                      f"structure: {run_dir / 'structure.json'}", f"report: {report} (figures beside it)"])


def _format_breakdown(b: dict, title: str) -> str:
    lines = [title,
             f"  score {b['score']:.1f} = entropy {b['entropy']:.1f} - depth penalty {b['penalty']:.1f}",
             f"  rho {b['rho']:.4f} (per stage {', '.join(f'{r:.3f}' for r in b['rho_per_stage'])})",
             f"  {b['flops'] / 1e9:.4f} GFLOPs, {b['params'] / 1e6:.3f} M params ({b['params_with_fc'] / 1e6:.3f} M with "
             f"the classifier), {b['layers']} layers"]
    for blk in b["structure"]:
        extra = f" L {blk['L']:2d} btn {blk['btn']:4d}" if "L" in blk else ""
        lines.append(f"    {blk['class']:17s} {blk['in']:4d} -> {blk['out']:4d}  s{blk['s']} k{blk['k']}{extra}")
    return "\n".join(lines)


def _has_table(table_path, device: str, space) -> bool:
    try:
        table_path(device, space)
        return True
    except UserError:
        return False


_EXPORT_FORMATS = ("torch", "onnx", "all")  # nas.export.FORMATS, known here without importing torch


def cmd_export(a: argparse.Namespace) -> str:
    from nas.runs import claim_dir, find_arch

    if a.format not in _EXPORT_FORMATS:
        from nas.registry import did_you_mean

        raise did_you_mean(a.format, _EXPORT_FORMATS, "--format")
    cfg, space, genome, arch_id = find_arch(a.run_dir, a.point, a.arch_id)  # bad input fails before torch loads
    out = a.out or a.run_dir / "exports" / (arch_id + ("" if a.format == "all" else f"-{a.format}"))
    tmp = claim_dir(out)
    try:
        from nas.export import Source, export, summary, trained_run

        src = Source(a.run_dir, space, genome, arch_id, a.point, cfg.get("supernet"), int(cfg.get("seed", 0)), a.threads,
                     trained_run(a.run_dir, space, arch_id))
    except BaseException:
        tmp.rmdir()
        raise
    rec = export(src, out, a.format, tmp)
    if a.json:
        return json.dumps(rec, indent=2)
    text = summary(rec)
    if not rec["parity_ok"]:
        print(text)
        raise SystemExit(1)
    return text


def cmd_report(a: argparse.Namespace) -> str:
    from nas.run_report import write_report

    path = write_report(a.run_dir)
    return json.dumps({"report": str(path)}) if a.json else f"report: {path} (figures beside it)"


def cmd_evals(a: argparse.Namespace) -> str:
    from nas.evals_export import FORMATS, write_evals

    if a.format not in FORMATS:
        from nas.registry import did_you_mean

        raise did_you_mean(a.format, FORMATS, "--format")
    out = a.out or a.run_dir / f"evals.{a.format}"
    n = write_evals(a.run_dir, out, a.format)
    return json.dumps({"path": str(out), "rows": n}) if a.json else f"{n} evaluations -> {out}"


def cmd_spaces(a: argparse.Namespace) -> str:
    from nas.spaces import get_space, space_files

    rows = []
    for name in space_files():
        s = get_space(name)
        d = s.describe()
        d["size"] = s.size() if hasattr(s, "size") else None
        rows.append(d)
    if a.json:
        return json.dumps(rows, indent=2)
    out = []
    for d in rows:
        out.append(f"{d['name']:16s} {d['family']:12s} {d['size']:.2e} archs, {d['genes']} genes, "
                   f"{d['search_vars']} search vars  {d['description']}")
        if d["presets"]:
            out.append(f"{'':16s} presets: {', '.join(d['presets'])}")
        if d.get("references"):  # fixed networks outside the searched choices (vit-resnas)
            out.append(f"{'':16s} reference networks: {', '.join(d['references'])}")
    return "\n".join(out)


def cmd_devices(a: argparse.Namespace) -> str:
    from nas.latency import device_dirs
    from nas.latency.table import load_any

    rows = []
    for device, folder in device_dirs().items():
        for meta in sorted(folder.glob("*.toml")):
            t = load_any(meta)
            prov = t.meta.get("provenance", {})
            rows.append({"device": device, "kind": t.kind, "family": t.family,
                         **({"space": t.space_name} if t.kind in ("network", "fitted") else {}),
                         "description": t.meta.get("description", ""),
                         "entries": t.entries, "version": t.version, "grid_rounding": t.grid_rounding,
                         "source": prov.get("source", ""), "licence": prov.get("licence", ""), "path": str(meta)})
    if a.json:
        return json.dumps(rows, indent=2)
    unit = {"mpc": "ops", "network": "archs", "fitted": "meas."}
    return "\n".join(f"{r['device']:24s} {r['kind']:7s} {r.get('space', r['family']):12s} {r['entries']:6d} "
                     f"{unit.get(r['kind'], 'blocks'):6s} {r['description']}\n"
                     f"{'':24s} {r['version']}  licence: {r['licence']}" for r in rows)


def cmd_lut(a: argparse.Namespace) -> str:
    return {"build": cmd_lut_build, "validate": cmd_lut_validate, "spu-calibrate": cmd_lut_spu, "fit": cmd_lut_fit,
            "sample": cmd_lut_sample}[a.lut_command](a)


def cmd_lut_sample(a: argparse.Namespace) -> str:
    from nas.latency.measure import Protocol
    from nas.latency.sample import sample_networks
    from nas.spaces import get_space

    space = get_space(a.space)
    protocol = Protocol(threads=a.threads, warmup=a.warmup, repeats=a.repeats, min_sample_ms=a.min_sample_ms,
                        retries=a.retries, batch=a.batch, passes=a.passes)
    options = None
    if a.device == "android":
        options = {"serial": a.adb_serial, "runtime": a.android_runtime, "binary": a.android_binary,
                   "taskset": a.taskset or None, "convert": a.convert}
    r = sample_networks(space, a.device, protocol, a.n, a.out, seed=a.seed, progress=not a.no_progress,
                        device_options=options)
    if a.json:
        return json.dumps(r, indent=2)
    return (f"{r['out']}: {r['n']} whole networks measured on {a.device}, {r['min_ms']:.2f}-{r['max_ms']:.2f} ms\n"
            f"fit a device from them: nas lut fit --space {space.name} --measured {r['out']}")


def cmd_lut_fit(a: argparse.Namespace) -> str:
    from nas.latency.fewshot import fit_device
    from nas.spaces import get_space

    space = get_space(a.space)
    r = fit_device(space, a.measured, name=a.name, out=a.out, method=a.method, seed=a.seed)
    if a.json:
        from nas.latency.validate import _finite

        return json.dumps(_finite(r), indent=2)  # a Spearman of constant latencies is null, not NaN
    lines = [f"{r['table']}: device {r['device']} fitted ({r['method']}) from {r['n']} measured networks",
             f"{'method':8s} {'CV MAPE':>8s} {'±10%':>6s} {'rho':>6s}"]
    for m, s in r["cv"].items():
        lines.append(f"{m:8s} {s['mape_pct']:7.2f}% {100 * s['within_10pct']:5.1f}% {s['spearman']:6.3f}"
                     + ("   <- kept" if m == r["method"] else ""))
    if r["references"]:
        lines.append(f"reads the shipped devices {', '.join(r['references'])}")
    lines.append(f"use it: --device {Path(r['table']).parent}" + ("" if a.out else f"   (or --device {r['device']})"))
    return "\n".join(lines)


def cmd_lut_spu(a: argparse.Namespace) -> str:
    from nas.latency.spu_calibration import calibrate

    r = calibrate(a.spu_python, a.out, probe_output=a.from_output)
    if a.json:
        return json.dumps(r, indent=2)
    lines = [f"{r['table']}: {len(r['rows'])} operators from spu {r['spu']} SEMI2K (heads batched per layer below)",
             f"{'model':>14} {'sim actions':>12} {'model rounds':>13} {'sim MiB':>8} {'model MiB':>10} {'bytes':>7}"]
    for m in r["models"]:
        lines.append(f"{m['model']:>14} {m['sim_actions']:>12} {m['model_rounds']:>13.0f} {m['sim_mib']:>8.1f} "
                     f"{m['model_mib']:>10.1f} {100 * (m['model_mib'] / m['sim_mib'] - 1):>+6.1f}%")
    return "\n".join(lines)


def cmd_lut_build(a: argparse.Namespace) -> str:
    from nas.latency.build import build_table
    from nas.latency.measure import Protocol
    from nas.spaces import get_space

    space = get_space(a.space)
    protocol = Protocol(threads=a.threads, warmup=a.warmup, repeats=a.repeats, min_sample_ms=a.min_sample_ms,
                        max_spread=a.max_spread, retries=a.retries, batch=a.batch, passes=a.passes,
                        context=not a.no_context)
    if a.max_blocks is not None and a.max_blocks < 1:
        raise UserError(f"--max-blocks must be positive, got {a.max_blocks}")
    options = None
    if a.device == "android":
        options = {"serial": a.adb_serial, "runtime": a.android_runtime, "binary": a.android_binary,
                   "taskset": a.taskset or None, "convert": a.convert}
    r = build_table(space, a.device, protocol, out=a.out, max_blocks=a.max_blocks, fresh=a.fresh,
                    progress=not a.no_progress, device_options=options, name=a.name)
    out = {"table": str(r.table), "measured": r.measured, "fitted": r.fitted, "measured_now": r.new,
           "seconds": round(r.seconds, 1)}
    if a.json:
        return json.dumps(out, indent=2)
    fitted = f", {r.fitted} fitted" if r.fitted else ""
    return (f"{r.table}: {r.measured} blocks measured{fitted}; {r.new} measurements taken now "
            f"({protocol.passes} passes) in {r.seconds:.0f} s\n"
            f"use it: --device {r.table.parent}   (or `nas lut validate --space {space.name} --device {r.table.parent}`)")


def cmd_lut_validate(a: argparse.Namespace) -> str:
    import datetime as _dt
    import secrets

    from nas.latency import load_table
    from nas.latency.validate import validate
    from nas.spaces import get_space

    space = get_space(a.space)
    table = load_table(a.device, space)
    out = a.out or Path("runs") / f"{_dt.date.today():%Y%m%d}-lut-validate-{space.name}-{table.device}-{secrets.token_hex(3)}"
    r = validate(space, table, out, n=a.n, calibrate=a.calibrate, seed=a.seed, save=not a.no_save,
                 progress=not a.no_progress, passes=a.passes)
    if a.json:
        return json.dumps(r, indent=2)
    lines = [f"{space.name} on {r['device']} ({r['table']}): {r['evaluated']} subnets evaluated, "
             f"{r['calibrate']} used to fit the correction; measured {r['measured_ms']['min']:.2f}-"
             f"{r['measured_ms']['max']:.2f} ms",
             f"{'':8s} {'MAPE':>7s} {'±10%':>6s} {'±5%':>6s} {'bias':>7s} {'tau':>6s} {'rho':>6s}"]
    for what in ("before", "after"):
        m = r[what]
        lines.append(f"{what:8s} {m['mape_pct']:6.2f}% {100 * m['within_10pct']:5.1f}% {100 * m['within_5pct']:5.1f}% "
                     f"{m['bias_pct']:+6.2f}% {m['kendall_tau']:6.3f} {m['spearman']:6.3f}")
    c = r["correction"]
    lines.append(f"correction: {c['scale']:.4f} x block sum {c['per_block_ms']:+.5f} ms/block {c['offset_ms']:+.4f} ms"
                 + ("" if a.no_save else f"  (saved in {table.path})"))
    lines.append(f"report: {r['out']}/validation.csv, validation.png")
    return "\n".join(lines)


def cmd_convert_checkpoint(a: argparse.Namespace) -> str:
    from nas.train.checkpoint import convert_legacy

    return f"wrote {convert_legacy(a.path)}"


def cmd_import_weights(a: argparse.Namespace) -> str:
    from nas.elastic.elasticvit_original import import_weights
    from nas.spaces import get_space

    space = get_space(a.space)
    if a.data is not None:  # fail now, not at search time: the spec loads and its classes fit the head
        from nas.data import load_data

        if load_data(a.data, heldout=a.heldout, seed=0).num_classes != space.num_classes:
            raise UserError(f"--data {a.data} does not have the {space.num_classes} classes of space {space.name!r}")
    out = import_weights(Path(a.ckpt), space, a.out, data=a.data, heldout=a.heldout, allow_missing=a.allow_missing)
    if a.json:
        return json.dumps(out, indent=2)
    kept = f" ({out['missing']} at their initial values)" if out["missing"] else ""
    data = out["data"] or "none (give --data to search with it)"
    return f"wrote {out['out']}: {out['tensors']} tensors of space {out['space']}{kept}; data {data}"


COMMANDS = {"convert-checkpoint": cmd_convert_checkpoint, "import-weights": cmd_import_weights, "search": cmd_search, "resume": cmd_resume, "train": cmd_train, "tune": cmd_tune, "latency": cmd_latency,
            "spaces": cmd_spaces, "devices": cmd_devices, "proxies": cmd_proxies, "lut": cmd_lut, "design": cmd_design,
            "export": cmd_export, "report": cmd_report, "evals": cmd_evals}

if __name__ == "__main__":
    main()

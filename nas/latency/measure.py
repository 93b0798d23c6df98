"""The measurement protocol and the runtimes it times (torch eager on CPU or CUDA, ONNX Runtime).

One protocol for blocks and for whole networks, so their numbers are comparable:

1. pin the runtime's threads (``threads``; one by default: the least noisy, and what phone tables
   use) and disable Python's garbage collector while timing;
2. warm up for ``warmup`` calls and at least ``warmup_ms``;
3. calibrate ``inner``, the number of calls per sample, so one sample lasts at least
   ``min_sample_ms`` (the timer's resolution and the loop's cost vanish);
   *in context* (blocks, when ``context`` is on): every timed call is preceded by an untimed call
   of other blocks of the space, and only the block's own calls are timed. A block timed in a tight
   loop of itself runs with hot instruction and data caches and a warm dispatcher; inside a network
   it follows other work, and on a CPU in eager mode that costs small blocks 10-30 % more (measured
   on elasticvit-tiny: an FFN block 20.4 us in a loop, 23.7 us after another block);
4. take ``repeats`` samples; reject outliers outside the Tukey fences (1.5 IQR beyond the
   quartiles) - preemptions and page faults only ever add time;
5. report the median of the kept samples and their spread (IQR / median). When the spread exceeds
   ``max_spread`` the block is measured again, up to ``retries`` times, and the quietest attempt
   is kept;
6. do all of it ``passes`` times, each pass over every block (or network) in turn and in the
   opposite order of the previous pass, and keep the median over passes (``combine_passes``). A
   shared or virtual machine has slow spells lasting seconds (seen here: 25 consecutive networks
   1.7x slower, then normal again); a spell hits a block in one pass, not in most. The median, not
   the quickest pass: on 100 elasticvit-tiny networks measured in 6 passes, block sums ranked the
   per-network median at Kendall tau 0.949 and the per-network minimum at 0.892 (the quickest
   pass is itself a noisy extreme).
"""
from __future__ import annotations

import gc
import os
import platform
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np

from nas.errors import UserError


@dataclass(frozen=True)
class Protocol:
    threads: int = 1
    warmup: int = 10
    warmup_ms: float = 50.0
    repeats: int = 20
    min_sample_ms: float = 2.0
    max_spread: float = 0.05
    retries: int = 2
    batch: int = 1
    context: bool = True
    passes: int = 3

    def __post_init__(self):
        for name in ("threads", "repeats", "batch", "passes"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.repeats < 5:
            raise UserError(f"--repeats must be at least 5 (outlier rejection needs quartiles), got {self.repeats}")
        if self.warmup < 0 or self.retries < 0 or self.min_sample_ms < 0 or self.max_spread <= 0:
            raise UserError("--warmup, --retries and --min-sample-ms must be >= 0 and --max-spread > 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Measurement:
    median_ms: float
    spread: float  # IQR / median of the kept samples
    kept: int
    taken: int
    inner: int  # calls per sample

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_samples(fn: Callable[[], Any], p: Protocol, sync: Callable[[], None] = lambda: None,
                 before: Callable[[], Any] | None = None) -> Measurement:
    """Steps 2-5 of the protocol for one callable (already built and loaded); ``before``, when
    given, runs untimed before every timed call (the context)."""
    best: Measurement | None = None
    gc_was = gc.isenabled()
    gc.disable()
    try:
        inner = _warm_up(fn, p, sync)
        for _ in range(p.retries + 1):
            samples = []
            for _ in range(p.repeats):
                if before is None:
                    t0 = time.perf_counter_ns()
                    for _ in range(inner):
                        fn()
                    sync()
                    elapsed = time.perf_counter_ns() - t0
                else:
                    elapsed = 0
                    for _ in range(inner):
                        before()
                        sync()
                        t0 = time.perf_counter_ns()
                        fn()
                        sync()
                        elapsed += time.perf_counter_ns() - t0
                samples.append(elapsed / 1e6 / inner)
            m = summarise(samples, inner)
            if best is None or m.spread < best.spread:
                best = m
            if m.spread <= p.max_spread:
                break
    finally:
        if gc_was:
            gc.enable()
    return best


def _warm_up(fn: Callable[[], Any], p: Protocol, sync: Callable[[], None]) -> int:
    t0 = time.perf_counter()
    calls = 0
    while calls < max(p.warmup, 1) or (time.perf_counter() - t0) * 1e3 < p.warmup_ms:
        fn()
        calls += 1
    sync()
    per_call_ms = (time.perf_counter() - t0) * 1e3 / calls
    return max(1, int(np.ceil(p.min_sample_ms / max(per_call_ms, 1e-6))))


def combine_passes(records: list[dict]) -> dict:
    """One block's (or network's) measurements from several passes -> the median pass's figures:
    ``median_ms`` is the median over passes, the other fields those of the pass nearest to it."""
    ms = np.array([r["median_ms"] for r in records])
    med = float(np.median(ms))
    nearest = records[int(np.argmin(np.abs(ms - med)))]
    return {**nearest, "median_ms": med, "passes": len(records)}


def summarise(samples: list[float], inner: int = 1) -> Measurement:
    """Median and relative IQR of the samples inside the Tukey fences."""
    x = np.asarray(samples, dtype=float)
    q1, q3 = np.percentile(x, [25, 75])
    iqr = q3 - q1
    kept = x[(x >= q1 - 1.5 * iqr) & (x <= q3 + 1.5 * iqr)]
    med = float(np.median(kept))
    k1, k3 = np.percentile(kept, [25, 75])
    return Measurement(med, float((k3 - k1) / med) if med > 0 else 0.0, int(kept.size), int(x.size), inner)


# ---- runtimes --------------------------------------------------------------------------------
class Runtime:
    """Loads a torch module onto a device and returns the zero-argument callable the protocol times."""

    name: str
    label: str = ""

    def __init__(self, protocol: Protocol):
        self.protocol = protocol
        self._context_for: list | None = None
        self._context_fns: list = []

    def load(self, module, example) -> Callable[[], Any]:
        raise NotImplementedError

    def sync(self) -> None:
        pass

    def measure(self, module, example, context: list | None = None) -> Measurement:
        """Time ``module`` on ``example``; ``context`` is a list of (module, example) run before
        every timed call (see the protocol), ignored unless the protocol has ``context`` on."""
        fn = self.load(module, example)
        before = None
        if context and self.protocol.context:
            if self._context_for is not context:  # load once per build, not once per block
                self._context_fns, self._context_for = [self.load(m, x) for m, x in context], context
            others = self._context_fns

            def run_context():
                for f in others:
                    f()
            before = run_context
        return time_samples(fn, self.protocol, self.sync, before)

    def environment(self) -> dict[str, Any]:
        import torch

        return {"runtime": self.name, "label": self.label or self.name, "cpu": cpu_model(), "cores": os.cpu_count(), "threads": self.protocol.threads,
                "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                "os": f"{platform.system()} {platform.release()}", "machine": platform.machine()}


class TorchCPU(Runtime):
    name = "local-cpu"
    label = "torch eager"

    def __init__(self, protocol: Protocol):
        super().__init__(protocol)
        import torch

        torch.set_num_threads(protocol.threads)
        self._torch = torch

    def load(self, module, example):
        torch = self._torch
        module = module.eval()

        def run():
            with torch.inference_mode():
                return module(example)
        return run

    def environment(self) -> dict[str, Any]:
        env = super().environment()
        env["mkldnn"] = bool(self._torch.backends.mkldnn.is_available())
        return env


class TorchCUDA(Runtime):
    name = "local-cuda"
    label = "torch eager (CUDA)"

    def __init__(self, protocol: Protocol):
        super().__init__(protocol)
        import torch

        if not torch.cuda.is_available():
            raise UserError("device 'local-cuda': torch sees no CUDA device on this machine "
                            "(use --device local-cpu or onnxruntime-cpu)")
        torch.backends.cudnn.benchmark = False  # deterministic algorithm choice across runs
        self._torch = torch

    def load(self, module, example):
        torch = self._torch
        module = module.eval().cuda()
        x = example.cuda()

        def run():
            with torch.inference_mode():
                return module(x)
        return run

    def sync(self) -> None:
        self._torch.cuda.synchronize()

    def environment(self) -> dict[str, Any]:
        env = super().environment()
        torch = self._torch
        env.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        return env


class ONNXRuntimeCPU(Runtime):
    """Each module is exported to ONNX (TorchScript exporter, opset 17; the dynamo exporter takes
    seconds per block) and run by an ORT CPU session with pinned intra-op threads, one inter-op
    thread, sequential execution and all graph optimisations."""

    name = "onnxruntime-cpu"
    label = "ONNX Runtime (CPU provider)"

    def __init__(self, protocol: Protocol):
        super().__init__(protocol)
        try:
            import onnxruntime as ort
        except ImportError:
            raise UserError("device 'onnxruntime-cpu' needs onnxruntime: pip install 'vitnas[onnx]'") from None
        self._ort = ort

    def session(self, module, example):
        import io

        buf = io.BytesIO()
        onnx_export(module, example, buf)
        so = self._ort.SessionOptions()
        so.intra_op_num_threads = self.protocol.threads
        so.inter_op_num_threads = 1
        so.execution_mode = self._ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return self._ort.InferenceSession(buf.getvalue(), so, providers=["CPUExecutionProvider"])

    def load(self, module, example):
        sess = self.session(module, example)
        feed = {"x": example.numpy()}
        return lambda: sess.run(None, feed)

    def environment(self) -> dict[str, Any]:
        env = super().environment()
        env["onnxruntime"] = self._ort.__version__
        return env


ONNX_OPSET = 17


def onnx_export(module, example, f, dynamic_batch: bool = False) -> None:
    """The one ONNX export of vitnas (latency tables, phones, `nas export`): the TorchScript
    exporter (the dynamo exporter takes seconds per block), opset 17, input ``x``, output ``y``;
    ``dynamic_batch`` leaves dimension 0 of both free."""
    import warnings

    import torch

    axes = {"x": {0: "batch"}, "y": {0: "batch"}} if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(module.eval(), (example,), f, dynamo=False, opset_version=ONNX_OPSET,
                          input_names=["x"], output_names=["y"], dynamic_axes=axes)


RUNTIMES: dict[str, type[Runtime]] = {r.name: r for r in (TorchCPU, ONNXRuntimeCPU, TorchCUDA)}
DEVICES = (*RUNTIMES, "android")
# what measurements depend on beyond the protocol: a build resumes, and a table is validated,
# only where these match (the rest of the environment, such as the date, may differ)
PINNED_ENV = ("runtime", "cpu", "threads", "torch", "onnxruntime", "gpu", "cuda")  # what `nas lut build` measures on


def runtime(device: str, protocol: Protocol, **options: Any) -> Runtime:
    """The runtime for a device name; ``options`` go to the Android runtime (serial, binary, ...)."""
    if device == "android":
        from nas.latency.android import AndroidRuntime

        return AndroidRuntime(protocol, **options)
    if device not in RUNTIMES:
        from nas.registry import did_you_mean

        raise did_you_mean(device, DEVICES, "device to measure on")
    return RUNTIMES[device](protocol)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def today() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

"""`nas lut build --device android`: time blocks on a phone over adb (docs/latency-android.md).

Per block: export the module to ONNX exactly as ``ONNXRuntimeCPU`` does (optionally convert it to
TFLite with the user's converter), ``adb push`` it, run the phone's benchmark binary once to
calibrate and then ``protocol.repeats`` times, take each invocation's average per-inference time as one sample,
then summarise with the same Tukey-fence median as the local runtimes (``measure.summarise``).
The model is removed from the phone afterwards.

The parsers are pure functions so they can be tested on recorded output
(tests/data/android/README.md lists where each recording comes from).
"""
from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.latency.measure import Measurement, Protocol, Runtime, summarise

BINARIES = {"onnxruntime": "/data/local/tmp/onnxruntime_perf_test", "tflite": "/data/local/tmp/benchmark_model"}
_NUMBER = r"([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)"  # ostream prints large averages as 2.95034e+06


# ---- parsers -----------------------------------------------------------------------------------
def parse_benchmark_model(text: str) -> float:
    """Average milliseconds per inference of one TFLite ``benchmark_model`` invocation.

    TF 2.x builds end with ``Inference timings in us: Init: .., First inference: .., Warmup (avg):
    .., Inference (avg): X`` in microseconds (BenchmarkLoggingListener in
    tensorflow/lite/tools/benchmark/benchmark_model.cc). Every build also prints one
    ``count=N first=.. curr=.. min=.. max=.. avg=X std=..`` line (microseconds) per phase, warm-up
    first and the timed runs last (BenchmarkModel::Run); that is the fallback for old builds, whose
    summary reads ``Average inference timings in us: Warmup: .., Init: .., no stats: X``, and for
    LiteRT's benchmark_model, whose summary ``Inference (avg): 0.95 ms`` is in milliseconds and
    rounded. A one-run phase prints ``count=1 curr=X`` without an average."""
    m = re.search(r"Inference timings in us:.*Inference \(avg\):\s*" + _NUMBER, text)
    if m:
        return float(m.group(1)) / 1e3
    # "^(INFO: )?count=": skips the op profiler's "Timings (microseconds): count=..." lines
    phases = re.findall(r"^(?:INFO: )?(count=\d+ .*)$", text, re.M)
    if len(phases) >= 2:  # warm-up, then timed runs; a lone line is a warm-up that then failed
        m = re.search(r"\bavg=" + _NUMBER, phases[-1]) or re.search(r"^count=1 curr=" + _NUMBER, phases[-1])
        if m:
            return float(m.group(1)) / 1e3
    raise ValueError("no 'Inference timings in us' line and no timed 'count=... avg=...' line")


def parse_perf_test(text: str) -> float:
    """Average milliseconds per inference of one ``onnxruntime_perf_test`` invocation.

    onnxruntime/test/perftest/performance_runner.cc prints ``Average inference time cost: X ms``,
    in newer releases ``Average inference time cost total: X ms``, and before microsoft/onnxruntime
    PR #2798 (January 2020) ``Average time cost:X ms``; each is the timed runs' total time over
    their count, in ms. The one untimed warm-up run is reported apart ("First inference time cost")."""
    m = re.search(r"Average (?:inference )?time cost(?: total)?:\s*" + _NUMBER + r"\s*ms", text)
    if m:
        return float(m.group(1))
    raise ValueError("no 'Average inference time cost' line")


# The phone cannot start the binary: mksh says "/system/bin/sh: /data/local/tmp/x: not found" (or
# "can't execute: Permission denied"); under taskset, toybox says "taskset: exec /data/local/tmp/x:
# No such file or directory" and exits 127.
_CANNOT_RUN = re.compile(r"^(?:/system/bin/sh|taskset): .*(not found|No such file or directory|can't execute"
                         r"|not executable|Permission denied)", re.M)
_TROUBLE = re.compile(r"error|fail|abort|not found|denied|invalid|unknown|unrecognized|cannot|can't|unable", re.I)


def offending_line(text: str) -> str:
    """The output line that best explains a failure: the first that sounds like an error, else the last."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if _TROUBLE.search(ln):
            return ln
    return lines[-1] if lines else "(no output)"


# ---- runtime -----------------------------------------------------------------------------------
class AndroidRuntime(Runtime):
    """A phone reached by adb, timed by TFLite's benchmark_model or ONNX Runtime's perf test."""

    name = "android"

    def __init__(self, protocol: Protocol, serial: str | None = None, runtime: str = "onnxruntime",
                 binary: str | None = None, taskset: str | None = "70", adb: str = "adb",
                 convert: str | None = None, workdir: str = "/data/local/tmp/vitnas"):
        super().__init__(protocol)
        if runtime not in BINARIES:
            raise UserError(f"--android-runtime must be onnxruntime or tflite, got {runtime!r}")
        if runtime == "tflite" and not convert:
            raise UserError("--android-runtime tflite needs --convert, a command that turns {onnx} into a .tflite "
                            "in {outdir} (e.g. \"onnx2tf -i {onnx} -o {outdir}\"); vitnas ships no converter")
        if convert and ("{onnx}" not in convert or "{outdir}" not in convert):
            raise UserError(f"--convert must contain {{onnx}} and {{outdir}}, got {convert!r}")
        if taskset:
            try:
                mask = int(taskset, 16)
            except ValueError:
                mask = 0
            cores = bin(mask).count("1") if mask > 0 else 0
            if cores == 0:
                raise UserError(f"--taskset must be a non-zero hexadecimal CPU mask such as 70, got {taskset!r}")
            if protocol.threads > cores:  # more threads than allowed cores only time-slices them
                raise UserError(f"--threads {protocol.threads} exceeds the {cores} core(s) of --taskset {taskset}")
        found = shutil.which(adb)
        if found is None:
            raise UserError(f"adb not found ({adb!r} is not an executable on PATH): install Android SDK "
                            f"platform-tools (`nas lut build --help` lists the Android flags)")
        self.adb = found
        self.serial = serial
        self.runtime = runtime
        self.binary = binary or BINARIES[runtime]
        self.taskset = taskset or None
        self.convert = convert
        self.workdir = workdir.rstrip("/")
        self._props: dict[str, str] | None = None
        self._workdir_made = False

    # -- adb ------------------------------------------------------------------------------------
    def _cmd(self, *args: str) -> list[str]:
        return [self.adb, *(["-s", self.serial] if self.serial else []), *args]

    def _run(self, *args: str, check: bool = True) -> tuple[str, int, str]:
        """Run adb; returns (output, exit status, the command as shown in errors)."""
        cmd = self._cmd(*args)
        shown = shlex.join(cmd)
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as e:
            raise UserError(f"cannot run `{shown}`: {e.strerror}") from None
        out = r.stdout.replace("\r\n", "\n")  # old adb shells run in a pty that writes CRLF
        if check and r.returncode != 0:
            raise UserError(f"`{shown}` failed (exit {r.returncode}): {offending_line(out)}")
        return out, r.returncode, shown

    def _shell(self, command: str, check: bool = True) -> tuple[str, int, str]:
        # one string: adb joins its arguments with spaces for the phone's sh anyway
        return self._run("shell", command, check=check)

    def _prop(self, key: str) -> str:
        return self._shell(f"getprop {key}")[0].strip()

    def properties(self) -> dict[str, str]:
        if self._props is None:
            keys = ("ro.product.model", "ro.soc.model", "ro.board.platform", "ro.build.version.release")
            self._props = {k: self._prop(k) for k in keys}
        return self._props

    # -- protocol -------------------------------------------------------------------------------
    def benchmark_command(self, remote_model: str, runs: int) -> str:
        """The phone-side command for one invocation: ``runs`` timed inferences after the warm-ups."""
        p = self.protocol
        q = shlex.quote
        if self.runtime == "tflite":
            # flags: tensorflow/lite/tools/benchmark/benchmark_model.cc (DefaultParams) and the
            # tool's README. min_secs defaults to 1 s and warmup_min_secs to 0.5 s, which would add
            # runs beyond num_runs / warmup_runs: set both so an invocation runs exactly what the
            # protocol asks (>= warmup runs and >= warmup_ms of warm-up, then `runs` timed runs).
            # XNNPACK is explicit because its default changed across TFLite versions.
            args = [q(self.binary), f"--graph={q(remote_model)}", f"--num_threads={p.threads}",
                    f"--warmup_runs={max(p.warmup, 1)}", f"--warmup_min_secs={p.warmup_ms / 1e3:g}",
                    f"--num_runs={runs}", "--min_secs=0", "--use_xnnpack=true"]
        else:
            # flags: onnxruntime/test/perftest/command_args_parser.cc. -m times -r N: N timed runs;
            # -x: intra-op threads; -o 99: all graph optimisations (as ONNXRuntimeCPU); -I: random
            # inputs instead of a test_data_set folder. The tool always does exactly one untimed
            # warm-up run per invocation (PerformanceRunner::Run) and has no flag to change it.
            args = [q(self.binary), "-e", "cpu", "-m", "times", "-r", str(runs), "-x", str(p.threads),
                    "-o", "99", "-I", q(remote_model)]
        prefix = f"taskset {self.taskset} " if self.taskset else ""  # toybox taskset: hex mask, then command
        return prefix + " ".join(args)

    def _invoke(self, remote_model: str, runs: int) -> float:
        out, status, shown = self._shell(self.benchmark_command(remote_model, runs), check=False)
        m = _CANNOT_RUN.search(out)
        if m:
            raise UserError(f"the benchmark binary {self.binary} cannot run on the phone (`{shown}` printed "
                            f"{m.group(0).strip()!r}): push it there (see the Android flags of `nas lut build --help`) "
                            f"or pass --android-binary")
        parse = parse_benchmark_model if self.runtime == "tflite" else parse_perf_test
        try:
            ms = parse(out)
        except ValueError as e:
            raise UserError(f"`{shown}` (exit {status}) printed no average inference time ({e}): "
                            f"{offending_line(out)!r}") from None
        if status != 0:
            raise UserError(f"`{shown}` failed (exit {status}): {offending_line(out)}")
        return ms

    def measure(self, module, example, context: list | None = None) -> Measurement:
        """``context`` is ignored: each invocation is a separate process on the phone, so there
        is no loop of one block with hot caches to correct for."""
        p = self.protocol
        with tempfile.TemporaryDirectory(prefix="vitnas-android-") as tmp:
            local = self._model_file(module, example, Path(tmp))
            remote = f"{self.workdir}/block{local.suffix}"
            if not self._workdir_made:
                self._shell(f"mkdir -p {shlex.quote(self.workdir)}")
                self._workdir_made = True
            self._run("push", str(local), remote)
        try:
            # calibration invocation (the phone's counterpart of measure._warm_up): one timed run
            # sets how many runs make a sample last >= min_sample_ms; its number is discarded
            per_run = self._invoke(remote, 1)
            inner = max(1, math.ceil(p.min_sample_ms / max(per_run, 1e-6)))
            best: Measurement | None = None
            for _ in range(p.retries + 1):  # as measure.time_samples: re-measure a noisy block
                m = summarise([self._invoke(remote, inner) for _ in range(p.repeats)], inner)
                if best is None or m.spread < best.spread:
                    best = m
                if m.spread <= p.max_spread:
                    break
            return best
        finally:
            self._shell(f"rm -f {shlex.quote(remote)}", check=False)

    def _model_file(self, module, example, folder: Path) -> Path:
        """The block as the file the phone's binary reads: ONNX, or TFLite via the user's converter."""
        from nas.latency.measure import onnx_export

        onnx = folder / "block.onnx"
        onnx_export(module, example, str(onnx))  # the same export as ONNXRuntimeCPU.session: phones time the same graph
        if self.runtime == "onnxruntime":
            return onnx
        outdir = folder / "tflite"
        outdir.mkdir()
        # split before substituting, so paths with spaces stay one argument
        cmd = [t.format(onnx=str(onnx), outdir=str(outdir)) for t in shlex.split(self.convert)]
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as e:
            raise UserError(f"cannot run --convert `{shlex.join(cmd)}`: {e.strerror}") from None
        if r.returncode != 0:
            raise UserError(f"--convert `{shlex.join(cmd)}` failed (exit {r.returncode}): {offending_line(r.stdout)}")
        found = sorted(outdir.rglob("*.tflite"))
        if len(found) > 1:  # onnx2tf writes <name>_float32.tflite and <name>_float16.tflite; tables are FP32
            found = [f for f in found if "float32" in f.name] or found
        if len(found) != 1:
            names = ", ".join(f.name for f in found) or "none"
            raise UserError(f"--convert `{shlex.join(cmd)}` must leave one .tflite (or one *float32*.tflite) in "
                            f"{{outdir}}; found {names}")
        return found[0]

    def environment(self) -> dict[str, Any]:
        import torch

        props = self.properties()
        soc = props["ro.soc.model"] or props["ro.board.platform"] or "unknown SoC"  # ro.soc.model: Android 12+
        return {"runtime": f"android-{self.runtime}", "cpu": soc, "device": props["ro.product.model"] or "unknown",
                "soc": soc, "android": props["ro.build.version.release"], "binary": self.binary,
                "threads": self.protocol.threads, "taskset": self.taskset,
                # the host exports the graph, so its torch version is part of what was timed
                "torch": torch.__version__, "os": f"Android {props['ro.build.version.release']}"}

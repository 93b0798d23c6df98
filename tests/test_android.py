"""The Android/adb runtime without a phone: parsers on recorded tool output (tests/data/android/),
and the command sequence against a fake `adb` that replays those recordings."""
import json
import math
import shlex
import stat
import sys
from pathlib import Path

import pytest

from nas.errors import UserError
from nas.latency.android import AndroidRuntime, offending_line, parse_benchmark_model, parse_perf_test
from nas.latency.measure import Protocol

DATA = Path(__file__).parent / "data" / "android"
ORT_BIN = "/data/local/tmp/onnxruntime_perf_test"
TFLITE_BIN = "/data/local/tmp/benchmark_model"
PROPS = {"ro.product.model": "Pixel 6", "ro.soc.model": "", "ro.board.platform": "gs101",
         "ro.build.version.release": "14"}  # made up (README.md); ro.soc.model empty as before Android 12


def text(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


# ---- parsers on recorded output ------------------------------------------------------------
@pytest.mark.parametrize("name, ms", [
    ("perf_test_arm_kleidiai_sme2.txt", 98.961997),  # "Average inference time cost total: ... ms"
    ("perf_test_arm_no_kleidiai.txt", 339.381120),
    ("perf_test_acl_issue_850.txt", 144.871),  # older label without "total"
    ("perf_test_ort_pr_2798.txt", 734.606),  # no space after the colon
])
def test_parse_perf_test(name, ms):
    assert parse_perf_test(text(name)) == pytest.approx(ms, rel=1e-12)


@pytest.mark.parametrize("name, ms", [
    ("benchmark_model_tf_issue_42507.txt", 33.2094),  # Inference (avg): 33209.4 us
    ("benchmark_model_yuenshome_issue_77.txt", 66.7676),  # old summary: last count= line, avg=66767.6 us
    ("benchmark_model_android_apk_logcat.txt", 1.68792),  # logcat prefix
    ("benchmark_model_meta_tflite_riscv.txt", 2950.34),  # 2.95034e+06 us
    ("benchmark_model_litert.txt", 0.947132),  # its "Inference (avg): 0.95 ms" is rounded; count= line avg=947.132 us
])
def test_parse_benchmark_model_reports_milliseconds(name, ms):
    assert parse_benchmark_model(text(name)) == pytest.approx(ms, rel=1e-12)


def test_benchmark_model_fallback_reads_the_timed_phase_not_the_op_profiler():
    # without the summary line the last "count=" line of the run phases counts, not the profiler's
    # "Timings (microseconds): count=50 ... avg=2.9499e+06" line that follows it
    lines = [ln for ln in text("benchmark_model_meta_tflite_riscv.txt").splitlines() if "Inference timings" not in ln]
    assert parse_benchmark_model("\n".join(lines)) == pytest.approx(2950.34)


def test_parsers_reject_output_without_timings():
    failed = text("benchmark_model_failed_lp6m.txt")
    with pytest.raises(ValueError):
        parse_benchmark_model(failed)
    with pytest.raises(ValueError):
        parse_perf_test(text("benchmark_model_tf_issue_42507.txt"))  # the other tool's output
    # synthetic lines: a lone warm-up phase is not a measurement; a one-run timed phase has no avg=
    with pytest.raises(ValueError):
        parse_benchmark_model("count=3 first=5 curr=5 min=5 max=5 avg=5 std=0\n")
    assert parse_benchmark_model("count=3 first=5 curr=5 min=5 max=5 avg=5 std=0\ncount=1 curr=1500\n") == 1.5
    assert offending_line(failed) == ("ERROR: NN API returned error ANEURALNETWORKS_OP_FAILED at line 3779 "
                                      "while completing NNAPI compilation.")


# ---- a fake adb ------------------------------------------------------------------------------
FAKE_ADB = r'''#!{python}
import json, shutil, sys
from pathlib import Path

conf = json.loads(Path({conf!r}).read_text())
args = sys.argv[1:]
with open(conf["log"], "a") as f:
    f.write(json.dumps(args) + "\n")
if conf.get("error"):
    print(conf["error"], file=sys.stderr)
    sys.exit(1)
if args[:1] == ["-s"]:
    args = args[2:]
if args[0] == "push":
    shutil.copy(args[1], conf["pushed"])
    print(args[1] + ": 1 file pushed, 0 skipped.")
    sys.exit(0)
cmd = args[1]
if cmd.startswith("getprop "):
    print(conf["props"].get(cmd.split()[1], ""))
elif not cmd.startswith(("mkdir ", "rm ")):  # a benchmark invocation: replay the next recording
    counter = Path(conf["log"] + ".n")
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    name, status = conf["replay"][min(n, len(conf["replay"]) - 1)]
    sys.stdout.write(Path(conf["data"], name).read_text())
    sys.exit(status)
'''


class FakeAdb:
    def __init__(self, folder: Path, replay, error=None):
        self.log = folder / "adb.log"
        self.pushed = folder / "pushed"
        conf = folder / "adb.json"
        conf.write_text(json.dumps({"log": str(self.log), "pushed": str(self.pushed), "data": str(DATA),
                                    "props": PROPS, "replay": replay, "error": error}))
        self.path = folder / "adb"
        self.path.write_text(FAKE_ADB.format(python=sys.executable, conf=str(conf)))
        self.path.chmod(self.path.stat().st_mode | stat.S_IXUSR)

    def calls(self) -> list[list[str]]:
        return [json.loads(ln) for ln in self.log.read_text().splitlines()]


@pytest.fixture(scope="module")
def block():
    import torch

    from nas.nets.blocks import build_block, example_input
    from nas.spaces.base import BlockSpec

    spec = BlockSpec.of("nb201_edge", (16, 8, 8), op="nor_conv_3x3")
    torch.manual_seed(0)
    return build_block(spec), example_input(spec)


def getprops(prefix):
    return [[*prefix, "shell", f"getprop {k}"] for k in PROPS]


def test_onnxruntime_command_sequence_and_measurement(tmp_path, block):
    import onnx
    import torch

    sme2, slow = ["perf_test_arm_kleidiai_sme2.txt", 0], ["perf_test_arm_no_kleidiai.txt", 0]
    adb = FakeAdb(tmp_path, [sme2, sme2, sme2, slow, sme2, sme2])  # calibration, then 5 samples
    p = Protocol(repeats=5, warmup=1, min_sample_ms=200.0)
    rt = AndroidRuntime(p, serial="R58M123", runtime="onnxruntime", adb=str(adb.path))

    env = rt.environment()
    m = rt.measure(*block)

    inner = math.ceil(200.0 / 98.961997)  # calibration: one run of 98.96 ms -> 3 runs per sample
    assert (m.inner, m.taken, m.kept) == (inner, 5, 4)  # the 339 ms sample lies outside the Tukey fences
    assert m.median_ms == pytest.approx(98.961997) and m.spread == 0.0
    remote = "/data/local/tmp/vitnas/block.onnx"
    run = f"taskset 70 {ORT_BIN} -e cpu -m times -r {{}} -x 1 -o 99 -I {remote}"
    s = ["-s", "R58M123"]
    calls = adb.calls()
    push = calls[5]
    assert push[:3] == [*s, "push"] and push[3].endswith("block.onnx") and push[4] == remote
    assert not Path(push[3]).exists()  # the local export lives in a temporary folder
    assert calls == [*getprops(s), [*s, "shell", "mkdir -p /data/local/tmp/vitnas"], push,
                     [*s, "shell", run.format(1)], *[[*s, "shell", run.format(inner)]] * 5,
                     [*s, "shell", f"rm -f {remote}"]]
    model = onnx.load(str(adb.pushed))  # what was pushed: the TorchScript export, opset 17, input "x"
    assert [i.name for i in model.graph.input] == ["x"] and model.opset_import[0].version == 17
    assert env == {"runtime": "android-onnxruntime", "cpu": "gs101", "device": "Pixel 6", "soc": "gs101",
                   "android": "14", "binary": ORT_BIN, "threads": 1, "taskset": "70",
                   "torch": torch.__version__, "os": "Android 14"}


def test_tflite_converts_then_runs_benchmark_model(tmp_path, block):
    conv = tmp_path / "convert.py"  # stands in for onnx2tf: writes float32 and float16 files
    conv.write_text("import sys, shutil\nsrc, out = sys.argv[2], sys.argv[4]\n"
                    "for n in ('model_float32.tflite', 'model_float16.tflite'):\n    shutil.copy(src, out + '/' + n)\n")
    adb = FakeAdb(tmp_path, [["benchmark_model_tf_issue_42507.txt", 0]])
    p = Protocol(repeats=5, warmup=1, min_sample_ms=100.0)
    rt = AndroidRuntime(p, runtime="tflite", taskset=None, adb=str(adb.path),
                        convert=f"{shlex.quote(sys.executable)} {shlex.quote(str(conv))} -i {{onnx}} -o {{outdir}}")

    m = rt.measure(*block)

    inner = math.ceil(100.0 / 33.2094)  # 4
    assert (m.inner, m.taken, m.kept, m.spread) == (inner, 5, 5, 0.0)
    assert m.median_ms == pytest.approx(33.2094)
    remote = "/data/local/tmp/vitnas/block.tflite"
    run = (f"{TFLITE_BIN} --graph={remote} --num_threads=1 --warmup_runs=1 --warmup_min_secs=0.05 "
           f"--num_runs={{}} --min_secs=0 --use_xnnpack=true")  # no taskset prefix, no -s
    calls = adb.calls()
    assert Path(calls[1][1]).name == "model_float32.tflite"
    assert calls == [["shell", "mkdir -p /data/local/tmp/vitnas"], ["push", calls[1][1], remote],
                     ["shell", run.format(1)], *[["shell", run.format(inner)]] * 5, ["shell", f"rm -f {remote}"]]


# ---- one-line errors -------------------------------------------------------------------------
def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_adb_not_on_path(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(UserError) as e:
        AndroidRuntime(Protocol(repeats=5, warmup=1))
    assert one_line(e).startswith("adb not found ('adb' is not an executable on PATH)")


def test_option_errors(tmp_path):
    adb = FakeAdb(tmp_path, [])
    p = Protocol(repeats=5, warmup=1)
    with pytest.raises(UserError, match="tflite needs --convert"):
        AndroidRuntime(p, runtime="tflite", adb=str(adb.path))
    with pytest.raises(UserError, match="must be onnxruntime or tflite"):
        AndroidRuntime(p, runtime="tf", adb=str(adb.path))
    with pytest.raises(UserError, match="hexadecimal CPU mask"):
        AndroidRuntime(p, taskset="big", adb=str(adb.path))
    with pytest.raises(UserError, match="--threads 4 exceeds the 3 core"):
        AndroidRuntime(Protocol(repeats=5, warmup=1, threads=4), taskset="70", adb=str(adb.path))


def test_binary_missing_on_the_phone(tmp_path, block):
    adb = FakeAdb(tmp_path, [["sh_not_found_tast.txt", 127]])
    rt = AndroidRuntime(Protocol(repeats=5, warmup=1), serial="R58M123", adb=str(adb.path))
    with pytest.raises(UserError) as e:
        rt.measure(*block)
    msg = one_line(e)
    assert msg.startswith(f"the benchmark binary {ORT_BIN} cannot run on the phone (`{adb.path} -s R58M123 shell "
                          f"'taskset 70 {ORT_BIN} -e cpu -m times -r 1 ")
    assert "printed '/system/bin/sh: /data/local/tmp/arcvideodecoder_test_x86: not found'" in msg
    assert "--android-binary" in msg
    assert adb.calls()[-1] == ["-s", "R58M123", "shell", "rm -f /data/local/tmp/vitnas/block.onnx"]  # cleaned up


def test_unparseable_output(tmp_path, block):
    adb = FakeAdb(tmp_path, [["benchmark_model_failed_lp6m.txt", 1]])
    copy = "import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2] + '/b.tflite')"
    conv = f"{shlex.quote(sys.executable)} -c {shlex.quote(copy)} {{onnx}} {{outdir}}"
    rt = AndroidRuntime(Protocol(repeats=5, warmup=1), runtime="tflite", adb=str(adb.path), convert=conv)
    with pytest.raises(UserError) as e:
        rt.measure(*block)
    msg = one_line(e)
    assert msg.startswith(f"`{adb.path} shell 'taskset 70 {TFLITE_BIN} --graph=/data/local/tmp/vitnas/block.tflite")
    assert msg.endswith("printed no average inference time (no 'Inference timings in us' line and no timed "
                        "'count=... avg=...' line): 'ERROR: NN API returned error ANEURALNETWORKS_OP_FAILED at "
                        "line 3779 while completing NNAPI compilation.'")
    assert "(exit 1)" in msg


def test_no_device(tmp_path):
    adb = FakeAdb(tmp_path, [], error="error: device 'R58M123' not found")  # adb's own message (illustrative)
    rt = AndroidRuntime(Protocol(repeats=5, warmup=1), serial="R58M123", adb=str(adb.path))
    with pytest.raises(UserError) as e:
        rt.environment()
    assert one_line(e) == (f"`{adb.path} -s R58M123 shell 'getprop ro.product.model'` failed (exit 1): "
                           f"error: device 'R58M123' not found")

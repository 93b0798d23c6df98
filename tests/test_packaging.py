"""The wheel carries every subpackage and the data folders (spaces, predictors, the mini-batch)."""
import subprocess
import sys
import tomllib
import zipfile

from conftest import REPO


def test_every_subpackage_is_listed():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "nas").rglob("__init__.py")}
    assert found <= listed, found - listed


def test_wheel_ships_the_data(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(REPO)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    names = set(zipfile.ZipFile(next(tmp_path.glob("vitnas-*.whl"))).namelist())
    for need in ["nas/_bundled/spaces/elasticvit.toml", "nas/_bundled/spaces/elasticvit-tiny.toml",
                 "nas/_bundled/predictors/pixel6/elasticvit.csv", "nas/_bundled/predictors/pixel6/elasticvit.toml",
                 "nas/_bundled/predictors/LICENSE-nn-Meter", "nas/_bundled/predictors/nb201-data/nb201.csv",
                 "nas/_bundled/predictors/nb201-data/LICENSE-HELP", "nas/_bundled/predictors/pixel2/nb201.toml",
                 "nas/_bundled/metrics/nb201-cifar10.toml", "nas/assets/nb201-index/cells.txt", "nas/assets/imagenet-samples/LICENSE",
                 "nas/assets/imagenet-samples/imagenet_00_243.jpg", "nas/train/trainer.py", "nas/elastic/ops.py"]:
        assert need in names, need

"""Search spaces: one TOML file per named space, one module per family.

``get_space("elasticvit")`` reads ``spaces/elasticvit.toml``; ``get_space("my.toml")`` reads a
user's file. The file's ``family`` picks the module that interprets it.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from nas.errors import UserError
from nas.registry import Registry, did_you_mean
from nas.resources import data_dir
from nas.spaces.base import LatencySlot, SearchSpace, Var
from nas.tomldoc import TomlDoc

FAMILIES: Registry = Registry("space family")


def _elasticvit(doc: TomlDoc) -> SearchSpace:
    from nas.spaces.elasticvit import ElasticViTSpace

    return ElasticViTSpace(doc)


def _nb201(doc: TomlDoc) -> SearchSpace:
    from nas.spaces.nb201 import NB201Space

    return NB201Space(doc)


def _asvit(doc: TomlDoc) -> SearchSpace:
    from nas.spaces.asvit import AsViTSpace

    return AsViTSpace(doc)


def _deepmad(doc: TomlDoc) -> SearchSpace:
    from nas.spaces.deepmad import DeepMADSpace

    return DeepMADSpace(doc)


def _mpcvit(doc: TomlDoc) -> SearchSpace:
    from nas.spaces.mpcvit import MpcViTSpace

    return MpcViTSpace(doc)


def _vit_resnas(doc: TomlDoc) -> SearchSpace:
    from nas.spaces.vit_resnas import ViTResNASSpace

    return ViTResNASSpace(doc)


FAMILIES.register("elasticvit")(_elasticvit)
FAMILIES.register("asvit")(_asvit)
FAMILIES.register("nb201")(_nb201)
FAMILIES.register("deepmad")(_deepmad)
FAMILIES.register("mpcvit")(_mpcvit)
FAMILIES.register("vit-resnas")(_vit_resnas)


def space_files() -> dict[str, Path]:
    """Named spaces that ship with vitnas: name -> TOML path."""
    return {p.stem: p for p in sorted(data_dir("spaces").glob("*.toml"))}


def get_space(name_or_path: str | Path) -> SearchSpace:
    """A space by name (``spaces/<name>.toml``) or by path to a TOML file."""
    text = str(name_or_path)
    path = Path(text)
    if text.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise UserError(f"space file {path} does not exist")
        return _load_fresh(path.resolve())
    files = space_files()
    if text not in files:
        raise did_you_mean(text, files, "space")
    return _load_fresh(files[text])


def _load_fresh(path: Path) -> SearchSpace:
    st = path.stat()
    return _load(path, st.st_mtime_ns, st.st_size)  # an edited file is read again


@lru_cache(maxsize=32)
def _load(path: Path, _mtime: int, _size: int) -> SearchSpace:
    doc = TomlDoc(path)
    family = doc.get(doc.data, "family", "family", str)
    try:
        make = FAMILIES.get(family)
    except UserError as e:
        raise doc.error("family", str(e)) from None
    return make(doc)


__all__ = ["FAMILIES", "LatencySlot", "SearchSpace", "Var", "get_space", "space_files"]

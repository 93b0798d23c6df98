"""Weight-sharing supernets (Once-for-All style): elastic layers hold the largest weights and
use a slice of them for the active subnet; the input width is read from the tensor.

``Supernet.set_active(arch)`` selects a subnet; ``Supernet.extract(arch)`` returns the space's
standalone model (``space.build(arch)``) with the slices copied in.
"""
from nas.elastic.supernet import Supernet

__all__ = ["Supernet"]

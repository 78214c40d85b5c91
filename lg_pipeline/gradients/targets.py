"""Which weight matrices are studied: selected by name suffix, with the layer index parsed from the name."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lg_pipeline.errors import InputError
from lg_pipeline.vocabulary import ATTENTION, MODULE_ALIASES, layer_index


@dataclass(frozen=True)
class Target:
    """One studied matrix: `module` is the suffix it matched (q_proj, ...)."""

    parameter: str
    module_path: str
    layer: int
    module: str


def parse_suffixes(spec: str | Iterable[str]) -> tuple[str, ...]:
    """`"q,k,v,o"` or `["q_proj", "fc1"]` -> module-name suffixes; short aliases expanded."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = tuple(MODULE_ALIASES.get(s.strip(), s.strip()) for s in items if s.strip())
    if not out:
        raise InputError("--targets: no module suffix given")
    return out


def find_targets(model: Any, suffixes: Iterable[str] = ATTENTION) -> list[Target]:
    """Linear layers whose name ends in one of `suffixes`, in model order.

    Exact suffix match on the module name: `q_norm` or a bias never qualifies.
    """
    import torch

    suffixes = tuple(suffixes)
    found: list[Target] = []
    matched: set[str] = set()
    for path, module in model.named_modules():
        suffix = next((s for s in suffixes if path == s or path.endswith("." + s)), None)
        if suffix is None:
            continue
        if not isinstance(module, torch.nn.Linear):
            raise InputError(f"target '{path}' is a {type(module).__name__}, not a torch.nn.Linear")
        layer = layer_index(path)
        if layer is None:
            raise InputError(f"target '{path}': no layer index in its name")
        found.append(Target(path + ".weight", path, layer, suffix))
        matched.add(suffix)
    missing = [s for s in suffixes if s not in matched]
    if missing:
        raise InputError(f"--targets: no linear layer of {type(model).__name__} ends in {', '.join(missing)}")
    return found

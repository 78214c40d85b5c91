"""What the three run commands (`gradients`, `dynamics`, `zero-shot`) share: the flag of each setting, the model
inputs checked before any weight loads, the model loader handed to a run, and a progress bar that ends its line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lg_pipeline.errors import InputError, SettingsMessage

# The flag of each setting whose flag is not `--` + its name with dashes (the one place the CLI's names live).
FLAGS = {"learning_rate": "--lr"}


def flag(setting: str) -> str:
    return FLAGS.get(setting, "--" + setting.replace("_", "-"))


def in_flags(exc: SettingsMessage) -> str:
    """The message with each setting named by its flag (`learning_rate` -> `--lr`)."""
    return exc.render({name: flag(name) for name in exc.settings()})


def resolved_dtype(model: str, dtype: str | None) -> str:
    """The dtype the weights will load in: `--dtype`, else the catalog's (a local folder: float32)."""
    from data_sources.models.catalog import ModelSpec, model_catalog
    from lg_pipeline.gradients.devices import DTYPES

    if dtype is not None:
        if dtype not in DTYPES:
            raise InputError(f"--dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
        return dtype
    spec = model_catalog().get(model)
    return spec.dtype if spec is not None else ModelSpec.__dataclass_fields__["dtype"].default


def check_model_inputs(model: str, device: str, dtype: str | None) -> str:
    """`--device` and `--dtype` before anything loads: every run computes gradients, which fp16 underflows."""
    from lg_pipeline.gradients.devices import check_device

    check_device(device)
    chosen = resolved_dtype(model, dtype)
    if chosen == "float16":
        where = "--dtype float16" if dtype else f"model '{model}': its catalog dtype float16"
        raise InputError(f"{where}: gradients underflow without loss scaling; use --dtype bfloat16 or float32")
    return chosen


def model_loader(model: str, device: str, dtype: str | None, cache_dir: str) -> Any:
    """A run's `ModelLoader`: the model opened only when the run asks for it (after its inputs are checked)."""

    def load() -> Any:
        from data_sources.models.catalog import open_model
        from lg_pipeline.dynamics.training import LoadedModel

        loaded, tokenizer, spec = open_model(model, device, dtype, cache_dir)
        return LoadedModel(loaded, tokenizer, spec.chat, spec.name, spec.source)

    return load


@contextlib.contextmanager
def progress_bar(total: int, unit: str, desc: str) -> Iterator[Any]:
    """A tqdm bar closed however the block ends, so an error after it starts on a line of its own."""
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, desc=desc)
    try:
        yield bar
    finally:
        bar.close()


def seeds_of(args: Any) -> tuple[int, ...] | None:
    """`--seeds 0,1,2` as seeds (None: one run with `--seed`, into `--out` itself); both flags at once is refused."""
    from lg_pipeline.dynamics.seeds import parse_seeds

    if args.seeds is None:
        return None
    if args.seed is not None:
        raise InputError("--seed and --seeds: give one (--seeds runs one folder per seed under --out)")
    return parse_seeds(args.seeds)


def run_per_seed(args: Any, run_one: Any, seeds: tuple[int, ...]) -> list[Any]:
    """`run_one(args)` once per seed, each with `--seed` set and `--out` its seed's folder (`dynamics.seeds`), so
    every seed is exactly the single-seed command (its checks, resumption and figures) in a folder of its own."""
    import argparse

    from lg_pipeline.dynamics.seeds import check_seeds_target, seed_folder

    check_seeds_target(args.out)
    results = []
    for seed in seeds:
        one = argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None, "out": str(seed_folder(args.out, seed))})
        print(f"seed {seed}: {one.out}", flush=True)
        results.append(run_one(one))
    return results

"""Zero-shot dynamics: held-out-task loss through one epoch of fine-tuning, per ordering of the same items.

For each ordering the model starts from the same weights and trains one epoch with the same seed and
hyper-parameters through the shared training code (`lg_pipeline.dynamics.training.fine_tune`, TRL); the
held-out loss is measured at step 0 and every K steps. Outputs in one folder (Parquet): `tasks`, `orderings`,
`zero_shot`, `seen_distance`, and `alignment` (per layer) when the `gradient` ordering is asked for. Each
finished ordering is kept in `parts/` at once, so a run that stops resumes with the next ordering; `run.json`
records the settings, and a folder holding a run with other settings is never mixed into.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lg_pipeline.dynamics.training import TrainConfig, fine_tune
from lg_pipeline.dynamics.zero_shot.alignment import AlignmentConfig, alignments, total_alignment
from lg_pipeline.dynamics.zero_shot.embeddings import EMBEDDERS, make_embedder
from lg_pipeline.dynamics.zero_shot.held_out import LOSS_COLUMNS, HeldOutLossCallback, eval_steps
from lg_pipeline.dynamics.zero_shot.orderings import EMBEDDING_ORDERINGS, ORDERINGS, distances, make_ordering, wsd
from lg_pipeline.dynamics.zero_shot.seen_distance import SEEN_COLUMNS, seen_distance_rows
from lg_pipeline.dynamics.zero_shot.tasks import TaskSplit, split_frame
from lg_pipeline.errors import InputError
from lg_pipeline.gradients.encoding import Encoded, encode
from lg_pipeline.io.atomic import atomic_write_text, write_parquet
from lg_pipeline.vocabulary import ATTENTION

ORDERING_COLUMNS = ("ordering", "position", "example_id", "task", "score")
# Bump when the numbers a run produces could change (2: orderings without a score of their own carry the WSD).
ZERO_SHOT_VERSION = "zero-shot-2"
OPTIMIZERS = ("adamw", "sgd")


@dataclass(frozen=True)
class ZeroShotConfig:
    """How each ordering trains and is measured (the paper: AdamW, one epoch, full fine-tuning)."""

    orderings: tuple[str, ...] = ("rt", "nft", "fft")
    eval_every: int = 4
    learning_rate: float = 1e-5
    optimizer: str = "adamw"
    batch_size: int = 4
    embedder: str = "minilm"
    seed: int = 0
    chat: bool = False
    max_length: int = 1024
    trainable: str = "all"
    targets: tuple[str, ...] = ATTENTION  # the studied matrices the gradient ordering sums over
    cache_dir: str = ".cache"
    extra: dict[str, Any] = field(default_factory=dict)  # recorded in run.json (model name, level, ...)

    def check(self) -> None:
        """One line naming a bad setting."""
        unknown = [o for o in self.orderings if o not in ORDERINGS]
        if unknown:
            raise InputError(f"--orderings: unknown ordering {unknown[0]!r} (known: {', '.join(ORDERINGS)})")
        if not self.orderings:
            raise InputError("--orderings: no ordering given")
        if self.embedder not in EMBEDDERS:
            raise InputError(f"--embedder: must be one of {', '.join(EMBEDDERS)}, got {self.embedder!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer: must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        for name in ("eval_every", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"--{name.replace('_', '-')}: must be a positive integer, got {value!r}")

    def train_config(self, n_items: int) -> TrainConfig:
        return TrainConfig(
            learning_rate=self.learning_rate,
            optimizer=self.optimizer,  # type: ignore[arg-type]
            steps=math.ceil(n_items / self.batch_size),  # one epoch
            batch_size=self.batch_size,
            seed=self.seed,
            trainable=self.trainable,  # type: ignore[arg-type]
            chat=self.chat,
            max_length=self.max_length,
        )


@dataclass
class ZeroShotResult:
    out: Path
    orderings_done: list[str]
    resumed: list[str]
    seconds: dict[str, float]  # embedding, alignment, and training per ordering


def _encode(tokenizer: Any, items: Sequence[tuple[str, Any]], config: ZeroShotConfig) -> list[Encoded]:
    """Every item must keep a response token: a skipped training item would shift what each step has seen."""
    out = []
    for _, e in items:
        enc = encode(tokenizer, e, config.chat, config.max_length)
        if enc is None:
            raise InputError(f"item {e.example_id!r}: no response token left within --max-length {config.max_length}")
        out.append(enc)
    return out


def _settings(split: TaskSplit, config: ZeroShotConfig) -> dict[str, Any]:
    record = asdict(config)
    record.pop("orderings")  # asking for more orderings later extends the same run
    record.update(version=ZERO_SHOT_VERSION, level=split.level,
                  tasks=split_frame(split)[["example_id", "task", "split", "instruction", "response"]]
                  .to_dict("list"))
    return json.loads(json.dumps(record, default=list))


def _claim(out: Path, settings: dict[str, Any], replace: bool) -> None:
    """Resume only a run with the same settings; `replace` clears one with other settings."""
    import shutil

    path = out / "run.json"
    if path.is_file() and json.loads(path.read_text()) != settings:
        if not replace:
            raise InputError(f"--out {out}: holds a run with other settings (use another folder)")
        shutil.rmtree(out / "parts", ignore_errors=True)
    atomic_write_text(path, json.dumps(settings, indent=1))


class _Run:
    """The state one run shares between its orderings: items, embeddings, initial weights, outputs."""

    def __init__(self, model, tokenizer, split: TaskSplit, config: ZeroShotConfig, out: Path, report):
        self.model, self.tokenizer, self.split, self.config, self.out = model, tokenizer, split, config, out
        self.report = report
        self.train = split.train_items()
        self.test = split.test_items()
        self.train_tasks = [t for t, _ in self.train]
        self.test_tasks = [t for t, _ in self.test]
        self.train_enc = _encode(tokenizer, self.train, config)
        self.test_enc = _encode(tokenizer, self.test, config)
        self.seconds: dict[str, float] = {}
        self._emb: tuple[np.ndarray, np.ndarray] | None = None
        self._align: np.ndarray | None = None
        self.initial = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def part(self, ordering: str, table: str) -> Path:
        return self.out / "parts" / f"{ordering}.{table}.parquet"

    def embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) embeddings at the initial weights, computed once."""
        if self._emb is None:
            started = time.monotonic()
            embed = make_embedder(self.config.embedder, self.config.cache_dir, self.model, self.tokenizer)
            self._emb = (embed([e for _, e in self.train]), embed([e for _, e in self.test]))
            self.seconds["embedding"] = time.monotonic() - started
        return self._emb

    def alignment(self) -> np.ndarray:
        """Σ over the studied matrices of ⟨∇L_u, ∇L_test⟩ at step 0; the per-layer table is written."""
        if self._align is None:
            path = self.out / "alignment.parquet"
            if path.is_file():
                import pandas as pd

                frame = pd.read_parquet(path)
            else:
                started = time.monotonic()
                cfg = AlignmentConfig(self.config.targets, self.config.batch_size, self.config.max_length,
                                      self.config.chat)
                frame = alignments(self.model, self.tokenizer, [e for _, e in self.train], [e for _, e in self.test],
                                   cfg)
                self.seconds["alignment"] = time.monotonic() - started
                write_parquet(frame, path)
            self._align = total_alignment(frame, [e.example_id for _, e in self.train])
        return self._align

    def ordering(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(order, score); orderings without a score of their own (rt, round_robin, cluster) get each item's WSD,
        so the WSD profile of every ordering can be compared."""
        needs_embeddings = name in EMBEDDING_ORDERINGS
        train_emb, test_emb = self.embeddings() if needs_embeddings else (None, None)
        order, score = make_ordering(name, self.train_tasks, self.config.seed, train_emb, test_emb, self.alignment)
        if np.isnan(score).all():
            score = wsd(distances(*self.embeddings()))[order]
        return order, score

    def run_ordering(self, name: str) -> None:
        import pandas as pd

        order, score = self.ordering(name)
        ordered = [self.train[i][1] for i in order]
        train_config = self.config.train_config(len(ordered))
        callback = HeldOutLossCallback(self.model, self.tokenizer, self.test_enc, self.test_tasks,
                                       self.config.eval_every, name, self.config.batch_size, self.report)
        self.model.load_state_dict(self.initial)
        started = time.monotonic()
        fine_tune(self.model, self.tokenizer, ordered, train_config, callbacks=[callback])
        self.seconds[f"train:{name}"] = time.monotonic() - started
        self.model.load_state_dict(self.initial)
        steps = eval_steps(train_config.steps, self.config.eval_every)
        train_emb, test_emb = self.embeddings()
        seen = seen_distance_rows(name, order, steps, self.config.batch_size, train_emb, test_emb, self.test_tasks)
        rows = [
            {"ordering": name, "position": k, "example_id": self.train[i][1].example_id,
             "task": self.train[i][0], "score": float(score[k])}
            for k, i in enumerate(order)
        ]
        # The loss table last: its presence marks the ordering finished.
        write_parquet(pd.DataFrame(rows, columns=list(ORDERING_COLUMNS)), self.part(name, "orderings"))
        write_parquet(pd.DataFrame(seen, columns=list(SEEN_COLUMNS)), self.part(name, "seen_distance"))
        write_parquet(pd.DataFrame(callback.rows, columns=list(LOSS_COLUMNS)), self.part(name, "zero_shot"))


def run_zero_shot(
    model: Any,
    tokenizer: Any,
    split: TaskSplit,
    config: ZeroShotConfig,
    out: str | Path,
    report: Callable[[str], None] = print,
    replace: bool = False,
) -> ZeroShotResult:
    """Train and measure every ordering not finished yet in `out`, then join the tables; the model ends as given."""
    config.check()
    out = Path(out)
    _claim(out, _settings(split, config), replace)
    write_parquet(split_frame(split), out / "tasks.parquet")
    run = _Run(model, tokenizer, split, config, out, report)
    done, resumed = [], []
    for name in config.orderings:
        if run.part(name, "zero_shot").is_file():
            resumed.append(name)
        else:
            report(f"ordering {name}: training {len(run.train)} items, {len(run.test)} held-out items")
            run.run_ordering(name)
        done.append(name)
    _join(out)
    return ZeroShotResult(out, done, resumed, run.seconds)


def comparable_runs_key(out: str | Path) -> str:
    """Runs with equal keys differ only in ordering and training level: same tasks, test items, hyper-parameters."""
    from lg_pipeline.example import stable_id

    settings = json.loads((Path(out) / "run.json").read_text())
    tasks = settings["tasks"]
    rows = list(zip(tasks["example_id"], tasks["split"], tasks["response"], strict=True))
    test = [(i, r) for i, s, r in rows if s == "test"]
    train = [i for i, s in zip(tasks["example_id"], tasks["split"], strict=True) if s == "train"]
    fixed = {k: v for k, v in settings.items() if k not in ("tasks", "level", "extra", "cache_dir")}
    return stable_id(json.dumps([fixed, train, test], sort_keys=True))


def _join(out: Path) -> None:
    """The per-ordering parts of every finished ordering as the four output tables."""
    import pandas as pd

    finished = sorted(p.name.split(".")[0] for p in (out / "parts").glob("*.zero_shot.parquet"))
    for table, columns in (("orderings", ORDERING_COLUMNS), ("zero_shot", LOSS_COLUMNS),
                           ("seen_distance", SEEN_COLUMNS)):
        frames = [pd.read_parquet(out / "parts" / f"{o}.{table}.parquet") for o in finished]
        frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(columns))
        write_parquet(frame, out / f"{table}.parquet")

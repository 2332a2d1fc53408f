"""Training configuration: a dataclass schema, YAML loading, typed `dotted.key=value` overrides, validation.

Every error is one line naming the key (``optim.lr: ...``) or the path, raised as ValueError or
FileNotFoundError; `train.py` prints it as ``error: ...`` and exits 2.

A YAML file may start with ``base: other.yaml`` (resolved next to it): the other file is loaded first and this
one's keys are merged over it. Relative data and model paths are relative to the working directory (the
repository root in every example). A bare config name (``gpt2_reversal_small.yaml``) resolves in ``configs/``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jepa.data.datasets import DataConfig, dataset_class
from jepa.data.layouts import LayoutConfig
from jepa.losses import JEPA_LOSSES

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
HF_MODEL_FILES = "config.json, model.safetensors, tokenizer.json, tokenizer_config.json"
SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16", "pure_bf16")
EXPORTS = ("hf", "adapter", "none")
DEVICES = ("auto", "cpu", "cuda")
ATTENTIONS = ("auto", "sdpa", "flex")
STRATEGIES = ("ddp", "fsdp")


@dataclass
class RunConfig:
    name: str = "run"  # the run directory is `dir/name`
    dir: str = "runs"
    seed: int = 42  # python / numpy / torch seeds and the data order
    device: str = "auto"  # auto = cuda when available (torchrun: cuda:LOCAL_RANK), else cpu
    threads: int | None = None  # torch.set_num_threads on CPU; None = torch's default
    log_every: int = 1  # metrics.jsonl gets every optimizer step; tqdm refreshes every `log_every` steps
    peak_tflops: float | None = None  # the device's peak for MFU; None = a table of known GPUs (no MFU on CPU)


@dataclass
class ModelConfig:
    path: str | None = None  # an HF-format directory (config.json + model.safetensors) to fine-tune
    name: str = ""  # what belongs in `path` (named in the error when the directory is missing)
    arch: dict | None = None  # instead of `path`: an HF config.json dict, trained from scratch
    tokenizer: str | None = None  # directory with tokenizer.json; default `path` (reversal data has its own vocab)
    gradient_checkpointing: bool = False  # recompute each block in the backward pass (activation checkpointing)
    # auto = sdpa until FlexAttention has been checked on a GPU; flex = FlexAttention with a block mask (CUDA only:
    # no CPU backward in torch 2.13)
    attention: str = "auto"
    # torch.compile each block (fullgraph, in place: the state dict's names are unchanged); all blocks share one
    # graph. Fixed shapes (data.pack_length, pad_to_multiple) avoid recompiles. CPU needs a C++ compiler.
    compile: bool = False


@dataclass
class OptimConfig:
    lr: float = 2e-5  # peak learning rate
    weight_decay: float = 0.0  # AdamW decay, applied to matrices only (not biases, norms, predictor tokens)
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    clip: float = 1.0  # max global gradient norm; 0 disables clipping


@dataclass
class ScheduleConfig:
    kind: str = "linear"  # constant | linear (decay to min_lr_ratio) | cosine
    warmup_steps: int = 0  # linear warm-up from 0; overrides warmup_ratio when > 0
    warmup_ratio: float = 0.0  # warm-up as a fraction of the total optimizer steps
    min_lr_ratio: float = 0.0  # final lr = lr * min_lr_ratio (linear, cosine)
    epochs: int = 1
    max_steps: int | None = None  # total optimizer steps; overrides epochs
    stop_at_step: int | None = None  # end this invocation at this step (checkpointed); the schedule is unchanged
    batch_size: int = 4  # rows per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step; global batch = batch_size * grad_accum * world size


@dataclass
class PrecisionConfig:
    mode: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + GradScaler) | pure_bf16 (bf16 weights, no master)


@dataclass
class LoRAConfig:
    enabled: bool = False
    rank: int = 16
    alpha: float = 32.0  # update scaled by alpha / rank
    dropout: float = 0.0  # on the adapter's input only
    targets: list[str] = field(default_factory=list)  # module names; empty = the architecture's `lora_targets`


@dataclass
class JepaConfig:
    gamma: float = 1.0  # weight of L_LM
    lam: float = field(default=0.0, metadata={"key": "lambda"})  # weight of L_JEPA (YAML key `lambda`)
    loss: str = "cosine"  # a name in jepa.losses.JEPA_LOSSES
    temperature: float = 0.07  # infonce only
    ratio: float = 1.0  # jepa_ratio (docs/method.md §1): per micro-batch, JEPA with this probability, else LM rows only
    predictor_seed: int = 0  # init of the K predictor-token embeddings
    gather_negatives: bool = False  # infonce under DDP: other ranks' targets as extra negatives (no gradient)
    # stp mode: the hidden states the chords are read from, as Hugging Face's `hidden_states` index (0 = the
    # embeddings, k = after block k, -1 = after the final norm: the released STP runs')
    stp_layer: int = -1


@dataclass
class CheckpointConfig:
    every: int = 0  # save runs/NAME/step_N every N optimizer steps (0 = only at the end)
    keep_last: int = 2  # older step_N directories are deleted
    resume: str = "auto"  # auto = newest complete step_N of this run if any; none = fresh; or a step_N path
    export: str = "hf"  # at the end, runs/NAME/final: hf = HF directory (LoRA merged), adapter = adapter only


@dataclass
class EvalConfig:
    every: int = 0  # call the evaluation hook every N optimizer steps (0 = never) and at the end
    fn: str | None = None  # "module:factory"; factory(cfg) returns a callable (model, predictors, step) -> dict
    # For the hooks in jepa/eval/hooks.py (`jepa.eval.hooks:reversal` | `:gsm8k` | `:views`):
    data: str | None = None  # held-out data: reversal dir with valid.json / chat jsonl; default data.train
    limit: int | None = None  # evaluate the first N examples (per probe split for reversal)
    max_new_tokens: int | None = None  # gsm8k: None = the protocol's default (512)
    # gsm8k and the generation tasks: also the view diagnostics (cosine, effective ranks) of the same records with
    # the views this layout mode cuts (jepa | step), whatever layout.mode trains, so a regular run is measured too
    views: str | None = None
    # the chat hooks: also the held-out LM loss (teacher-forced CE per answer token, jepa/eval/heldout.py) of the
    # same records, laid out as regular rows, so it reads where a generation metric sits at its floor
    heldout_loss: bool = False


@dataclass
class DistributedConfig:
    # ddp = DistributedDataParallel (each process the whole model); fsdp = FSDP2, parameters, gradients and AdamW
    # state sharded over the processes (jepa/train/parallel.py); both under torchrun
    strategy: str = "ddp"
    # how long the other ranks wait while rank 0 evaluates or exports (a gloo barrier; NCCL's default is 10 min)
    wait_minutes: float = 120.0


@dataclass
class TrainConfig:
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    layout: LayoutConfig = field(default_factory=LayoutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    jepa: JepaConfig = field(default_factory=JepaConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir) / self.run.name

    @property
    def tokenizer_dir(self) -> str | None:
        return self.model.tokenizer or self.model.path

    @property
    def trained_predictors(self) -> int:
        """K of the predictor tokens this run trains: 0 without a JEPA term (mode regular or lambda 0) and in stp
        mode (no predictor tokens: the chords are read off the LM pass)."""
        return 0 if self.layout.mode in ("regular", "stp") or self.jepa.lam == 0 else self.layout.predictors

    def to_dict(self) -> dict:
        return _to_dict(self)


# ------------------------------------------------------------------------------------------------ typing


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("key", f.name)


def _to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {_key(f): _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [_to_dict(v) for v in obj]
    return obj


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """`value` (from YAML or an override) as type `tp`, or ValueError naming `key`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "~")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ValueError:
                pass
        raise ValueError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ValueError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return _from_dict(tp, value, key + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif tp in (int, float):
        # An int is a float too; PyYAML reads `2e-5` (no dot) as a string: the schema makes it the float it was
        # meant to be, and an override's "8" the int.
        numeric = (int,) if tp is int else (int, float)
        if isinstance(value, numeric) and not isinstance(value, bool):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    elif origin is list or tp is list:
        (item_type,) = typing.get_args(tp) or (Any,)
        if isinstance(value, str):  # an override `lora.targets=q_proj,v_proj`
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [v if item_type is Any else _coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    elif origin is dict or tp is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        raise TypeError(f"{key}: unsupported schema type {tp}")
    raise ValueError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    by_key = {_key(f): f for f in dataclasses.fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        if key not in by_key:
            close = difflib.get_close_matches(str(key), list(by_key), n=3)
            hint = (
                f" (did you mean {' or '.join(prefix + c for c in close)}?)"
                if close
                else f" (known: {', '.join(by_key)})"
            )
            raise ValueError(f"unknown config key {prefix}{key}{hint}")
        f = by_key[key]
        kwargs[f.name] = _coerce(value, hints[f.name], prefix + key)
    try:
        return cls(**kwargs)
    except ValueError as exc:  # LayoutConfig's own checks already name the key
        raise ValueError(str(exc)) from None


# ------------------------------------------------------------------------------------------------ loading


def resolve_config_path(name: str | Path) -> Path:
    """A path as given if it exists, else `configs/NAME` (with `.yaml` appended when missing)."""
    path = Path(name)
    if path.is_file():
        return path
    for candidate in (CONFIG_DIR / path, CONFIG_DIR / f"{path}.yaml"):
        if candidate.is_file():
            return candidate
    available = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"config file not found: {name} (configs/ has: {available})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key written twice in one mapping (YAML would keep the last one silently)."""

    def construct_mapping(self, node, deep=False):
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section", key_node.start_mark
                )
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path.resolve() in seen:
        raise ValueError(f"{path}: `base:` chain loops back to itself")
    try:
        data = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_UniqueKeyLoader) or {}
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 (byte {exc.start + 1})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config sections at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    base_path = path.parent / base
    if not base_path.is_file():
        raise FileNotFoundError(f"{path}: base config {base_path} not found")
    return _deep_merge(_read_yaml(base_path, seen + (path.resolve(),)), data)


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "arch":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(data: dict, override: str) -> None:
    """Set `a.b.c=value` in the raw dict; the value is read as YAML (so `null`, `true`, `[a, b]` work)."""
    if "=" not in override:
        raise ValueError(f"override {override!r} must look like section.key=value")
    dotted, raw = override.split("=", 1)
    keys = dotted.strip().split(".")
    if not all(keys):
        raise ValueError(f"override {override!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    node = data
    for i, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ValueError(f"override {override!r}: {'.'.join(keys[: i + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def config_from_dict(data: dict) -> TrainConfig:
    """Typed, validated config from a raw dict (unknown keys and wrong types raise ValueError)."""
    cfg = _from_dict(TrainConfig, data)
    validate(cfg)
    return cfg


def load_config(name: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a YAML config (bare names resolve in configs/), apply overrides, type and validate it."""
    data = _read_yaml(resolve_config_path(name))
    for override in overrides:
        apply_override(data, override)
    return config_from_dict(data)


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------------------ checks


def _check(ok: bool, key: str, message: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{key}: {message}, got {value!r}")


def validate(cfg: TrainConfig) -> None:
    """Range and consistency checks that need no file system access."""
    _check(
        bool(cfg.run.name) and "/" not in cfg.run.name and cfg.run.name not in (".", ".."), "run.name",
        "must be a non-empty name without '/' (and not '.' or '..': the run stays inside run.dir)", cfg.run.name,
    )  # fmt: skip
    _check(cfg.run.device in DEVICES, "run.device", f"must be one of {', '.join(DEVICES)}", cfg.run.device)
    _check(cfg.run.threads is None or cfg.run.threads >= 1, "run.threads", "must be >= 1", cfg.run.threads)
    _check(cfg.run.log_every >= 1, "run.log_every", "must be >= 1", cfg.run.log_every)
    _check(
        (cfg.model.path is None) != (cfg.model.arch is None),
        "model.path",
        "set exactly one of model.path (fine-tune a checkpoint) and model.arch (train from scratch)",
        cfg.model.path,
    )
    _check(cfg.model.attention in ATTENTIONS, "model.attention", f"must be one of {', '.join(ATTENTIONS)}",
           cfg.model.attention)  # fmt: skip
    _check(
        bool(cfg.data.train), "data.train", "must name the training data (a jsonl file or a directory)", cfg.data.train
    )
    _check(cfg.data.limit is None or cfg.data.limit >= 1, "data.limit", "must be >= 1", cfg.data.limit)
    _check(cfg.data.pad_to_multiple >= 1, "data.pad_to_multiple", "must be >= 1", cfg.data.pad_to_multiple)
    _check(cfg.data.pack_length >= 0, "data.pack_length", "must be >= 0 (0 = no packing)", cfg.data.pack_length)
    _check(cfg.data.prefetch >= 0, "data.prefetch", "must be >= 0 (0 = collate in the loop)", cfg.data.prefetch)
    for section in dataclasses.fields(cfg):  # inf / nan pass every range check below; a run would diverge
        values = getattr(cfg, section.name)
        for f in dataclasses.fields(values) if dataclasses.is_dataclass(values) else ():
            value = getattr(values, f.name)
            key = f"{section.name}.{f.metadata.get('key', f.name)}"
            _check(not isinstance(value, float) or math.isfinite(value), key, "must be a finite number", value)
    _check(cfg.optim.lr > 0, "optim.lr", "must be > 0", cfg.optim.lr)
    _check(cfg.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0", cfg.optim.weight_decay)
    for key in ("beta1", "beta2"):
        value = getattr(cfg.optim, key)
        _check(0 <= value < 1, f"optim.{key}", "must be in [0, 1)", value)
    _check(cfg.optim.eps > 0, "optim.eps", "must be > 0", cfg.optim.eps)
    _check(cfg.optim.clip >= 0, "optim.clip", "must be >= 0 (0 disables clipping)", cfg.optim.clip)
    s = cfg.schedule
    _check(s.kind in SCHEDULES, "schedule.kind", f"must be one of {', '.join(SCHEDULES)}", s.kind)
    _check(s.warmup_steps >= 0, "schedule.warmup_steps", "must be >= 0", s.warmup_steps)
    _check(0 <= s.warmup_ratio < 1, "schedule.warmup_ratio", "must be in [0, 1)", s.warmup_ratio)
    _check(0 <= s.min_lr_ratio <= 1, "schedule.min_lr_ratio", "must be in [0, 1]", s.min_lr_ratio)
    _check(s.epochs >= 1, "schedule.epochs", "must be >= 1", s.epochs)
    _check(s.max_steps is None or s.max_steps >= 1, "schedule.max_steps", "must be >= 1", s.max_steps)
    _check(s.stop_at_step is None or s.stop_at_step >= 1, "schedule.stop_at_step", "must be >= 1", s.stop_at_step)
    _check(s.batch_size >= 1, "schedule.batch_size", "must be >= 1", s.batch_size)
    _check(s.grad_accum >= 1, "schedule.grad_accum", "must be >= 1", s.grad_accum)
    _check(
        cfg.precision.mode in PRECISIONS,
        "precision.mode",
        f"must be one of {', '.join(PRECISIONS)}",
        cfg.precision.mode,
    )
    lo = cfg.lora
    _check(lo.rank >= 1, "lora.rank", "must be >= 1", lo.rank)
    _check(lo.alpha > 0, "lora.alpha", "must be > 0", lo.alpha)
    _check(0 <= lo.dropout < 1, "lora.dropout", "must be in [0, 1)", lo.dropout)
    j = cfg.jepa
    _check(j.gamma >= 0, "jepa.gamma", "must be >= 0", j.gamma)
    _check(j.lam >= 0, "jepa.lambda", "must be >= 0", j.lam)
    _check(j.loss in JEPA_LOSSES, "jepa.loss", f"must be one of {', '.join(JEPA_LOSSES)}", j.loss)
    _check(j.temperature > 0, "jepa.temperature", "must be > 0", j.temperature)
    _check(0 <= j.ratio <= 1, "jepa.ratio", "must be in [0, 1]", j.ratio)
    _check(
        not j.gather_negatives or j.loss == "infonce",
        "jepa.gather_negatives",
        "only applies to jepa.loss=infonce",
        j.gather_negatives,
    )
    _check(
        j.stp_layer == -1 or not cfg.model.compile,
        "jepa.stp_layer",
        "only -1 (the final norm) with model.compile (an earlier layer is captured by a hook on its block)",
        j.stp_layer,
    )
    c = cfg.checkpoint
    _check(c.every >= 0, "checkpoint.every", "must be >= 0", c.every)
    _check(c.keep_last >= 1, "checkpoint.keep_last", "must be >= 1", c.keep_last)
    _check(c.export in EXPORTS, "checkpoint.export", f"must be one of {', '.join(EXPORTS)}", c.export)
    _check(cfg.eval.every >= 0, "eval.every", "must be >= 0", cfg.eval.every)
    d = cfg.distributed
    _check(d.strategy in STRATEGIES, "distributed.strategy", f"must be one of {', '.join(STRATEGIES)}", d.strategy)
    _check(d.wait_minutes > 0, "distributed.wait_minutes", "must be > 0", d.wait_minutes)
    _check(
        not (d.strategy == "fsdp" and cfg.precision.mode == "fp16"),
        "precision.mode",
        "fp16 is not supported with distributed.strategy=fsdp (its gradient scaler would need the shards); use bf16",
        cfg.precision.mode,
    )
    _check(cfg.eval.fn is None or ":" in cfg.eval.fn, "eval.fn", "must look like package.module:factory", cfg.eval.fn)
    _check(cfg.eval.views in (None, "jepa", "step"), "eval.views", "must be jepa, step or null", cfg.eval.views)


# Keys that may differ between a checkpoint's config and the config that resumes it: where the run lives and
# runs, how it logs, checkpoints and evaluates, how long the schedule is, and the two a diverged run is told to
# change (optim.lr: the resumed schedule is rescaled to it; optim.clip: read every step). Anything else would
# change the model, the optimizer state (AdamW restores its own betas / decay) or the data order: refused.
RESUME_MAY_CHANGE = (
    "optim.lr", "optim.clip",
    "run.dir", "run.device", "run.threads", "run.log_every", "run.peak_tflops", "model.name", "model.attention",
    "model.gradient_checkpointing", "model.compile", "data.pad_to_multiple", "data.prefetch", "schedule.kind",
    "schedule.warmup_steps", "schedule.warmup_ratio", "schedule.min_lr_ratio", "schedule.epochs",
    "schedule.max_steps", "schedule.stop_at_step", "checkpoint.", "eval.", "distributed.wait_minutes",
)  # fmt: skip


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "arch":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_on_resume(saved: dict, cfg: TrainConfig) -> list[str]:
    """`key: old -> new` for every setting outside RESUME_MAY_CHANGE that differs from a checkpoint's config."""
    old, new = _flatten(saved), _flatten(cfg.to_dict())
    changed = []
    for key in sorted(set(old) | set(new)):
        if key.startswith(RESUME_MAY_CHANGE) or key == "run.name":
            continue
        if old.get(key) != new.get(key):
            changed.append(f"{key}: {old.get(key)!r} -> {new.get(key)!r}")
    return changed


def check_run_dir(cfg: TrainConfig) -> None:
    """The run directory is a writable directory, or can be made in one; else one line naming run.dir. Nothing
    is created here (the run lock makes the directory once the run starts)."""
    run_dir = cfg.run_dir
    for parent in (run_dir, *run_dir.parents):
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"run.dir: {parent} is a file, not a directory (choose another run.dir)")
    existing = next(d for d in (run_dir, *run_dir.parents) if d.exists())
    try:
        probe = existing / f".write_test.{os.getpid()}"  # one per process: ranks check at once
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        where = "" if existing == run_dir else f" cannot be made: {existing}"
        raise ValueError(f"run.dir: {run_dir}{where} is not writable ({exc.strerror})") from None


def check_paths(cfg: TrainConfig) -> None:
    """Missing model directory or data: FileNotFoundError naming the key, the path and what to put there."""
    if cfg.model.path is not None:
        path = Path(cfg.model.path)
        what = cfg.model.name or "an HF-format checkpoint"
        if not path.is_dir() or not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.path: {path} {'has no config.json' if path.is_dir() else 'not found'}: put {what} there "
                f"({HF_MODEL_FILES}); this project never downloads models"
            )
    dataset_class(cfg.layout.mode).check_paths(cfg.data, cfg.tokenizer_dir)

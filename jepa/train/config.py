"""Training configuration: a dataclass schema, YAML loading, typed `dotted.key=value` overrides, validation.

Every error is one line naming the key (``optim.lr: ...``) or the path, raised as ValueError or
FileNotFoundError; `train.py` prints it as ``error: ...`` and exits 2.

A YAML file may start with ``base: other.yaml`` (resolved next to it): the other file is loaded first and this
one's keys are merged over it. Relative data and model paths are relative to the working directory (the
repository root in every example). A bare config name (``gpt2_reversal_small.yaml``) resolves in ``./configs/``,
then in the configs the installed package ships.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from jepa.data.datasets import DataConfig, dataset_class
from jepa.data.layouts import MODES, LayoutConfig
from jepa.losses import JEPA_LOSSES
from jepa.settings import Section, setting, yaml_key

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"  # a checkout's configs/
PACKAGED_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # what a wheel ships (setup.py copies it)


def config_dirs() -> list[Path]:
    """Where a bare config name is looked for, in order: ./configs, the installed package's, the checkout's."""
    dirs = [Path.cwd() / "configs", PACKAGED_CONFIG_DIR, CONFIG_DIR]
    return [d for i, d in enumerate(dirs) if d.is_dir() and d.resolve() not in [e.resolve() for e in dirs[:i]]]


HF_MODEL_FILES = "config.json, model.safetensors, tokenizer.json, tokenizer_config.json"
SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("fp32", "bf16", "fp16", "pure_bf16")
EXPORTS = ("hf", "adapter", "none")
DEVICES = ("auto", "cpu", "cuda")
ATTENTIONS = ("auto", "sdpa", "flex")
INIT_ON = ("cpu", "device")
STRATEGIES = ("ddp", "fsdp")


@dataclass
class RunConfig(Section):
    section: ClassVar[str] = "run"
    name: str = setting("run", "the run directory is `run.dir/run.name`", resume=True)
    dir: str = setting("runs", "the folder that holds the run directory", resume=True)
    seed: int = setting(42, "python / numpy / torch seeds and the data order")
    device: str = setting(
        "auto", "auto = cuda when available (torchrun: cuda:LOCAL_RANK), else cpu; or cpu, cuda", resume=True
    )
    threads: int | None = setting(None, "torch.set_num_threads on CPU; null = torch's default", resume=True)
    log_every: int = setting(
        1, "metrics.jsonl gets every optimizer step; the progress bar refreshes every N steps", resume=True
    )
    peak_tflops: float | None = setting(
        None, "the device's peak for MFU; null = a table of known GPUs (no MFU on CPU)", resume=True
    )
    loggers: list[str] = setting(
        doc="where metrics go besides metrics.jsonl: jsonl, tensorboard, wandb, mlflow (jepa/train/trackers.py)",
        factory=lambda: ["jsonl"],
        resume=True,
    )
    project: str = setting("jepa", "the W&B project / MLflow experiment the run logs into", resume=True)
    profile: dict[str, int] | None = setting(
        None, "{start: S, steps: N}: a torch.profiler trace of steps S+1..S+N in RUN_DIR/profile/", resume=True
    )

    def check(self) -> None:
        super().check()
        from jepa.train.trackers import TRACKERS

        unknown = [name for name in self.loggers if name not in TRACKERS]
        self.require(not unknown, "loggers", f"{unknown[:1]} is not one of {tuple(TRACKERS)}")
        window = self.profile
        self.require(
            window is None or (set(window) == {"start", "steps"} and window["start"] >= 0 and window["steps"] >= 1),
            "profile",
            "must be {start: S >= 0, steps: N >= 1}",
        )
        self.require(
            bool(self.name) and "/" not in self.name and self.name not in (".", ".."),
            "name",
            "must be a non-empty name without '/' (and not '.' or '..': the run stays inside run.dir)",
        )
        self.require_choice("device", DEVICES)
        self.require(self.threads is None or self.threads >= 1, "threads", "must be >= 1")
        self.require(self.log_every >= 1, "log_every", "must be >= 1")


@dataclass
class ModelConfig(Section):
    section: ClassVar[str] = "model"
    path: str | None = setting(None, "an HF-format directory (config.json + model.safetensors) to fine-tune")
    name: str = setting("", "what belongs in `path` (named in the error when the directory is missing)", resume=True)
    arch: dict[str, Any] | None = setting(None, "instead of `path`: an HF config.json dict, trained from scratch")
    tokenizer: str | None = setting(
        None, "directory with tokenizer.json; default `path` (reversal data has its own vocabulary)"
    )
    gradient_checkpointing: bool = setting(
        False, "recompute each block in the backward pass (activation checkpointing)", resume=True
    )
    attention: str = setting(
        "auto",
        "auto = sdpa until FlexAttention has been checked on a GPU; sdpa; flex = "
        "FlexAttention with a block mask (CUDA only)",
        resume=True,
    )
    init_on: str = setting(
        "cpu",
        "where a model.arch model's random weights are drawn: cpu (the same numbers on every device) or device "
        "(on run.device: seconds instead of minutes for a 1B model on a GPU, other numbers than the CPU's)",
        resume=True,
    )
    compile: bool = setting(
        False,
        "torch.compile each block (fullgraph, in place: the state dict's names are "
        "unchanged); fixed shapes (data.pack_length, pad_to_multiple) avoid recompiles; CPU "
        "needs a C++ compiler",
        resume=True,
    )

    def check(self) -> None:
        super().check()
        self.require(
            (self.path is None) != (self.arch is None),
            "path",
            "set exactly one of model.path (fine-tune a checkpoint) and model.arch (train from scratch)",
        )
        self.require_choice("attention", ATTENTIONS)
        self.require_choice("init_on", INIT_ON)


@dataclass
class OptimConfig(Section):
    section: ClassVar[str] = "optim"
    lr: float = setting(2e-5, "peak learning rate (on resume the schedule is rescaled to a new one)", resume=True)
    weight_decay: float = setting(0.0, "AdamW decay, applied to matrices only (not biases, norms, predictor tokens)")
    beta1: float = setting(0.9, "AdamW beta1")
    beta2: float = setting(0.999, "AdamW beta2")
    eps: float = setting(1e-8, "AdamW epsilon")
    clip: float = setting(1.0, "max global gradient norm; 0 disables clipping", resume=True)

    def check(self) -> None:
        super().check()
        self.require(self.lr > 0, "lr", "must be > 0")
        self.require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        for key in ("beta1", "beta2"):
            self.require(0 <= getattr(self, key) < 1, key, "must be in [0, 1)")
        self.require(self.eps > 0, "eps", "must be > 0")
        self.require(self.clip >= 0, "clip", "must be >= 0 (0 disables clipping)")


@dataclass
class ScheduleConfig(Section):
    section: ClassVar[str] = "schedule"
    kind: str = setting("linear", "constant | linear (decay to min_lr_ratio) | cosine", resume=True)
    warmup_steps: int = setting(0, "linear warm-up from 0; overrides warmup_ratio when > 0", resume=True)
    warmup_ratio: float = setting(0.0, "warm-up as a fraction of the total optimizer steps", resume=True)
    min_lr_ratio: float = setting(0.0, "final lr = lr * min_lr_ratio (linear, cosine)", resume=True)
    epochs: int = setting(1, "passes over the training rows", resume=True)
    max_steps: int | None = setting(None, "total optimizer steps; overrides epochs", resume=True)
    stop_at_step: int | None = setting(
        None, "end this invocation at this step (checkpointed); the schedule is unchanged", resume=True
    )
    batch_size: int = setting(4, "rows per micro-batch per process")
    grad_accum: int = setting(1, "micro-batches per optimizer step; global batch = batch_size * grad_accum * processes")

    def check(self) -> None:
        super().check()
        self.require_choice("kind", SCHEDULES)
        self.require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        self.require(0 <= self.warmup_ratio < 1, "warmup_ratio", "must be in [0, 1)")
        self.require(0 <= self.min_lr_ratio <= 1, "min_lr_ratio", "must be in [0, 1]")
        self.require(self.epochs >= 1, "epochs", "must be >= 1")
        self.require(self.max_steps is None or self.max_steps >= 1, "max_steps", "must be >= 1")
        self.require(self.stop_at_step is None or self.stop_at_step >= 1, "stop_at_step", "must be >= 1")
        self.require(self.batch_size >= 1, "batch_size", "must be >= 1")
        self.require(self.grad_accum >= 1, "grad_accum", "must be >= 1")


@dataclass
class PrecisionConfig(Section):
    section: ClassVar[str] = "precision"
    mode: str = setting(
        "fp32", "fp32 | bf16 (autocast) | fp16 (autocast + GradScaler) | pure_bf16 (bf16 weights, no fp32 master copy)"
    )

    def check(self) -> None:
        super().check()
        self.require_choice("mode", PRECISIONS)


@dataclass
class LoRAConfig(Section):
    section: ClassVar[str] = "lora"
    enabled: bool = setting(False, "train low-rank adapters on frozen weights instead of every weight")
    rank: int = setting(16, "adapter rank r")
    alpha: float = setting(32.0, "the update is scaled by alpha / rank")
    dropout: float = setting(0.0, "dropout on the adapter's input only")
    targets: list[str] = setting(doc="module names; empty = the architecture's `lora_targets`", factory=list)

    def check(self) -> None:
        super().check()
        self.require(self.rank >= 1, "rank", "must be >= 1")
        self.require(self.alpha > 0, "alpha", "must be > 0")
        self.require(0 <= self.dropout < 1, "dropout", "must be in [0, 1)")


@dataclass
class JepaConfig(Section):
    section: ClassVar[str] = "jepa"
    gamma: float = setting(1.0, "weight of L_LM")
    lam: float = setting(0.0, "weight of L_JEPA (attribute `lam`)", key="lambda")
    loss: str = setting("cosine", "the JEPA loss: a name in jepa.losses.JEPA_LOSSES (cosine, l2, mse, infonce)")
    temperature: float = setting(0.07, "infonce only: the softmax temperature")
    ratio: float = setting(
        1.0, "jepa_ratio (docs/method.md): per micro-batch, the JEPA term with this probability, else LM rows only"
    )
    predictor_seed: int = setting(0, "init of the K predictor-token embeddings")
    gather_negatives: bool = setting(False, "infonce under DDP: other ranks' targets as extra negatives (no gradient)")
    stp_layer: int = setting(
        -1,
        "stp mode: the hidden states the chords are read from, as Hugging Face's "
        "`hidden_states` index (0 = the embeddings, k = after block k, -1 = after the final "
        "norm: the released STP runs')",
    )

    def check(self) -> None:
        super().check()
        self.require(self.gamma >= 0, "gamma", "must be >= 0")
        self.require(self.lam >= 0, "lam", "must be >= 0")
        self.require_choice("loss", tuple(JEPA_LOSSES))
        self.require(self.temperature > 0, "temperature", "must be > 0")
        self.require(0 <= self.ratio <= 1, "ratio", "must be in [0, 1]")
        self.require(
            not self.gather_negatives or self.loss == "infonce", "gather_negatives", "only applies to jepa.loss=infonce"
        )


@dataclass
class CheckpointConfig(Section):
    section: ClassVar[str] = "checkpoint"
    every: int = setting(0, "save run_dir/step_N every N optimizer steps (0 = only at the end)", resume=True)
    keep_last: int = setting(2, "older step_N directories are deleted", resume=True)
    resume: str = setting(
        "auto", "auto = newest complete step_N of this run if any; none = fresh; or a step_N path", resume=True
    )
    export: str = setting(
        "hf", "at the end, run_dir/final: hf = HF directory (LoRA merged), adapter = adapter only, none", resume=True
    )

    def check(self) -> None:
        super().check()
        self.require(self.every >= 0, "every", "must be >= 0")
        self.require(self.keep_last >= 1, "keep_last", "must be >= 1")
        self.require_choice("export", EXPORTS)


@dataclass
class EvalConfig(Section):
    section: ClassVar[str] = "eval"
    every: int = setting(0, "call the evaluation hook every N optimizer steps (0 = never) and at the end", resume=True)
    fn: str | None = setting(
        None,
        '"module:factory"; factory(cfg) returns a callable (model, predictors, step) '
        "-> dict; the hooks of jepa/eval/hooks.py: reversal, gsm8k, task, views",
        resume=True,
    )
    data: str | None = setting(
        None, "held-out data of the hooks: reversal dir with valid.json / chat jsonl; default data.train", resume=True
    )
    limit: int | None = setting(None, "evaluate the first N examples (per probe split for reversal)", resume=True)
    max_new_tokens: int | None = setting(None, "generation hooks: null = the task's or protocol's default", resume=True)
    views: str | None = setting(
        None,
        "generation hooks: also the view diagnostics (cosine, effective ranks) of the "
        "same records with the views this layout mode cuts (jepa | step), whatever "
        "layout.mode trains",
        resume=True,
    )
    heldout_loss: bool = setting(
        False,
        "chat hooks: also the held-out LM loss (teacher-forced CE per answer token) "
        "of the same records, laid out as regular rows",
        resume=True,
    )

    def check(self) -> None:
        super().check()
        self.require(self.every >= 0, "every", "must be >= 0")
        self.require(self.fn is None or ":" in self.fn, "fn", "must look like package.module:factory")
        self.require(self.views in (None, "jepa", "step"), "views", "must be jepa, step or null")


@dataclass
class DistributedConfig(Section):
    section: ClassVar[str] = "distributed"
    strategy: str = setting(
        "ddp",
        "ddp = DistributedDataParallel (each process the whole model); fsdp = FSDP2, "
        "parameters, gradients and AdamW state sharded over the processes; both under torchrun",
    )
    wait_minutes: float = setting(
        120.0,
        "how long the other ranks wait while rank 0 evaluates, exports or checkpoints (NCCL's default is 10 min)",
        resume=True,
    )

    def check(self) -> None:
        super().check()
        self.require_choice("strategy", STRATEGIES)
        self.require(self.wait_minutes > 0, "wait_minutes", "must be > 0")


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
        return self.layout.predictors if MODES[self.layout.mode].predictor_tokens and self.jepa.lam > 0 else 0

    def sections(self) -> list[Any]:
        """The section objects, in schema order."""
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def check(self) -> None:
        """Every section's own checks, then the ones that span sections; ValueError naming the key."""
        for section in self.sections():
            if isinstance(section, Section):
                section.check()
        _check(
            self.jepa.stp_layer == -1 or not self.model.compile,
            "jepa.stp_layer",
            "only -1 (the final norm) with model.compile (an earlier layer is captured by a hook on its block)",
            self.jepa.stp_layer,
        )
        _check(
            not (self.distributed.strategy == "fsdp" and self.precision.mode == "fp16"),
            "precision.mode",
            "fp16 is not supported with distributed.strategy=fsdp (its gradient scaler would need the shards); use "
            "bf16",
            self.precision.mode,
        )

    def to_dict(self) -> dict[str, Any]:
        return _to_dict(self)


# ------------------------------------------------------------------------------------------------ typing


def _to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {yaml_key(f): _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
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
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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


def _from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    by_key = {yaml_key(f): f for f in dataclasses.fields(cls) if f.init}
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
    """A path as given if it exists, else NAME (with `.yaml` appended when missing) in the first of `config_dirs`
    that has it."""
    path = Path(name)
    if path.is_file():
        return path
    for folder in config_dirs():
        for candidate in (folder / path, folder / f"{path}.yaml"):
            if candidate.is_file():
                return candidate
    available = sorted({p.name for folder in config_dirs() for p in folder.glob("*.yaml")})
    raise FileNotFoundError(f"config file not found: {name} (configs/ has: {', '.join(available)})")


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """yaml.safe_load that refuses a key written twice in one mapping (YAML would keep the last one silently)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        keys = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice in one section", key_node.start_mark
                )
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
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


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "arch":
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(data: dict[str, Any], override: str) -> None:
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


def config_from_dict(data: dict[str, Any]) -> TrainConfig:
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
    """Range and consistency checks that need no file system access (`TrainConfig.check`)."""
    cfg.check()


def resume_may_change() -> set[str]:
    """The dotted keys a resumed run may set differently from its checkpoint's config: the fields declared with
    `resume=True` (jepa/settings.py), plus run.name (a copied run directory resumes under its new name)."""
    keys = {"run.name"}
    hints = typing.get_type_hints(TrainConfig)
    for section in dataclasses.fields(TrainConfig):
        keys |= {f"{section.name}.{yaml_key(f)}" for f in dataclasses.fields(hints[section.name])
                 if f.metadata.get("resume", False)}  # fmt: skip
    return keys


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "arch":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_on_resume(saved: dict[str, Any], cfg: TrainConfig) -> list[str]:
    """`key: old -> new` for every setting a resume may not change (`resume_may_change`) that differs from a
    checkpoint's config. A key the schema no longer has (or not yet had) counts as changed."""
    old, new = _flatten(saved), _flatten(cfg.to_dict())
    may_change = resume_may_change()
    changed = []
    for key in sorted(set(old) | set(new)):
        if key in may_change:
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


# ------------------------------------------------------------------------------------------------ reference


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        value = f.default
    return "`" + yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip() + "`"


def config_reference() -> str:
    """docs/config.md: every key of the schema (section by section, in schema order) with its type, default,
    meaning and whether a resumed run may change it, read off the `setting(...)` declarations. `make docs` writes
    it; tests/train/test_config.py fails when the file is out of date."""
    lines = [
        "# Config reference",
        "",
        "Generated from the schema (`jepa/train/config.py`, `jepa/data/datasets.py` `DataConfig`, "
        "`jepa/data/layouts.py` `LayoutConfig`) by `make docs`; do not edit by hand. A YAML file sets any of these "
        "keys by section (`optim: {lr: 1e-4}`), the command line by dotted key (`optim.lr=1e-4`). *Resume*: whether "
        "a run resumed from a checkpoint may set the key differently (`yes`), or refuses the change (`no`: it would "
        "change the model, the optimizer state or the data order). `run.name` may always change.",
    ]
    hints = typing.get_type_hints(TrainConfig)
    for section_field in dataclasses.fields(TrainConfig):
        cls = hints[section_field.name]
        lines += ["", f"## {section_field.name}", "", "| key | type | default | resume | meaning |",
                  "|---|---|---|---|---|"]  # fmt: skip
        section_hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            doc = f.metadata.get("doc", "").replace("|", "\\|")
            if not doc:
                raise ValueError(f"{section_field.name}.{yaml_key(f)}: declared without a doc (use setting(...))")
            type_name = _type_name(section_hints[f.name]).replace("|", "\\|")
            resume = "yes" if f.metadata.get("resume") else "no"
            lines.append(
                f"| `{section_field.name}.{yaml_key(f)}` | {type_name} | {_default_text(f)} | {resume} | {doc} |"
            )
    return "\n".join(lines) + "\n"

"""The run configuration: one YAML file per run, validated by pydantic.

Overrides from the command line use ``key.sub=value``; the value is parsed as
YAML, so ``train.epochs=3`` is an int and ``adversary.capture=true`` a bool.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from splitleak.names import ATTACK_NAMES, BUILTIN_ARCHS, DATASET_NAMES, DEFENSE_NAMES

__all__ = [
    "ConfigError",
    "RunConfig",
    "apply_overrides",
    "apply_threads",
    "config_digest",
    "dump_config",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"


class ConfigError(ValueError):
    """A config that cannot be used; the message lists every problem by key path."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _registered(family: str, names: tuple[str, ...]):
    """Returns a validator that accepts only the names of that family's implementations."""

    def check(name: str) -> str:
        if name not in names:
            raise ValueError(f"unknown {family} {name!r}; known: {', '.join(names)}")
        return name

    return AfterValidator(check)


DatasetName = Annotated[str, _registered("dataset", DATASET_NAMES)]
DefenseName = Annotated[str, _registered("defense", DEFENSE_NAMES)]
AttackName = Annotated[str, _registered("attack", ATTACK_NAMES)]


class RunSection(_Section):
    id: str = Field("demo", min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    dir: Path = Path("runs/demo")
    seed: int = Field(0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # CPU threads torch may use in each process (0: torch's default, every core). Three
    # processes sharing a small machine run fastest with one each (docs/benchmarks.md).
    torch_threads: int = Field(1, ge=0)
    # Every process checkpoints its state atomically every checkpoint_every training steps and at
    # every epoch end, so that --resume continues a run after any of them died (0: never).
    checkpoint_every: int = Field(100, ge=0)
    # A run that `splitleak demo` (or a sweep) completes drops its checkpoints: they only serve --resume
    # of an unfinished run, and the adversary's hold every vector it has seen (GBs on wide cuts).
    keep_checkpoints: bool = False


class SyntheticSection(_Section):
    samples: int = Field(2000, ge=2)
    dim: int = Field(32, ge=1)
    classes: int = Field(10, ge=2)
    # Distance between class means relative to the unit noise: higher is easier.
    separation: float = Field(3.0, gt=0)


class DataSection(_Section):
    name: DatasetName = "digits"
    # The dataset's files: a directory (mnist, fashion_mnist, cifar10, image_folder, npz as x.npy
    # and y.npy) or a file (csv; npz).
    path: Path | None = None
    test_fraction: float = Field(0.2, gt=0, lt=1)
    # Use only the first max_samples samples of the dataset (by sample id).
    max_samples: int | None = Field(None, ge=2)
    # Resize images to image_size x image_size (bilinear); image_folder needs it. E.g. 32 for
    # MNIST at the paper's 32x32.
    image_size: int | None = Field(None, ge=1)
    # image_folder: 1 (grayscale) or 3 (RGB) channels.
    image_channels: Literal[1, 3] = 3
    # csv: the column that holds the label (the feature party never parses it).
    label_column: str = "label"
    # csv, npz, image_folder: the number of classes (public; the feature party never reads a label).
    num_classes: int | None = Field(None, ge=2)
    synthetic: SyntheticSection = SyntheticSection()

    @model_validator(mode="after")
    def _files_named(self) -> "DataSection":
        if self.name in ("mnist", "fashion_mnist", "cifar10", "csv", "npz", "image_folder") and self.path is None:
            raise ValueError(f"data.path must name the {self.name} files")
        if self.name in ("csv", "npz", "image_folder") and self.num_classes is None:
            raise ValueError(f"data.num_classes must be set for {self.name} data (the number of classes is public)")
        if self.name == "image_folder" and self.image_size is None:
            raise ValueError("data.image_size must be set for image_folder data (images are resized to it)")
        return self


class ModelSection(_Section):
    # The whole model: a built-in (resnet18, simplenet) or "package.module:callable" on PYTHONPATH,
    # called as callable(input_shape=..., num_classes=..., **options); its top-level children run
    # in order (docs/models.md). Unset: the built-in bottom below, cut after it, with top_layers
    # linear layers on top.
    arch: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?$")
    # With arch: the name of the child after which the model is cut (splitleak cuts lists them).
    cut: str | None = None
    # With arch: keyword arguments of the model's callable (e.g. {width: 0.25}).
    options: dict[str, Any] = Field(default_factory=dict)
    bottom: Literal["mlp", "cnn"] = "mlp"
    bottom_hidden: list[int] = Field(default_factory=lambda: [128])
    cnn_channels: list[int] = Field(default_factory=lambda: [32, 64])
    # Width of the smashed data: the cut layer.
    cut_dim: int = Field(64, ge=1)
    # Number of linear layers in the label party's top model (1 to 3).
    top_layers: int = Field(1, ge=1, le=3)
    top_hidden: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _arch_known_and_cut(self) -> "ModelSection":
        if self.arch is None:
            if self.cut is not None or self.options:
                raise ValueError("model.cut and model.options need model.arch")
            return self
        if ":" not in self.arch and self.arch not in BUILTIN_ARCHS:
            raise ValueError(
                f"unknown model.arch {self.arch!r}; built-in: {', '.join(BUILTIN_ARCHS)}, "
                "or 'package.module:callable' for your own"
            )
        if self.cut is None:
            raise ValueError("model.cut must name the child after which the model is cut (splitleak cuts lists them)")
        return self


class TrainSection(_Section):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class DefenseSection(_Section):
    name: DefenseName = "none"
    # DP-SGD: target epsilon over the whole run, delta, and per-sample clip norm.
    epsilon: float | None = Field(None, gt=0)
    delta: float = Field(1e-5, gt=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    # Gradient compression: fraction of each returned gradient's entries zeroed.
    fraction: float | None = Field(None, ge=0, lt=1)
    # Marvell: power-constraint scale s.
    scale: float | None = Field(None, ge=0)
    # dp_sgd: also noise the returned cut-layer gradients (false: Opacus on the
    # top model only, the paper's setting, whose epsilon then covers the top model only).
    cut_grad_noise: bool = True
    # label_dp: the prior RRWithPrior randomises within. uniform: K-ary randomized response; learned:
    # the training set in `stages` parts, each stage's prior from the top model trained on the earlier
    # stages' randomised labels (Ghazi et al. 2021).
    prior: Literal["uniform", "learned"] = "uniform"
    stages: int = Field(2, ge=1, le=16)
    # Mixup within each batch on the label party's side (smashed data and label distributions), with
    # lambda ~ Beta(alpha, alpha); 0 is off. With label_dp (the authors ran it with alpha 0.2) or none.
    mixup_alpha: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _strength_given(self) -> "DefenseSection":
        needs = {"dp_sgd": "epsilon", "label_dp": "epsilon", "grad_compression": "fraction", "marvell": "scale"}
        key = needs.get(self.name)
        if key and getattr(self, key) is None:
            raise ValueError(f"defense {self.name} needs {key}")
        # A sweep's no-defense baseline keeps the label_dp keys of its config: they are ignored there.
        if self.prior == "learned" and self.name not in ("label_dp", "none"):
            raise ValueError(f"prior: learned is a label_dp setting, not one of {self.name}")
        if self.mixup_alpha > 0 and self.name not in ("label_dp", "none"):
            raise ValueError(
                f"mixup_alpha applies with label_dp or none; {self.name} works on each sample's own gradient "
                "or label, which mixup blends with another sample's"
            )
        return self


class LabelPartySection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    device: str = "cpu"
    # Policy: return predictions from Infer, or only an acknowledgement.
    return_predictions: bool = False
    # Exit once the feature party has sent Finish (demo and compose runs).
    exit_after_finish: bool = True
    defense: DefenseSection = DefenseSection()
    # Replies kept for idempotent replay of recent training steps, and of recent inference calls.
    replay_window: int = Field(64, ge=1)
    infer_window: int = Field(256, ge=1)
    # Smashed values beyond this magnitude are refused (INVALID_ARGUMENT) before they touch the model.
    max_input_abs: float = Field(1e6, gt=0)
    # A server started for a run exits once its peer has been silent this long (0: never, for
    # long-lived servers).
    idle_exit_s: float = Field(600.0, ge=0)


class FeaturePartySection(_Section):
    # Where the feature party sends its calls: the adversary proxy or the label party.
    label_party_address: str = "127.0.0.1:50052"
    device: str = "cpu"
    deadline_s: float = Field(60.0, gt=0)
    # Calls that fail UNAVAILABLE or DEADLINE_EXCEEDED are retried, with backoff, for this long: long
    # enough to ride out a restart of the other side.
    retry_s: float = Field(300.0, ge=0)
    # Wire dtype of the smashed data (float32 keeps training bit-exact).
    wire_dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    # Embed the attacker's known samples in eval mode after training and hand
    # them to the local adversary (side channel for the inference-phase attack).
    embed_known: bool = True
    progress: bool = True


class AttackSection(_Section):
    # Attacks that run after every round and at every epoch end (registry names).
    per_round: list[AttackName] = Field(default_factory=lambda: ["distance", "tracking"])
    per_epoch: list[AttackName] = Field(
        default_factory=lambda: [
            "distance",
            "prototype",
            "kmeans_seeded",
            "kmeans_hungarian",
            "cross_kmeans",
            "norm",
            "direction",
            "random",
        ]
    )
    # At the end of the inference pass, on its smashed data.
    inference: list[AttackName] = Field(
        default_factory=lambda: ["distance", "kmeans_seeded", "train_centroids", "train_knn", "random"]
    )
    # The cumulative attacker: one label estimate per training sample from every round,
    # epoch and channel seen so far (docs/attacks.md). Its accuracy is the run's headline.
    cumulative: bool = True
    # Half-life, in rounds, of the class prototypes that follow the moving model.
    tracking_halflife: float = Field(8.0, gt=0)
    # While new samples keep arriving (the first epoch), refit every view once the samples
    # seen have grown by this factor since the last fit.
    refit_growth: float = Field(1.25, gt=1)
    # Training-phase attack (name.data) whose labels of the last epoch name the training
    # smashed data for train_centroids and train_knn.
    labeller: str = Field("cumulative.both", pattern=r"^[a-z_]+\.(grad|smashed|both)$")
    # Vectors wider than pca_above are reduced to pca_dim components: one PCA per data kind per
    # epoch (randomized SVD on at most pca_fit_samples rows), rounds projected on the last axes.
    pca_above: int = Field(256, ge=1)
    pca_dim: int = Field(64, ge=1)
    pca_fit_samples: int = Field(10_000, ge=2)
    # Lloyd iterations run to convergence (no assignment changes, or the centroids move
    # less than kmeans_tol x the mean feature variance, as scikit-learn's KMeans);
    # kmeans_iters only caps a run that never settles.
    kmeans_iters: int = Field(300, ge=1)
    kmeans_tol: float = Field(1e-4, ge=0)
    # k-means++ restarts of kmeans_hungarian (the best of them is kept).
    kmeans_restarts: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _labeller_runs(self) -> "AttackSection":
        if self.labeller == "cumulative.both" and not self.cumulative:
            raise ValueError(
                "labeller cumulative.both needs cumulative: true (or name an attack, e.g. kmeans_seeded.grad)"
            )
        return self


class AdversarySection(_Section):
    # proxy: its own process the feature party points at; interceptor: inside
    # the feature party's channel; off: no tap (benchmarks).
    mode: Literal["proxy", "interceptor", "off"] = "proxy"

    @field_validator("mode", mode="before")
    @classmethod
    def _off_is_off(cls, value):
        # YAML 1.1 reads a bare `off` as false: `mode: off` means off.
        return "off" if value is False else value

    host: str = "127.0.0.1"
    port: int = Field(50052, ge=0, le=65535)
    upstream: str = "127.0.0.1:50051"
    device: str = "cpu"
    capture: bool = False
    # CSV of sample_id,label: the attacker's prior knowledge.
    known_labels: Path | None = None
    known_per_class: int = Field(1, ge=1)
    # Evaluation only: "dataset" (labels from the data section) or a CSV path.
    ground_truth: str | None = None
    queue_size: int = Field(256, ge=1)
    # ... and at most this many megabytes of exchanges.
    queue_mb: int = Field(1024, ge=1)
    attacks: AttackSection = AttackSection()
    exit_after_finish: bool = True
    leak_threshold: float = Field(0.95, gt=0, le=1)


class SweepSection(_Section):
    """What `splitleak sweep` varies when the command line does not say."""

    defense: DefenseName | None = None
    values: list[float] = Field(default_factory=list)


class TLSSection(_Section):
    cert: Path | None = None
    key: Path | None = None
    # CA that signs the peer's certificate; set on both sides for mutual TLS.
    ca: Path | None = None


class TransportSection(_Section):
    max_message_mb: int = Field(64, ge=1)
    keepalive_s: int = Field(30, ge=1)
    tls: TLSSection = TLSSection()
    # Bearer token required on every call when set.
    token: str | None = None


class RunConfig(_Section):
    run: RunSection = RunSection()
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    train: TrainSection = TrainSection()
    label_party: LabelPartySection = LabelPartySection()
    feature_party: FeaturePartySection = FeaturePartySection()
    adversary: AdversarySection = AdversarySection()
    transport: TransportSection = TransportSection()
    sweep: SweepSection = SweepSection()

    @model_validator(mode="after")
    def _a_stage_per_epoch(self) -> "RunConfig":
        defense = self.label_party.defense
        if defense.name == "label_dp" and defense.prior == "learned" and defense.stages > self.train.epochs:
            raise ValueError(
                f"label_party.defense.stages: {defense.stages} stages need at least as many epochs "
                f"(train.epochs is {self.train.epochs}); each stage starts at an epoch"
            )
        return self

    @model_validator(mode="after")
    def _marvell_is_binary(self) -> "RunConfig":
        if self.label_party.defense.name == "marvell":
            from splitleak.data import load_dataset

            classes = load_dataset(self.data, self.run.seed).num_classes
            if classes != 2:
                raise ValueError(
                    f"label_party.defense.name: marvell protects binary tasks only; "
                    f"{self.data.name} has {classes} classes"
                )
        return self


def _key_paths(section: type[BaseModel], prefix: str = "") -> list[str]:
    """Returns the dotted path of every key a section takes, its subsections' keys included."""
    paths = []
    for name, field in section.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            paths += _key_paths(field.annotation, f"{path}.")
    return paths


def _unknown_key_hint(loc: tuple) -> str:
    """Returns ' (did you mean ...?)' for a key no section takes: a near spelling in the same section,
    else the keys of that name elsewhere (a top-level `defense` belongs under label_party), else ''."""
    known = _key_paths(RunConfig)
    parent, key = ".".join(str(p) for p in loc[:-1]), str(loc[-1])
    siblings = [p.rsplit(".", 1)[-1] for p in known if p.rpartition(".")[0] == parent]
    near = [f"{parent}.{m}" if parent else m for m in difflib.get_close_matches(key, siblings, n=2, cutoff=0.75)]
    elsewhere = [p for p in known if p.rsplit(".", 1)[-1] == key]
    found = near or elsewhere
    return f" (did you mean {' or '.join(found)}?)" if found else ""


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        value = e.get("input")
        if e["type"] == "extra_forbidden":
            msg = "not a key here" + _unknown_key_hint(e["loc"])
        elif isinstance(value, (str, int, float, bool)) and e["type"] not in ("value_error", "missing"):
            msg += f" (got {value!r})"
        lines.append(f"  {path}: {msg}" if path else f"  {msg}")
    return "invalid config:\n" + "\n".join(lines)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"invalid override {dotted!r}: {key} is not a section")
        node = child
    node[keys[-1]] = value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Returns tree with each ``key.sub=value`` override applied (value parsed as YAML)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"invalid override {item!r}: expected key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"invalid override {item!r}: the value is not valid YAML ({problem})") from None
        _set_path(tree, key.strip(), value)
    return tree


def parse_config(tree: dict[str, Any]) -> RunConfig:
    """Returns the validated config; raises ConfigError listing every problem."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err)) from None


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Returns the config in a YAML file (the demo config when path is None), with overrides."""
    path = Path(path) if path else DEFAULT_CONFIG
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config {path} must be a mapping of sections")
    return parse_config(apply_overrides(tree, overrides or []))


def dump_config(config: RunConfig) -> str:
    """Returns the config as YAML text that load_config reads back to the same config."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def apply_threads(config: RunConfig) -> None:
    """Limits torch's CPU threads in this process as run.torch_threads says."""
    import torch

    if config.run.torch_threads:
        torch.set_num_threads(config.run.torch_threads)


def config_digest(config: RunConfig) -> str:
    """Returns a digest of the sections both parties must agree on."""
    shared = config.model_dump(mode="json", include={"data", "model", "train"})
    shared["run"] = {"seed": config.run.seed}
    shared["data"].pop("path")  # each host may keep its files elsewhere
    return hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()[:16]

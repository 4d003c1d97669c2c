"""The ``spec`` of a training task: what the client sends (``TaskSpec``, ``POST /tasks``) and
what the service stores once it registered the task (``ResolvedSpec``).

Only what can be checked without the database is checked in ``TaskSpec`` (names, ranges, palette
coverage); registration checks names against existing classes and resolves what depends on the
service's state (the method's default, the lineage's architecture, the task's place in the
queue, the global indices of its classes) into a ``ResolvedSpec``. That is built once, stored as
the task row's JSON, and read back as attributes everywhere else (``ResolvedSpec.of(task)``).

Defaults that belong to the engine are taken from ``learning.config``, never restated: epochs and
batch size default to ``TrainConfig``'s, and an optimiser setting or loss weight left out (None)
means the engine's default when the worker builds the step's ``StepConfig``.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from services.config import ENV_PREFIX, Settings, SettingsError
from services.data.formats.base import FORMAT_NAMES, OTHER_LABELS, ImportOptions
from services.data.upload import UploadRejected, listed
from services.db.models import Task
from services.errors import describe_validation_errors
from services.labels import BACKGROUND_NAME, MAX_CLASS_INDEX
from services.learning.config import (
    BATCHNORM_POLICIES,
    DEFAULT_BATCHNORM,
    DEFAULT_LAMBDA_D,
    DEFAULT_LAMBDA_E,
    DEFAULT_LAMBDA_POD,
    DEFAULT_LAMBDA_U,
    DEFAULT_LD_FORM,
    LD_FORMS,
    WEIGHT_NAMES,
    StepConfig,
    TrainConfig,
)
from services.learning.names import ARCHITECTURES, DEFAULT_ARCHITECTURE, DEFAULT_IMAGE_SIZE, SERVICE_METHODS
from services.text import NAME_RULE, hidden_character

Colour = tuple[int, int, int]
# The validation context of a stored row read back: the client's rules (names, methods, palette)
# held when it was registered, and may have changed since; only the types are checked again.
STORED = {"stored": True}


def _client_rules(info: ValidationInfo) -> bool:
    return not (info.context or {}).get("stored")


class Hyperparameters(BaseModel):
    """Optimiser settings and loss weights; None = the engine's default."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lr: float | None = Field(None, gt=0, le=10, description=f"Initial SGD learning rate (default {TrainConfig.lr:g}).")
    momentum: float | None = Field(None, ge=0, lt=1, description=f"SGD momentum (default {TrainConfig.momentum:g}).")
    weight_decay: float | None = Field(None, ge=0, le=1,
                                       description=f"L2 weight decay (default {TrainConfig.weight_decay:g}).")
    lr_power: float | None = Field(None, ge=0, le=10,
                                   description=f"Poly decay exponent (default {TrainConfig.lr_power:g}).")
    lambda_d: float | None = Field(None, ge=0, le=1e4, description=(
        f"Output distillation weight (ld, ef+ld, ld+le; default {DEFAULT_LAMBDA_D:g})."))
    lambda_e: float | None = Field(None, ge=0, le=1e4, description=(
        f"Feature distillation weight (le, ld+le; default {DEFAULT_LAMBDA_E:g})."))
    lambda_u: float | None = Field(None, ge=0, le=1e4,
                                   description=f"Unbiased distillation weight (mib; default {DEFAULT_LAMBDA_U:g}).")
    lambda_pod: float | None = Field(None, ge=0, le=1e4, description=(
        f"Local POD feature distillation weight (plop; default {DEFAULT_LAMBDA_POD:g})."))
    batchnorm: Literal[BATCHNORM_POLICIES] | None = Field(  # type: ignore[valid-type]
        None, description=f"BatchNorm statistics: re-estimated after training ('recalibrate', default "
        f"{DEFAULT_BATCHNORM!r}), left as training moved them ('update'), or kept at the parent's ('frozen').")
    class_balance: float | None = Field(None, ge=0, le=1, description=(
        "Class weights of the classification loss: the power of median-frequency balancing over the task's "
        f"labels (0 none, 0.5 square root, 1 full; default {TrainConfig.class_balance:g})."))
    ld_form: Literal[LD_FORMS] | None = Field(  # type: ignore[valid-type]
        None, description=f"Form of L'_D: the ILT paper's (default, {DEFAULT_LD_FORM!r}) or MiB's renormalised one.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1,
                             description=f"Random seed of the run (default {TrainConfig.seed}).")
    pretrained_backbone: bool | None = Field(
        None, description="First task only: start the encoder from torchvision's ImageNet weights "
        f"(default {str(StepConfig.pretrained_backbone).lower()}; the worker finds them in STRATA_BACKBONE_WEIGHTS_DIR "
        "or its torch hub cache, or downloads them; false: random initialisation).")
    backbone_weights: str | None = Field(
        None, max_length=1024, description="First task only: a backbone weights file on the worker's disk.")

    # Which engine config each field sets (None: not set, the engine's default holds).
    TRAIN_FIELDS: ClassVar[tuple[str, ...]] = ("lr", "momentum", "weight_decay", "lr_power", "seed", "batchnorm",
                                                "class_balance")
    FIRST_STEP_FIELDS: ClassVar[tuple[str, ...]] = ("pretrained_backbone", "backbone_weights")

    @field_validator("backbone_weights")
    @classmethod
    def _weights_path(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None or not _client_rules(info):
            return v
        if hidden := hidden_character(v):
            raise ValueError(f"a file path cannot hold {hidden}")
        if not v.startswith("/"):  # relative to what? The worker's working directory is not the client's to know
            raise ValueError(f"{v!r} must be an absolute path on the worker's disk")
        return v

    @model_validator(mode="after")
    def _weights_or_random(self, info: ValidationInfo) -> Hyperparameters:
        if _client_rules(info) and self.backbone_weights is not None and self.pretrained_backbone is False:
            raise ValueError("backbone_weights loads a weights file, pretrained_backbone false asks for random "
                             "initialisation: give one of them")
        return self

    def given(self) -> dict[str, Any]:
        """The hyperparameters the client set."""
        return self.model_dump(exclude_none=True)

    def train_settings(self) -> dict[str, Any]:
        """The ``TrainConfig`` fields set."""
        return {k: v for k, v in self.given().items() if k in self.TRAIN_FIELDS}

    def loss_weights(self) -> dict[str, Any]:
        """The loss weights (and ``ld_form``) set, as ``build_method`` takes them."""
        return {k: v for k, v in self.given().items() if k in (*WEIGHT_NAMES, "ld_form")}

    def first_step_settings(self) -> dict[str, Any]:
        """How a first task builds its network: the ``StepConfig`` fields set."""
        given = self.given()
        if "backbone_weights" in given:
            given["backbone_weights"] = Path(given["backbone_weights"])
        return {k: v for k, v in given.items() if k in self.FIRST_STEP_FIELDS}


def _clean_name(name: str, info: ValidationInfo) -> str:
    """A class name as the client sent it, stripped; refused when it is empty, too long, reserved,
    or holds a character that does not show as itself (services/text.py)."""
    if not _client_rules(info):
        return name
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise ValueError(f"class name {name!r} must be 1 to 128 characters")
    hidden = hidden_character(name)
    if hidden:
        raise ValueError(f"class name {name!r} contains {hidden}: {NAME_RULE}")
    if name.lower() == BACKGROUND_NAME:
        raise ValueError(f"{name!r} is reserved: background is always value 0 of every mask")
    return name


# Checked one by one, so that an error says which: "classes.2: class name ...".
ClassName = Annotated[str, AfterValidator(_clean_name)]


def _unrepeated(names: list[str], what: str) -> list[str]:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"{what} repeats {listed(repeated)}")
    return names


class TaskSpec(BaseModel):
    """What to learn and how. Masks: value k (index format) or palette colour of class k labels
    the k-th entry of ``classes``, then of ``also_labelled``."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    classes: list[ClassName] = Field(min_length=1, max_length=MAX_CLASS_INDEX,
                               description="New class names, in the order the mask values use (1, 2, ...).")
    method: str | None = Field(None, description=f"One of {', '.join(SERVICE_METHODS)}; default: the engine's best.")
    epochs: int = Field(TrainConfig.epochs, ge=1, le=1000)
    image_size: int | None = Field(None, ge=32, le=2048, description=(
        "Shorter side in pixels at which images are trained, evaluated and served (aspect ratio kept); "
        "training crops are image_size x image_size. Default: the model's (the version this task grows "
        f"from), or for a model's first task the service's STRATA_DEFAULT_IMAGE_SIZE ({DEFAULT_IMAGE_SIZE} "
        "unless set)."))
    batch_size: int = Field(TrainConfig.batch_size, ge=1, le=256)
    val_fraction: float = Field(0.1, ge=0, lt=0.9,
                                description="Share of images kept to score the new classes (at least one when > 0).")
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    architecture: str | None = Field(None, description=(
        f"The network, first task of a model only (later tasks inherit it): {', '.join(ARCHITECTURES)}. "
        f"Default: the service's STRATA_DEFAULT_ARCHITECTURE ({DEFAULT_ARCHITECTURE} unless set)."))
    mask_format: Literal["index", "palette"] = "index"
    palette: dict[str, Colour] | None = Field(
        None, description="mask_format 'palette': {class: [r, g, b]} for every class and also_labelled class.")
    also_labelled: list[ClassName] = Field(default_factory=list, description=(
        "Existing classes these masks label too, after the new ones (index format: values n+1, n+2, ...)."))
    format: Literal[FORMAT_NAMES] | None = Field(  # type: ignore[valid-type]
        None, description="The upload's format: 'masks' (files images + masks, or an archive's images/ + masks/), or "
        "an annotation tool's export as one zip `archive`: 'coco', 'coco_panoptic', 'cvat_mask', 'voc', "
        "'cityscapes', 'label_studio'. Default: recognised from the archive's layout. Exports map their labels "
        "to classes and also_labelled BY NAME.")
    other_labels: Literal[OTHER_LABELS] = Field(  # type: ignore[valid-type]
        "reject", description="Exports only: pixels of a label (or colour) the spec does not name: 'reject' the "
        "upload (default, naming them), 'ignore' them (value 255, not trained on) or make them 'background'.")
    label_ids: dict[str, int] | None = Field(
        None, description="format 'voc' or 'cityscapes': {label name: pixel value} of the label-id PNGs. Default: "
        "the format's standard table (Pascal VOC's 21 classes; Cityscapes' labelIds).")

    @field_validator("classes", "also_labelled")
    @classmethod
    def _names(cls, v: list[str], info: ValidationInfo) -> list[str]:
        return _unrepeated(v, info.field_name) if _client_rules(info) else v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and v not in SERVICE_METHODS and _client_rules(info):
            raise ValueError(f"unknown method {v!r}; choose one of {', '.join(SERVICE_METHODS)} "
                             "(joint needs every earlier step's images, which the service does not keep)")
        return v

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and "model" in data and _client_rules(info):
            raise ValueError("`model` is now `architecture` (the model is the one named in the URL, "
                             "/models/{name}/tasks)")
        return data

    @field_validator("architecture")
    @classmethod
    def _architecture(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is not None and v not in ARCHITECTURES and _client_rules(info):
            raise ValueError(f"unknown architecture {v!r}; choose one of {', '.join(ARCHITECTURES)}")
        return v

    @field_validator("palette")
    @classmethod
    def _palette_colours(cls, v: dict[str, Colour] | None, info: ValidationInfo) -> dict[str, Colour] | None:
        if v is None or not _client_rules(info):
            return v
        stripped = [name.strip() for name in v]
        twice = sorted({n for n in stripped if stripped.count(n) > 1})
        if twice:
            raise ValueError(f"gives {listed(twice)} more than one colour (names are compared without "
                             "surrounding spaces)")
        v = {name.strip(): tuple(colour) for name, colour in v.items()}
        for name, colour in v.items():
            if any(not 0 <= c <= 255 for c in colour):
                raise ValueError(f"colour of {name!r} must be three values 0..255, got {list(colour)}")
            if colour == (0, 0, 0):
                raise ValueError(f"colour of {name!r} is black, which is reserved for background")
        shared = sorted({str(list(c)) for c in v.values() if list(v.values()).count(c) > 1})
        if shared:
            raise ValueError(f"colours used by more than one class: {', '.join(shared)}")
        return v

    @field_validator("label_ids")
    @classmethod
    def _label_ids(cls, v: dict[str, int] | None, info: ValidationInfo) -> dict[str, int] | None:
        if v is None or not _client_rules(info):
            return v
        v = {name.strip(): value for name, value in v.items()}
        bad = [f"{name!r}: {value}" for name, value in v.items() if not 0 <= value <= 255]
        if bad:
            raise ValueError(f"pixel values must be 0..255, got {listed(bad)}")
        shared = sorted({value for value in v.values() if list(v.values()).count(value) > 1})
        if shared:
            raise ValueError(f"pixel values given to more than one label: {listed(shared)}")
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> TaskSpec:
        if not _client_rules(info):
            return self
        both = sorted(set(self.classes) & set(self.also_labelled))
        if both:
            raise ValueError(f"{listed(both)} cannot be both new (classes) and existing (also_labelled)")
        if len(self.classes) + len(self.also_labelled) > MAX_CLASS_INDEX:
            raise ValueError(f"classes and also_labelled together name more than {MAX_CLASS_INDEX} classes "
                             f"(mask values 1..{MAX_CLASS_INDEX})")
        if self.mask_format == "index" and self.palette is not None:
            raise ValueError("palette is only used with mask_format 'palette'")
        if self.mask_format == "palette":
            self._check_palette_covers()
        self._check_format_fields()
        return self

    def _check_format_fields(self) -> None:
        """Fields that only one format reads are refused with another, rather than ignored."""
        if self.format not in (None, "masks") and (self.mask_format != "index" or self.palette is not None):
            raise ValueError(f"mask_format and palette describe the 'masks' format; a {self.format!r} export "
                             "defines its own labels (leave them out)")
        if self.label_ids is not None and self.format not in ("voc", "cityscapes"):
            raise ValueError("label_ids is read by format 'voc' or 'cityscapes' only (name the format)")

    def import_options(self) -> ImportOptions:
        return ImportOptions(local_names=self.local_names, new=len(self.classes), other_labels=self.other_labels,
                             mask_format=self.mask_format, palette=self.palette, label_ids=self.label_ids)

    def _check_palette_covers(self) -> None:
        if not self.palette:
            raise ValueError("mask_format 'palette' needs a palette: {class name: [r, g, b]}")
        wanted = [*self.classes, *self.also_labelled]
        missing = [n for n in wanted if n not in self.palette]
        extra = sorted(n for n in self.palette if n not in wanted)
        if missing:
            raise ValueError(f"palette has no colour for {listed(missing)}")
        if extra:
            raise ValueError(f"palette names {listed(extra)}, which are neither in classes nor in also_labelled")

    @property
    def local_names(self) -> tuple[str, ...]:
        """The classes in mask-value order: value k labels local_names[k - 1]."""
        return (*self.classes, *self.also_labelled)


@dataclass(frozen=True)
class TaskDefaults:
    """What a model's first task gets for the fields its spec leaves out: the service's settings."""

    architecture: str = DEFAULT_ARCHITECTURE
    image_size: int = DEFAULT_IMAGE_SIZE

    @classmethod
    def from_settings(cls, settings: Settings) -> TaskDefaults:
        """The deployment's defaults; SettingsError naming the variable for an unknown architecture."""
        architecture = settings.default_architecture or DEFAULT_ARCHITECTURE
        if architecture not in ARCHITECTURES:
            raise SettingsError(f"invalid configuration: {ENV_PREFIX}DEFAULT_ARCHITECTURE: unknown architecture "
                                f"{architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
        return cls(architecture, settings.default_image_size or DEFAULT_IMAGE_SIZE)


class ResolvedSpec(TaskSpec):
    """A registered task's spec: the client's, with what registration resolved. Stored flat as the
    task row's JSON (``stored()``), which is how every row has been written; read back with
    ``of(task)``, which checks types only, so rows written under earlier rules keep loading."""

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    method: str = Field(description="The method this task trains with (the default resolved).")
    architecture: str = Field(description="The model's architecture.")
    image_size: int = Field(ge=32, le=2048, description="The image size this task trains at (the default resolved).")
    after_task_id: str | None = Field(None, description="The task queued before this one: its version is the parent.")
    assigned_classes: dict[str, int] = Field(default_factory=dict, description="Global index of each new class.")

    @classmethod
    def of(cls, task: Task) -> ResolvedSpec:
        return cls.model_validate(task.spec, context=STORED)

    def stored(self) -> dict[str, Any]:
        """The row's JSON: hyperparameters the client set only, no palette for index masks, import settings
        only where set."""
        out = self.model_dump(mode="json")
        out["hyperparameters"] = self.hyperparameters.given()
        # Fields a row did not always have are written only when set: rows of plain uploads keep their shape.
        for optional, default in (("palette", None), ("format", None), ("label_ids", None), ("other_labels", "reject")):
            if out[optional] == default:
                del out[optional]
        return out

    def step_config(self, *, first: bool, step_index: int, train: dict[str, Any],
                    weights_dir: Path | None = None) -> StepConfig:
        """How the worker trains this task: ``train`` holds the worker's own TrainConfig settings
        (device, logging) and ``weights_dir`` its directory of backbone weight files
        (STRATA_BACKBONE_WEIGHTS_DIR); everything else is the spec's or the engine's default."""
        hp = self.hyperparameters
        return StepConfig(
            method=self.method,
            train=TrainConfig(epochs=self.epochs, batch_size=self.batch_size, **hp.train_settings(), **train),
            loss_weights={} if first else hp.loss_weights(),  # a first step has nothing to distil
            architecture=self.architecture, step_index=step_index,
            **({**hp.first_step_settings(), "backbone_weights_dir": weights_dir} if first else {}),
        )


def parse_spec(text: str | None) -> TaskSpec:
    """The spec from its JSON text; UploadRejected with every problem, each prefixed by its field."""
    if text is None or not text.strip():
        raise UploadRejected("the form field `spec` is missing: send the task's spec as JSON, e.g. "
                             '{"classes": ["cat", "dog"]}')
    data = _json_without_repeated_keys(text)
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as err:
        raise UploadRejected("invalid spec: " + describe_validation_errors(err.errors())) from None


class _Object(dict):
    """A JSON object as parsed, with the keys it gave more than once (json.loads keeps the last)."""

    repeated: tuple[str, ...] = ()

    @classmethod
    def of(cls, pairs: list[tuple[str, Any]]) -> _Object:
        obj = cls(pairs)
        if len(obj) < len(pairs):
            counts = Counter(k for k, _ in pairs)
            obj.repeated = tuple(k for k, n in counts.items() if n > 1)
        return obj


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


def _json_without_repeated_keys(text: str) -> Any:
    """The spec's JSON; a key given twice in one object is refused (naming it and where), not
    silently overridden by its last value."""
    try:
        data = json.loads(text, object_pairs_hook=_Object.of, parse_constant=_not_json)
    except RecursionError:
        raise UploadRejected("invalid spec: not valid JSON (nested too deeply)") from None
    except ValueError as err:
        raise UploadRejected(f"invalid spec: not valid JSON ({err})") from None
    pending: deque[tuple[tuple[str, ...], Any]] = deque([((), data)])
    while pending:  # breadth first, without recursion: the first repeated key nearest the top
        where, value = pending.popleft()
        if isinstance(value, _Object):
            if value.repeated:
                at = f"{'.'.join(where)}: " if where else ""
                raise UploadRejected(f"invalid spec: {at}key {value.repeated[0]!r} is given more than once "
                                     "(each key of a JSON object may appear once)")
            pending.extend(((*where, str(k)), v) for k, v in value.items())
        elif isinstance(value, list):
            pending.extend(((*where, str(i)), v) for i, v in enumerate(value))
    return data

"""Recipes: a validated, YAML/JSON round-trippable list of compression stages.

    name: deep-compression
    model: lenet300_100          # default model and data for `weightzip compress`
    data: mnist
    baseline: {epochs: 10, lr: 0.05, optimizer: sgd, schedule: cosine}
    stages:
      - method: prune_magnitude
        ...
      - method: finetune
        train: {epochs: 3, lr: 0.001}
    storage: {entropy: auto, float_dtype: float32}

Each stage is parsed into the registered method's ``Config`` (pydantic, ``extra="forbid"``);
errors name the stage (index and method) and the field, e.g.
``stage 2 (kmeans_share): field 'bits': Input should be a valid integer``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import RecipeError, UnknownNameError
from .registry import get_method


class StorageConfig(BaseModel):
    """How tensors are written to the ``.wz``.

    ``entropy``: entropy-code code/index streams when smaller (``auto``) or never (``none``);
    ``float_dtype``: dtype of tensors no stage quantized (``float16`` is lossy);
    ``sparse``: allow sparse encodings (CSR relative index / bitmap) when smaller.
    """

    model_config = ConfigDict(extra="forbid")
    entropy: Literal["auto", "none", "huffman", "ans"] = "auto"
    float_dtype: Literal["float32", "float16"] = "float32"
    sparse: bool = True


class Recipe(BaseModel):
    """A named sequence of stages (see module docstring)."""

    model_config = ConfigDict(extra="forbid")

    name: str = "recipe"
    description: str = ""
    model: str | None = None
    model_args: dict[str, Any] = {}
    data: str | None = None
    data_args: dict[str, Any] = {}
    baseline: dict[str, Any] = {}
    stages: list[Any] = []
    storage: StorageConfig = StorageConfig()

    # ---- construction ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "recipe") -> "Recipe":
        if not isinstance(d, dict):
            raise RecipeError(f"{source}: a recipe is a mapping with a `stages` list, got {type(d).__name__}")
        d = dict(d)
        raw_stages = d.pop("stages", [])
        if not isinstance(raw_stages, list):
            raise RecipeError(f"{source}: `stages` must be a list of mappings, each with a `method` key")
        try:
            recipe = cls(**d, stages=[])
        except ValidationError as e:
            raise RecipeError(f"{source}: {_fmt(e)}") from None
        recipe.stages = [parse_stage(s, i, source) for i, s in enumerate(raw_stages)]
        return recipe

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> "Recipe":
        """Load from a YAML file path (or YAML text containing a newline)."""
        text, source = _read(path_or_text)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise RecipeError(f"{source}: not valid YAML: {e}") from None
        return cls.from_dict(data or {}, source)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            return cls.from_dict(json.loads(text), "recipe (JSON)")
        except json.JSONDecodeError as e:
            raise RecipeError(f"recipe (JSON): {e}") from None

    # ---- serialisation -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = self.model_dump(mode="json", exclude={"stages"})
        d["stages"] = [s.model_dump(mode="json", exclude_defaults=False) for s in self.stages]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_stage(raw: Any, index: int, source: str = "recipe"):
    """Validate one stage mapping into its method's ``Config`` instance."""
    where = f"{source}: stage {index}"
    if not isinstance(raw, dict) or "method" not in raw:
        raise RecipeError(f"{where}: each stage is a mapping with a `method` key, got {raw!r}")
    try:
        cls = get_method(str(raw["method"]))
    except UnknownNameError as e:
        raise RecipeError(f"{where}: {e}") from None
    try:
        return cls.Config(**raw)
    except ValidationError as e:
        raise RecipeError(f"{where} ({raw['method']}): {_fmt(e)}") from None
    except (ValueError, TypeError) as e:
        raise RecipeError(f"{where} ({raw['method']}): {e}") from None


def _fmt(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(stage)"
        parts.append(f"field '{loc}': {err['msg']}")
    return "; ".join(parts)


def _read(path_or_text: str | Path) -> tuple[str, str]:
    if isinstance(path_or_text, Path) or "\n" not in str(path_or_text):
        p = Path(path_or_text)
        if not p.exists():
            raise RecipeError(f"recipe file {str(p)!r} not found (recipes shipped with weightzip are in recipes/)")
        return p.read_text(), str(p)
    return str(path_or_text), "recipe"

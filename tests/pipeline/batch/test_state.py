"""What a batch's state record compares: the parameters that shape a mask, and only those."""

from __future__ import annotations

from dataclasses import replace

from pipeline.batch.state import canonical, params_of
from pipeline.config import InferenceConfig, ModelConfig, PipelineConfig, ProductsConfig


def cfg(**products) -> PipelineConfig:
    return PipelineConfig(model=ModelConfig(classes=2, random_weights=0), products=ProductsConfig(**products))


def test_class_colours_are_part_of_the_parameters() -> None:
    """The mask's colour table and style carry the colours, so new colours redo a scene."""
    plain, coloured = params_of(cfg().validate()), params_of(cfg(class_colors=("#ff0000", "#00ff00")).validate())
    assert canonical(plain) != canonical(coloured)


def test_how_fast_a_mask_is_made_is_not_part_of_the_parameters() -> None:
    base = cfg().validate()
    faster = replace(base, inference=InferenceConfig(batch=32, actors=2))
    assert canonical(params_of(base)) == canonical(params_of(faster))

"""Every option of every config group composes onto a schema from the ConfigStore (issue 30):
typed fields, checked once by the schema."""

from __future__ import annotations

import dataclasses

import pytest
from helpers import compose_app
from helpers.paths import CONF_DIR
from omegaconf import OmegaConf

from ohlora_eval.apps import config

# experiment: one-switch setups over other groups (no node of their own); hydra: Hydra's;
# identity=none: no identity model (the node is null).
NOT_A_NODE = {"experiment", "hydra", "identity/none"}
OPTIONS = sorted(
    f"{path.parent.name}/{path.stem}"
    for path in CONF_DIR.glob("*/*.yaml")
    if path.parent.name not in NOT_A_NODE and f"{path.parent.name}/{path.stem}" not in NOT_A_NODE
)


def test_the_groups_are_all_here():
    groups = {o.split("/")[0] for o in OPTIONS}
    assert {"cutoff", "sampling", "tracking", "execution", "generator", "scorer"} <= groups
    assert {"identity", "measure", "directions"} <= groups


@pytest.mark.parametrize("option", OPTIONS)
def test_every_option_composes_onto_a_schema(tmp_path, option):
    group, name = option.split("/")
    cfg = compose_app("config", tmp_path, f"{group}={name}")
    node = cfg._get_node(group)
    schema = OmegaConf.get_type(node)
    assert dataclasses.is_dataclass(schema), f"{option} composes untyped"


def test_a_screening_config_becomes_one_typed_object(tmp_path):
    cfg = compose_app("config", tmp_path)
    typed = config.settings(cfg)
    assert typed.cutoff.as_dict() == {"eyes": 0.92, "mouth": 0.88, "pose": 0.88}
    assert typed.sampling.points().shape == (50, 3)
    assert typed.tracking.root == str(tmp_path) and typed.execution.kind == "local"

"""Agents and queues: the router's records are the concept; the API's bodies (which also
validate the configuration file) and the store's rows hold the same fields.

The router stays free of pydantic and SQL (it is pure), so the three shapes are
separate classes; what keeps them one concept is that conversions go through the
records' own ``to_dict``/``from_dict`` and that these tests fail as soon as a field
or a default exists in one shape and not in another.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from pathlib import Path

import pytest
from pydantic import BaseModel

from pbx.api.schemas import AgentView, QueueView
from pbx.configuration.models import AgentCreate, ExpansionRing, QueueCreate
from pbx.configuration.server import load_config
from pbx.store.tables import AgentRow, QueueRow
from router import AgentProfile, QueueConfig, SkillExpansion


def field_names(record: type) -> set[str]:
    return {item.name for item in fields(record)}


def row_columns(row: type[BaseModel]) -> set[str]:
    return set(row.model_fields)


def test_an_agent_has_the_same_fields_in_the_router_the_api_and_the_store():
    profile = field_names(AgentProfile)
    # 'active' is not the router's business: an inactive agent is not given to it at all.
    assert set(AgentCreate.model_fields) == profile | {"active"}
    # live: the router's state here; remote: another site's agent as its site publishes it.
    assert set(AgentView.model_fields) == profile | {"active", "live", "remote"}
    # Skills have a table of their own (agents are found by skill).
    assert row_columns(AgentRow) | {"skills"} == profile | {"active"}


def test_a_queue_has_the_same_fields_in_the_router_the_api_and_the_store():
    config = field_names(QueueConfig)
    assert set(QueueCreate.model_fields) == config
    assert set(QueueView.model_fields) == config
    assert row_columns(QueueRow) | {"skills"} == config
    assert set(ExpansionRing.model_fields) == field_names(SkillExpansion)


@pytest.mark.parametrize(("record", "body"), [(QueueConfig, QueueCreate), (AgentProfile, AgentCreate)])
def test_defaults_agree(record: type, body: type[BaseModel]):
    for item in fields(record):
        if item.default is MISSING and item.default_factory is MISSING:
            continue
        default = item.default if item.default is not MISSING else item.default_factory()
        given = body.model_fields[item.name].get_default(call_default_factory=True)
        assert given == default or (not given and not default), (item.name, given, default)


def test_records_convert_to_plain_data_and_back_unchanged():
    contact_center = load_config(None, var_dir=Path("/tmp/x")).contact_center
    for queue in contact_center.queues:
        assert QueueConfig.from_dict(queue.to_dict()) == queue
        assert QueueConfig.from_dict(QueueView.model_validate(queue.to_dict()).model_dump()) == queue
    for agent in contact_center.agents:
        assert AgentProfile.from_dict(agent.profile.to_dict()) == agent.profile
    assert any(queue.expansion for queue in contact_center.queues)  # the rings are covered too

"""The contact-center sections of the configuration: sites, agents, queues, customers.

They are validated by the same models as the HTTP API, so a value the API
refuses is refused in the file too, with the file, line and key named.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pbx.configuration.models import (
    AgentCreate,
    CustomerCreate,
    QueueCreate,
    SiteCreate,
    agent_record,
    customer_record,
    queue_config,
    site_record,
)
from pbx.store import AgentRecord, CustomerRecord, SiteRecord
from router import QueueConfig, RouterError
from settings.located_yaml import LocatedDocument
from settings.validation import validate_items

# Keys written as bare numbers in YAML (extension: 1001) are identifiers, not numbers.
_IDENTIFIER_KEYS = ("extension", "number", "site", "name", "preferred_agent", "overflow")


@dataclass(frozen=True)
class ContactCenterConfig:
    sites: tuple[SiteRecord, ...] = ()
    agents: tuple[AgentRecord, ...] = ()
    queues: tuple[QueueConfig, ...] = ()
    customers: tuple[CustomerRecord, ...] = ()


def _as_identifiers(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    return {k: (str(v) if k in _IDENTIFIER_KEYS and isinstance(v, int) and not isinstance(v, bool) else v)
            for k, v in item.items()}


def _validated(document: LocatedDocument, problems: list[str], section: str,
               model: type[BaseModel]) -> list[tuple[int, Any]]:
    items = document.data.get(section) if isinstance(document.data, dict) else None
    return validate_items(document, problems, section, model, items, prepare=_as_identifiers)


def declared(document: LocatedDocument, section: str, key: str) -> set[str]:
    """The ``key`` of every item of ``section`` as written, valid or not: a reference to an
    item that has its own error is not reported again as unknown (one mistake, one error)."""
    items = document.data.get(section) if isinstance(document.data, dict) else None
    return {str(_as_identifiers(item)[key]) for item in items or ()
            if isinstance(items, list) and isinstance(item, dict) and item.get(key) is not None}


def parse_contact_center(document: LocatedDocument, problems: list[str]) -> ContactCenterConfig:
    sites = [site_record(s.name, s) for _, s in _validated(document, problems, "sites", SiteCreate)]
    site_names = declared(document, "sites", "name")
    agent_names = declared(document, "agents", "extension")
    queue_names = declared(document, "queues", "name")

    agents: list[AgentRecord] = []
    seen_agents: set[str] = set()
    for i, body in _validated(document, problems, "agents", AgentCreate):
        path = f"agents[{i}]"
        if body.extension in seen_agents:
            problems.append(document.problem(f"{path}.extension", f"agent {body.extension} is defined twice"))
            continue
        if body.site not in site_names:
            problems.append(document.problem(f"{path}.site", f"unknown site {body.site!r} (define it under sites)"))
            continue
        if body.site not in {s.name for s in sites}:
            continue  # the site has an error of its own
        seen_agents.add(body.extension)
        try:
            agents.append(agent_record(body.extension, body))
        except RouterError as exc:
            problems.append(document.problem(path, str(exc)))

    queues: list[QueueConfig] = []
    for i, body in _validated(document, problems, "queues", QueueCreate):
        path = f"queues[{i}]"
        if any(q.name == body.name for q in queues):
            problems.append(document.problem(f"{path}.name", f"queue {body.name} is defined twice"))
            continue
        if body.overflow is not None and body.overflow not in queue_names:
            problems.append(document.problem(f"{path}.overflow",
                                             f"unknown queue {body.overflow!r} (define it under queues)"))
            continue
        unknown_sites = [] if body.sites == "any" else [s for s in body.sites if s not in site_names]
        if unknown_sites:
            problems.append(document.problem(f"{path}.sites",
                                             f"unknown site {unknown_sites[0]!r} (define it under sites, "
                                             "or write any)"))
            continue
        try:
            queues.append(queue_config(body.name, body))
        except RouterError as exc:
            problems.append(document.problem(path, str(exc)))

    customers: list[CustomerRecord] = []
    for i, body in _validated(document, problems, "customers", CustomerCreate):
        if body.preferred_agent is not None and body.preferred_agent not in seen_agents:
            if body.preferred_agent not in agent_names:
                problems.append(document.problem(f"customers[{i}].preferred_agent",
                                                 f"unknown agent {body.preferred_agent!r} (define it under agents)"))
            continue
        customers.append(customer_record(body.number, body, None))

    return ContactCenterConfig(tuple(sites), tuple(agents), tuple(queues), tuple(customers))

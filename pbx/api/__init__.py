"""The HTTP API (aiohttp): agents, queues, sites, customers, live state and routing decisions."""

from pbx.api.app import ENDPOINTS, create_api

__all__ = ["ENDPOINTS", "create_api"]

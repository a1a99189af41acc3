"""treadle: a self-hosted gateway that turns a workspace's integrations into MCP tools."""

__version__ = "0.1.0"

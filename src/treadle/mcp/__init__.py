"""The MCP face: workspace integrations as tools, kept in sync, called through the pipeline."""

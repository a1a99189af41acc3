"""Shared plumbing for integrations that call a provider's REST API.

One idea per module: `rest` sends a request with the connection's token and base URL and turns
the provider's answer into a value or one of treadle's errors; `retry` decides how long a
rate-limited call may wait; `failures` names what went wrong; `pagination` walks cursors;
`schema` and `annotations` hold what every action declares the same way.
"""

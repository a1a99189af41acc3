"""One module per benchmark case; each `run(env)` returns a JSON-ready dict."""

"""In-memory emulators of the provider APIs the built-in integrations call.

Each implements only the subset treadle uses, checks tokens and request shapes the way the
real service does (and answers with its real error shapes), keeps state in memory and lets a
test inject failures. `server.serve` runs one on loopback for the duration of a test.
"""

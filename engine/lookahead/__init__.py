"""``engine lookahead``: the whole-graph prefix-invariance check as a user command.

See ``docs/architecture.md`` ("Lookahead check").
"""

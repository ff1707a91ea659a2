"""Operating a running deployment: `streams lag`, `status`, `top`, `business`, `ledger`.

Each tool is a package of a pure model (evaluation, merging, rows), a reader (Kafka,
HTTP, SQL) and a view (text, JSON, rich), wired together by its `command` module.
"""

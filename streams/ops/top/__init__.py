"""`streams top`: a live terminal view of every business, busiest first.

Each refresh asks every worker (the same workers as `streams status`) for
`GET /businesses/` and `GET /counters/`, merges the answers and shows, per business:
active calls, waiting leads, the oldest wait, dials per minute and whether it is paused,
full or draining; in the header the totals, the dials granted, the outcomes and the
consumer lag of the workers' group. `model` keeps the rows and rates, `reader` polls the
workers and samples lag in a background thread (the broker may be slow; the view must
not wait for it), `keys` reads key presses, `view` draws, `command` runs the loop.
"""

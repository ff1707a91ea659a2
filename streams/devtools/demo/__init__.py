"""`streams demo`: the whole system on one machine, watched live.

Starts what is missing (a local broker, the topics, a worker process, a simulated dialer
thread), sends a seed scenario (businesses A, B, C... with a few leads each), shows live
how many calls each business really has, and ends with the independent record's verdict:
the dialer's ledger, recomputed with `concurrency_from_ledger`, must never show a
business above its limit. Then it stops what it started, and only that.

`model` holds the scenario and the rows (pure), `readers` follow the dialer's ledger,
the worker's web view and the outcomes topic, `processes` starts and stops the parts,
`view` draws, `command` runs it. Files go to `.streams-demo/` under the current
directory: `worker.log`, `dialer.log`, and one ledger per run, `dialer-<run>.jsonl`.
"""

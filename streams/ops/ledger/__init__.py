"""`streams ledger active`: the design note's verification query over the Twilio
dialer's SQL ledger, each business judged against its own limit.

The query, the verdict and the table are the ledger's own (`streams.dialers.twilio.
ledger`); `reader` runs the query and reads the per-business limits from
`business.control`, `view` prints, `command` wires them and sets the exit status.
"""

"""`streams run show|withdraw BUSINESS RUN`: a bulk run's figures, and withdrawing it.

`reader` asks the workers' web views and sends the withdrawal record, `view` prints,
`command` wires them.
"""

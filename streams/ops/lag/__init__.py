"""`streams lag`: consumer lag of the project's groups, judged in the manner of Burrow.

`model` holds the samples and the evaluator (pure), `reader` takes samples from Kafka,
`view` renders statuses as a table or JSON, `command` runs a look or a watch.
"""

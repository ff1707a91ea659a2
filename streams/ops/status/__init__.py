"""`streams status [BUSINESS]`: what each business runs and what waits, from the workers.

Every worker serves its own partitions' businesses (`GET /businesses/`, and
`GET /businesses/{id}/?lead=ID` for one business and one lead). `reader` asks every
worker named at once, `model` merges their answers, `view` prints them as text or JSON,
`command` wires them. `streams top` builds on the same reading and merging.
"""

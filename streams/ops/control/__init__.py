"""`streams business ...`: a business's limit and pause state, changed at runtime.

`business.control` is compacted and each record is a business's whole configuration,
so a change reads the current record first and writes a complete new one; compaction
then keeps exactly the latest. `model` applies an action, `reader` reads and writes the
topic (and asks the local worker), `view` prints, `command` wires them.
"""

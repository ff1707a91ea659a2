"""From a record's bytes to the core's decision. Pure: no Faust, no Kafka.

The worker (`streams/app.py`) and the property tests' model world decide every record
here: decoded by the record type of its topic (`streams.topics.INPUT_RECORDS`) and
applied by the core, or rejected with the reason when it cannot be used. Which topic a
record came from is the caller's to say, by base name: the core never looks at names.
"""

from __future__ import annotations

from streams import limiter_table as core
from streams.limiter_state import Read
from streams.topics import (
    INPUT_RECORDS,
    LEADS_REQUESTS,
    InvalidRecord,
    LeadRequest,
    Tick,
)


def decide(
    read: Read,
    source: core.Source,
    topic: str,
    now: float,
    rules: core.Rules,
    statuses_read_until: float | None = None,
) -> core.Effects:
    """The effects of one record of input topic `topic` (its base name): the core's
    decision, or a rejection when the record cannot be used (a lead request's also
    ends that lead, `rejected`)."""
    try:
        record = INPUT_RECORDS[topic](source.value, source.key)
        if isinstance(record, Tick) and record.partition != source.partition:
            raise InvalidRecord(
                f"tick for partition {record.partition} arrived on"
                f" partition {source.partition}"
            )
    except InvalidRecord as exc:
        return core.reject(
            read,
            source,
            exc.reason,
            now,
            rules,
            exc.lead_id if topic == LEADS_REQUESTS else None,
            exc.business_id,
        )
    return core.process(read, record, source, now, rules, statuses_read_until)


def failed(
    read: Read,
    source: core.Source,
    topic: str,
    error: BaseException,
    now: float,
    rules: core.Rules,
    decided: bool,
) -> core.Effects:
    """The effects of a record whose handling raised: dead-letter it, the reason naming
    the error. A lead request that failed before the core `decided` it also ends
    `rejected` (once decided, its effects may be out: it may have an outcome already).
    """
    lead_id = business_id = None
    if topic == LEADS_REQUESTS and not decided:
        try:
            lead = LeadRequest.decode(source.value, source.key)
            lead_id, business_id = lead.lead_id, lead.business_id
        except InvalidRecord:
            pass
    return core.reject(
        read, source, f"internal error: {error!r}", now, rules, lead_id, business_id
    )

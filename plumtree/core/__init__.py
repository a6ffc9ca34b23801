"""Sans-IO protocol core: no asyncio, no sockets, no clock reads.

Every entry point takes ``now`` (seconds, any monotonic origin) and returns or queues what
to send and what happened; ``next_deadline()`` says when to call back.
"""

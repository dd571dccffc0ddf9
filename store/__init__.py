"""A memory-mapped message-log store in RocketMQ's design, byte-compatible with its on-disk format.

A pure library: no terminal, no root. Inspection code opens stores read-only and never modifies them.
"""

"""Oblivious transfer: parameters, messages and costs (issue: OT layer).

Message tags 0x2000-0x20ff.
"""

__all__: list[str] = []

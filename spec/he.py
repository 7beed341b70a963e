"""RLWE homomorphic encryption: parameters, encodings, messages, noise analysis (issue: RLWE layer).

Message tags 0x1000-0x10ff.
"""

__all__: list[str] = []

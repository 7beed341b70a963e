"""Plaintext BERT-family models: HF import, a float64 numpy forward, data, a sentiment classifier.

Floats only: this package is the plaintext side used for calibration capture, accuracy
simulation and as the oracle of the secure graph. Submodules: `data` (Rotten Tomatoes
snippets), `hf` (checkpoint import), `plain` (numpy forward with pluggable non-linearities),
`classifier` (the sentiment head and its build script).
"""

__all__: list[str] = []

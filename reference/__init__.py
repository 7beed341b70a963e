"""nimbus.reference: HOW, slowly and readably. One module per component; never imports numba."""

NAME = "reference"

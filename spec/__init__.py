"""nimbus.spec: WHAT each protocol computes and sends.

Parameters, encodings, messages, costs, ideal functionalities and protocol signatures; numpy at
most (never numba or sympy). Importing this package registers every preset, message type and
protocol.
"""

from . import cost, errors, fixedpoint, messages, params, prg, proto, protocols  # noqa: F401
from . import sharing, he, ot, nonlinear, linear  # noqa: F401  (protocol modules: each registers its messages and protocols)
from . import presets  # noqa: F401  (last: presets may use every component's parameters)
from .cost import NETWORKS, Cost, Network, get_network
from .errors import *  # noqa: F401,F403
from .params import PRESETS, ParamSet, Ring, get_preset
from .prg import PRG
from .proto import CLIENT, SERVER, Ctx, Proto, Recv, Send
from .protocols import PROTOCOLS, get_protocol

__all__ = [
    "Cost", "Network", "NETWORKS", "get_network", "PRESETS", "ParamSet", "Ring", "get_preset",
    "PRG", "CLIENT", "SERVER", "Ctx", "Proto", "Recv", "Send", "PROTOCOLS", "get_protocol",
    "errors",
]

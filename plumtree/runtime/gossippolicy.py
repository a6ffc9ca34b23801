"""Authenticated gossip is the default: the rule deciding whether a node may start.

Gossip bound to an address other machines can reach needs a keyring: without one anyone
who reaches the port can forge members, deaths and broadcasts. The operator may opt out
with ``--insecure-gossip`` (config ``node.insecure_gossip``): the node then starts, logs a
WARNING, and says so in ``/v1/status``, its member tags, ``plumctl members -o wide`` and
``plumctl top``. Gossip bound to loopback only (``plumctl cluster up``, the tests) needs
no keyring: only processes on this machine can reach it, and they can read its files.
"""

from __future__ import annotations

import ipaddress

from plumtree.runtime.addresses import parse_addr

#: The member tag an insecure node carries (shown by ``plumctl members -o wide``).
INSECURE_TAG = "insecure_gossip"


class InsecureGossip(ValueError):
    """Gossip would be reachable from the network, unauthenticated, without consent."""


def is_loopback(host: str) -> bool:
    """Only this machine can reach ``host`` (names other than localhost count as not)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def insecure(bind: str, has_keyring: bool) -> bool:
    """Gossip bound to ``bind`` is reachable from the network and unauthenticated."""
    host, _ = parse_addr(bind, 7946)
    return not has_keyring and not is_loopback(host)


def check(bind: str, has_keyring: bool, allow_insecure: bool) -> bool:
    """Raise InsecureGossip unless allowed; True when the node will run insecure."""
    if not insecure(bind, has_keyring):
        return False
    if not allow_insecure:
        raise InsecureGossip(
            f"gossip binds {bind} (reachable from the network) with no keyring: pass"
            " --keyring FILE (a JSON list of base64 AES keys, mode 0600) or, to run"
            " unauthenticated anyway, --insecure-gossip"
        )
    return True

"""Publish-Subscribe (XEP-0060) node logic without I/O: a library, not a loadable module.

PEP (XEP-0163, xmppd/modules/pep.py) uses it on every account of a user host now; a pubsub
service on a component domain can use it later. It knows nothing of stanzas in flight, storage
or sessions: values in, values (or a StanzaError) out.

    node.py     a node as data: configuration, items (newest last), affiliations; JSON for storage
    forms.py    the pubsub#node_config form (§8.2) and publish-options preconditions (§7.1.5)
    access.py   who may read a node's items, be notified and subscribe (access models, §4.5)

It declares no protocols: the module that serves it (PEP) names the XEPs it implements.
"""

# Empty, so that the DOAP generator, which imports every components package, lists nothing here.
PROTOCOLS: list[tuple[str, ...]] = []

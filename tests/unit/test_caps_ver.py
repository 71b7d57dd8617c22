"""XEP-0115 verification strings: generation (§5.1, with the examples of §5.2 and §5.3), as the
server computes its own (disco.caps_ver), and the processing of a client's answer (§5.4)."""

from __future__ import annotations

import pytest
from lxml import etree

from xmppd.host import Host, Identity
from xmppd.modules.caps import verified_features
from xmppd.modules.disco import DATA_NS, INFO_NS, caps_hash, caps_ver, verification_input

FEATURES = [
    "http://jabber.org/protocol/caps",
    "http://jabber.org/protocol/disco#info",
    "http://jabber.org/protocol/disco#items",
    "http://jabber.org/protocol/muc",
]
FEATURES_S = "".join(f"{feature}<" for feature in FEATURES)

# §5.2
SIMPLE_S = "client/pc//Exodus 0.9.1<" + FEATURES_S
SIMPLE_VER = "QgayPKawpkPSDYmwT/WM94uAlu0="

# §5.3
COMPLEX_VER = "q07IKJEyjvHSyhy//CH0CxmKi8w="
COMPLEX_S = (
    "client/pc/el/\u03a8 0.11<client/pc/en/Psi 0.11<"
    + FEATURES_S
    + "urn:xmpp:dataforms:softwareinfo<"
    + "ip_version<ipv4<ipv6<os<Mac<os_version<10.5.1<software<Psi<software_version<0.11<"
)
SOFTWARE_INFO = f"""
<x xmlns='{DATA_NS}' type='result'>
  <field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>
  <field var='ip_version'><value>ipv4</value><value>ipv6</value></field>
  <field var='os'><value>Mac</value></field>
  <field var='os_version'><value>10.5.1</value></field>
  <field var='software'><value>Psi</value></field>
  <field var='software_version'><value>0.11</value></field>
</x>"""
COMPLEX_IDENTITIES = """
  <identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>
  <identity xml:lang='el' category='client' name='&#936; 0.11' type='pc'/>"""
COMPLEX_FEATURES = "".join(f"<feature var='{feature}'/>" for feature in FEATURES)


def answer(*parts: str) -> etree._Element:
    """The `<query/>` of a disco#info answer made of `parts`."""
    return etree.fromstring(f"<query xmlns='{INFO_NS}'>{''.join(parts)}</query>")


def complex_answer(*extra: str) -> etree._Element:
    return answer(COMPLEX_IDENTITIES, COMPLEX_FEATURES, SOFTWARE_INFO, *extra)


# -- generation -------------------------------------------------------------------------------------


def test_simple_example() -> None:
    s = verification_input([("client", "pc", "", "Exodus 0.9.1")], FEATURES, [])
    assert s == SIMPLE_S
    assert caps_hash(s) == SIMPLE_VER


def test_complex_example_with_an_extended_form() -> None:
    identities = [("client", "pc", "en", "Psi 0.11"), ("client", "pc", "el", "\u03a8 0.11")]
    s = verification_input(identities, FEATURES, [etree.fromstring(SOFTWARE_INFO)])
    assert s == COMPLEX_S
    assert caps_hash(s) == COMPLEX_VER


def test_the_input_is_sorted_whatever_the_order_given() -> None:
    identities = [("client", "pc", "en", "Psi 0.11"), ("client", "pc", "el", "\u03a8 0.11")]
    form = etree.fromstring(SOFTWARE_INFO)
    form[:] = reversed(form)  # FORM_TYPE last, fields in reverse order
    for field in form:
        field[:] = reversed(field)
    s = verification_input(list(reversed(identities)), list(reversed(FEATURES)), [form])
    assert s == COMPLEX_S


def test_the_servers_own_ver_is_the_same_algorithm() -> None:
    host = Host("example.test")
    host.identities.append(Identity("client", "pc", "Exodus 0.9.1"))
    # Registered twice by two modules: announced (and hashed) once.
    host.features.extend([*reversed(FEATURES), FEATURES[0]])
    assert caps_ver(host) == SIMPLE_VER


# -- processing a client's answer (§5.4) -------------------------------------------------------


def test_an_answer_that_hashes_to_the_ver_gives_its_features() -> None:
    assert verified_features(complex_answer(), COMPLEX_VER) == frozenset(FEATURES)
    simple = answer("<identity category='client' type='pc' name='Exodus 0.9.1'/>", COMPLEX_FEATURES)
    assert verified_features(simple, SIMPLE_VER) == frozenset(FEATURES)


def test_an_answer_for_another_ver_is_refused() -> None:
    assert verified_features(complex_answer(), SIMPLE_VER) is None
    tampered = answer(COMPLEX_IDENTITIES, COMPLEX_FEATURES, "<feature var='urn:xmpp:extra'/>", SOFTWARE_INFO)
    assert verified_features(tampered, COMPLEX_VER) is None


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param("<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>", id="identity twice"),
        pytest.param("<feature var='http://jabber.org/protocol/muc'/>", id="feature twice"),
        pytest.param(SOFTWARE_INFO, id="two forms of one FORM_TYPE"),
        pytest.param(
            f"<x xmlns='{DATA_NS}' type='result'><field var='FORM_TYPE' type='hidden'>"
            "<value>urn:example:a</value><value>urn:example:b</value></field></x>",
            id="FORM_TYPE with two values",
        ),
    ],
)
def test_an_ill_formed_answer_is_refused(extra: str) -> None:
    assert verified_features(complex_answer(extra), COMPLEX_VER) is None


@pytest.mark.parametrize(
    "form",
    [
        pytest.param(
            f"<x xmlns='{DATA_NS}' type='result'><field var='FORM_TYPE'><value>urn:example:a</value></field>"
            "<field var='a'><value>1</value></field></x>",
            id="FORM_TYPE not hidden",
        ),
        pytest.param(
            f"<x xmlns='{DATA_NS}' type='result'><field var='a'><value>1</value></field></x>", id="no FORM_TYPE"
        ),
    ],
)
def test_a_form_without_a_hidden_form_type_is_left_out(form: str) -> None:
    assert verified_features(complex_answer(form), COMPLEX_VER) == frozenset(FEATURES)

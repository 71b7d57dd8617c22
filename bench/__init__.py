"""xmppd benchmark suite: a raw-XMPP load generator, a feature-less floor router and the scripts
that run both against xmppd, Prosody and ejabberd (see bench/README.md)."""

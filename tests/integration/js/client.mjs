// xmpp.js (@xmpp/client) over XMPP over WebSocket (RFC 7395), run by tests/integration/test_websocket.py:
// logs in at SERVICE as JID, sends a chat message to TO, prints the first message with a body it gets
// back ("reply: <from> <body>"), then closes the stream and exits 0. Any error exits non-zero.
//
//   node client.mjs ws://127.0.0.1:5280/xmpp-websocket alice@localhost password bob@localhost/tcp
import { client, xml } from "@xmpp/client";

const [service, jid, password, to] = process.argv.slice(2);
const [username, domain] = jid.split("@");
const fail = (why) => {
  console.error(`failed: ${why}`);
  process.exit(1);
};
const timer = setTimeout(() => fail("no reply within 10 s"), 10_000);

const xmpp = client({ service, domain, username, password, resource: "js" });
xmpp.on("error", (err) => fail(err?.stack ?? err));
xmpp.on("online", async (address) => {
  console.log(`online ${address}`);
  await xmpp.send(xml("presence"));
  await xmpp.send(xml("message", { type: "chat", to }, xml("body", {}, "hello from xmpp.js")));
});
xmpp.on("stanza", async (stanza) => {
  const body = stanza.is("message") ? stanza.getChildText("body") : null;
  if (body === null) return;
  console.log(`reply: ${stanza.attrs.from} ${body}`);
  clearTimeout(timer);
  await xmpp.stop(); // <close/>, the server's <close/>, the WebSocket closed
  process.exit(0);
});
xmpp.start().catch((err) => fail(err?.stack ?? err));

// Two people chat through xmppd's web chat (Converse.js at /chat) in a real headless Chromium,
// driven by playwright-core; run by tests/integration/test_webchat.py.
//
//   node webchat.mjs URL ALICE_JID ALICE_PASSWORD BOB_JID BOB_PASSWORD ALICE_PNG BOB_PNG
//
// Each person gets a browser context of their own (no shared storage), opens URL and logs in
// through Converse's login form. The two are contacts already (the test writes their rosters).
// Alice opens the chat with Bob from her contact list and writes; Bob sees the unread message next
// to her name, opens the chat and reads it; Alice sees the delivery receipt (XEP-0184) and Bob
// typing (XEP-0085); Bob answers and Alice reads the answer; Alice sends a picture (HTTP File
// Upload, XEP-0363) and Bob's page shows it. Then both join a new room on the server's room service
// (XEP-0045) through Converse's "Add groupchat" dialog, and Bob reads what Alice writes there.
// Every wait is for something on the page (Playwright's auto-waiting locators), never for time.
//
// Screenshots: ALICE_PNG and BOB_PNG show the one-to-one chat (taken once its steps passed, or at
// the failure), and the same names ending in "-room.png" the room. Prints one JSON object:
// {ok, steps, sent, alice, bob, requests, websockets, csp_violations, page_errors, console_errors,
// error}; after a failure, alice.trail and bob.trail hold each page's last console messages and
// WebSocket frames. Exits 0 when every step passed. CHROMIUM names the browser (default
// /usr/bin/chromium).
import { chromium } from "playwright-core";

const [url, aliceJid, alicePassword, bobJid, bobPassword, alicePng, bobPng] = process.argv.slice(2);
if (!bobPng) {
  console.error("usage: node webchat.mjs URL ALICE_JID ALICE_PASSWORD BOB_JID BOB_PASSWORD ALICE_PNG BOB_PNG");
  process.exit(2);
}
// Words of this run only, so that a message from an earlier run (the archive) cannot pass for them.
const token = Math.random().toString(36).slice(2, 8);
const TEXT_TO_BOB = `Hello Bob, this is Alice in a browser (${token})`;
const TEXT_TO_ALICE = `Hi Alice, Bob here, answering from mine (${token})`;
const TEXT_TO_ROOM = `Welcome to our room (${token})`;
const ROOM = `room-${token}`;
// A 1x1 PNG, for the file upload.
const PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
const WAIT = 30_000; // the longest any one thing may take to show up (a cold browser on a busy machine)

const result = {
  ok: false,
  steps: [],
  sent: { to_bob: TEXT_TO_BOB, to_alice: TEXT_TO_ALICE, to_room: TEXT_TO_ROOM },
  alice: {},
  bob: {},
  requests: [],
  websockets: [],
  csp_violations: [],
  page_errors: [],
  console_errors: [],
  error: null,
};
const requests = new Set(); // every URL the pages asked for, once
const websockets = new Set();

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox"],
});

async function person(name, jid, png) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 }, locale: "en-US" });
  context.setDefaultTimeout(WAIT);
  context.on("request", (request) => requests.add(request.url()));
  const page = await context.newPage();
  const trail = [];
  page.on("pageerror", (error) => result.page_errors.push(`${name}: ${error.message}`));
  page.on("console", (message) => {
    if (message.type() === "error") result.console_errors.push(`${name}: ${message.text()}`);
    remember(trail, `console.${message.type()}: ${message.text()}`);
  });
  // What this page's XMPP stream carried, for the report of a failure.
  page.on("websocket", (socket) => {
    websockets.add(socket.url());
    socket.on("framesent", (frame) => remember(trail, `sent: ${frame.payload}`));
    socket.on("framereceived", (frame) => remember(trail, `received: ${frame.payload}`));
  });
  // What the page's Content-Security-Policy refused, as the page itself learns it.
  await page.exposeFunction("reportViolation", (text) => result.csp_violations.push(`${name}: ${text}`));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (event) =>
      window.reportViolation(`${event.violatedDirective} ${event.blockedURI}`),
    );
  });
  return { name, jid, page, png, trail };
}

// The newest TRAIL entries of a page (console messages and WebSocket frames), with the time since
// the start: printed only when a step fails, to show what the page and the server said last.
const TRAIL = 80;
const started = Date.now();
function remember(trail, text) {
  trail.push(`+${((Date.now() - started) / 1000).toFixed(2)}s ${String(text).slice(0, 600)}`);
  if (trail.length > TRAIL) trail.shift();
}

async function step(what, action) {
  await action();
  result.steps.push(what);
}

async function screenshot(who, path, key) {
  await who.page.screenshot({ path });
  result[who.name][key] = path;
}

async function logIn({ page, jid }, password) {
  await page.goto(url);
  // The domain is locked to the server's: the form asks for the name only.
  await page.locator("#converse-login-jid").fill(jid.split("@")[0]);
  await page.locator("#converse-login-password").fill(password);
  await page.locator("#converse-login button[type=submit]").click();
}

function contact(page, jid) {
  return page.locator(`converse-roster a.open-chat[data-jid="${jid}"]`).first();
}

function chatWith(page, jid) {
  return page.locator(`converse-chat[jid="${jid}"]`);
}

function room(page) {
  return page.locator(`converse-muc[jid^="${ROOM}@"]`);
}

async function joinRoom(page) {
  await page.locator("#chatrooms converse-dropdown button.dropdown-toggle").click();
  await page.locator("a.show-add-muc-modal").click();
  // A name without a domain: Converse adds the server's room service (muc_domain). The typed name
  // is checked before Join: a room opened under another name would leave the next wait to time
  // out without saying why.
  const name = page.locator('converse-add-muc-modal input[name="chatroom"]');
  await name.pressSequentially(ROOM);
  const typed = await name.inputValue();
  if (typed !== ROOM) throw new Error(`the dialog's room name field holds "${typed}", not "${ROOM}"`);
  await page.locator('converse-add-muc-modal input[type="submit"]').click();
  await room(page).locator("textarea.chat-textarea").waitFor();
}

let alice, bob;
try {
  alice = await person("alice", aliceJid, alicePng);
  bob = await person("bob", bobJid, bobPng);

  await step("both logged in and see each other in their contacts", async () => {
    await Promise.all([logIn(alice, alicePassword), logIn(bob, bobPassword)]);
    await Promise.all([contact(alice.page, bobJid).waitFor(), contact(bob.page, aliceJid).waitFor()]);
    result.alice.logged_in = result.bob.logged_in = true;
  });

  await step("alice opened the chat with bob and sent a message", async () => {
    await contact(alice.page, bobJid).click();
    const box = chatWith(alice.page, bobJid).locator("textarea.chat-textarea");
    await box.pressSequentially(TEXT_TO_BOB); // key by key, as a person types
    await box.press("Enter");
    await chatWith(alice.page, bobJid).locator(".chat-msg__text", { hasText: TEXT_TO_BOB }).waitFor();
  });

  await step("bob saw it as unread next to alice's name, opened the chat and read it", async () => {
    await bob.page.locator("converse-roster .msgs-indicator, converse-roster .badge").first().waitFor();
    await contact(bob.page, aliceJid).click();
    const message = chatWith(bob.page, aliceJid).locator(".chat-msg__text", { hasText: TEXT_TO_BOB });
    await message.waitFor();
    result.bob.received = (await message.textContent()).trim();
  });

  await step("alice saw that it was delivered (a receipt)", async () => {
    const mine = chatWith(alice.page, bobJid).locator(".chat-msg", { hasText: TEXT_TO_BOB });
    await mine.locator(".chat-msg__receipt").waitFor();
    result.alice.receipt = true;
  });

  await step("alice saw bob typing, then his answer", async () => {
    const box = chatWith(bob.page, aliceJid).locator("textarea.chat-textarea");
    await box.pressSequentially(TEXT_TO_ALICE.slice(0, 10));
    const typing = chatWith(alice.page, bobJid).locator(".chat-content__notifications", { hasText: "typing" });
    await typing.waitFor();
    result.alice.typing = (await typing.textContent()).trim();
    await box.pressSequentially(TEXT_TO_ALICE.slice(10));
    await box.press("Enter");
    const answer = chatWith(alice.page, bobJid).locator(".chat-msg__text", { hasText: TEXT_TO_ALICE });
    await answer.waitFor();
    result.alice.received = (await answer.textContent()).trim();
  });

  await step("alice sent a picture (file upload) and bob's page shows it", async () => {
    const picture = { name: `dot-${token}.png`, mimeType: "image/png", buffer: Buffer.from(PNG, "base64") };
    await chatWith(alice.page, bobJid).locator("input.fileupload").setInputFiles(picture);
    const shown = chatWith(bob.page, aliceJid).locator(`img[src*="dot-${token}.png"]`);
    await shown.waitFor();
    await shown.evaluate((img) => img.decode()); // fetched from the server and decoded
    result.bob.picture = await shown.getAttribute("src");
  });
  await screenshot(alice, alicePng, "screenshot");
  await screenshot(bob, bobPng, "screenshot");

  await step("both joined a new room, alice wrote there and bob read it", async () => {
    await joinRoom(alice.page); // creates it
    await joinRoom(bob.page);
    result.room = await room(alice.page).getAttribute("jid");
    await room(alice.page).locator(".occupant-list, converse-muc-occupants").getByText("bob").first().waitFor();
    const box = room(alice.page).locator("textarea.chat-textarea");
    await box.pressSequentially(TEXT_TO_ROOM);
    await box.press("Enter");
    const message = room(bob.page).locator(".chat-msg__text", { hasText: TEXT_TO_ROOM });
    await message.waitFor();
    result.bob.room_received = (await message.textContent()).trim();
  });
  await screenshot(alice, alicePng.replace(/\.png$/, "-room.png"), "room_screenshot");
  await screenshot(bob, bobPng.replace(/\.png$/, "-room.png"), "room_screenshot");
  result.ok = true;
} catch (error) {
  result.error = String(error?.stack ?? error);
  for (const who of [alice, bob]) {
    if (!who) continue;
    result[who.name].trail = who.trail;
    try {
      await screenshot(who, who.png, "screenshot"); // what the page showed when it failed
    } catch (failure) {
      result.error += `\nno screenshot of ${who.name}: ${failure}`;
    }
  }
} finally {
  await browser.close();
}
result.requests = [...requests];
result.websockets = [...websockets];
console.log(JSON.stringify(result, null, 2));
process.exit(result.ok ? 0 : 1);

// Starts Converse.js on the web chat page of xmppd (xmppd/modules/webchat.py, which serves this
// file and the page). The server puts what it knows in the page as JSON (the XMPP domain, whether
// registration is open, the room service, where the assets are); what depends on how the browser
// reached the server (ws:// or wss://, the host and port) is computed here from `location`, so the
// same page works on the plain port, on HTTPS and behind a reverse proxy on any name.
const server = JSON.parse(document.getElementById("xmppd-webchat-settings").textContent);

const secure = location.protocol === "https:";
const transport = server.websocket_path
  ? { websocket_url: `${secure ? "wss" : "ws"}://${location.host}${server.websocket_path}` }
  : { bosh_service_url: `${location.origin}${server.bosh_path}` };

// Media in messages is shown inline only from this server (the page's host and the file upload
// service's): the page's Content-Security-Policy would block any other host anyway, and other
// links stay links.
const media_domains = [...new Set([location.hostname, ...server.media_domains])];

// Converse's own footer (fullscreen) shows its sponsors' logos from conversejs.org: this page loads
// nothing from elsewhere, so it has a footer of its own. Converse defines its elements only where
// the page has not (src/shared/registry.js), so defining this one first replaces Converse's.
customElements.define(
  "converse-footer",
  class extends HTMLElement {
    connectedCallback() {
      const footer = document.createElement("footer");
      footer.className = "footer mt-auto py-3 text-center subdued";
      footer.textContent = `${server.domain} · Converse.js`;
      this.replaceChildren(footer);
    }
  },
);

// The page runs converse.min.js before this script, which sets window.converse (and announces it
// with `converse-loaded`, waited for in case a browser ran the two otherwise).
const converse =
  window.converse ??
  (await new Promise((resolve) => {
    window.addEventListener("converse-loaded", (event) => resolve(event.detail.converse), { once: true });
  }));
converse.initialize({
  ...transport,
  discover_connection_methods: false, // the server said where its endpoint is, above
  assets_path: server.assets_path, // the lazily loaded parts: locales, emoji, OMEMO, fonts
  view_mode: "fullscreen",
  authentication: "login",
  auto_login: false,
  auto_reconnect: true,
  // Accounts of this server only: users type their name, not a whole address.
  default_domain: server.domain,
  locked_domain: server.domain,
  domain_placeholder: server.domain,
  allow_registration: server.allow_registration,
  registration_domain: server.allow_registration ? server.domain : "",
  // Group chat on this server's room service, a nickname from the account's name. The room search
  // (XEP-0433, by default search.jabber.network's) is asked of this server's own room service,
  // never of a service elsewhere (Converse 14 shows no room name field when there is none).
  muc_domain: server.muc_domain ?? undefined,
  muc_search_service: server.muc_domain ?? "",
  muc_nickname_from_jid: true,
  // One-to-one chat with anyone on the server, contact or not yet (as native clients do).
  allow_non_roster_messaging: true,
  // Nothing from outside this server: no lists of public providers, no third-party players, the
  // system's emoji font rather than images from a CDN.
  xmpp_providers_url: "",
  autocomplete_providers_url: "",
  providers_link: "",
  embed_3rd_party_media_players: false,
  use_system_emojis: true,
  allowed_image_domains: media_domains,
  allowed_audio_domains: media_domains,
  allowed_video_domains: media_domains,
  notification_icon: `${server.assets_path}/images/logo/conversejs-filled.svg`,
});

// The agent page: sign-in, state, the call with its screen-pop, and the phone (JsSIP over
// SIP WebSocket, audio over WebRTC). Live updates come from /agent/events; nothing polls.
"use strict";

const TEXT = {
  en: {
    language: "Language", sign_in: "Sign in", extension: "Extension", password: "Password",
    my_state: "My state", phone: "Phone", available: "Available", take_break: "Take a break",
    break_reason: "Break reason", reason_lunch: "Lunch", reason_training: "Training",
    reason_personal: "Personal", sign_out: "Log out", call: "Call", no_call: "No call",
    answer: "Answer", hang_up: "Hang up", hold: "Hold", mute: "Mute", transfer: "Transfer",
    transfer_to: "Transfer to (queue or account)", recent_calls: "Recent calls",
    phone_connecting: "connecting", phone_registered: "ready", phone_failed: "not registered",
    phone_reconnecting: "connection lost: reconnecting…",
    phone_no_webrtc: "unavailable: this server's media engine does not carry WebRTC (media.engine: rtpengine)",
    phone_no_websocket: "unavailable: the server has no SIP WebSocket listener (sip.listen ws: or wss:)",
    phone_not_built: "unavailable: the page's SIP phone is not built on the server (scripts/build-agent-page)",
    ringing: "Ringing: {caller}", talking: "Talking with {caller}", on_hold: "On hold: {caller}",
    wrap_up_left: "{seconds} s of wrap-up left", taken_over: "You signed in on another page: this one is closed.",
    reconnecting: "Connection lost: reconnecting…", bad_sign_in: "Wrong extension or password.",
    state_offline: "Logged out", state_available: "Available", state_reserved: "Reserved",
    state_ringing: "Ringing", state_on_call: "On a call", state_wrap_up: "Wrap-up", state_break: "On a break",
    k_caller: "Caller", k_queue: "Queue", k_priority: "Priority", k_language: "Language",
    k_ivr: "IVR path", k_tier: "Customer tier", k_last_agent: "Last agent", k_routing: "Routing decision",
  },
  es: {
    language: "Idioma", sign_in: "Entrar", extension: "Extensión", password: "Contraseña",
    my_state: "Mi estado", phone: "Teléfono", available: "Disponible", take_break: "Tomar una pausa",
    break_reason: "Motivo de la pausa", reason_lunch: "Comida", reason_training: "Formación",
    reason_personal: "Personal", sign_out: "Salir", call: "Llamada", no_call: "Sin llamada",
    answer: "Contestar", hang_up: "Colgar", hold: "Espera", mute: "Silenciar", transfer: "Transferir",
    transfer_to: "Transferir a (cola o cuenta)", recent_calls: "Llamadas recientes",
    phone_connecting: "conectando", phone_registered: "listo", phone_failed: "sin registrar",
    phone_reconnecting: "conexión perdida: reconectando…",
    phone_no_webrtc: "no disponible: el motor de medios de este servidor no lleva WebRTC (media.engine: rtpengine)",
    phone_no_websocket: "no disponible: el servidor no escucha SIP por WebSocket (sip.listen ws: o wss:)",
    phone_not_built: "no disponible: el teléfono SIP de la página no está construido en el servidor (scripts/build-agent-page)",
    ringing: "Suena: {caller}", talking: "Hablando con {caller}", on_hold: "En espera: {caller}",
    wrap_up_left: "Quedan {seconds} s de cierre", taken_over: "Has entrado en otra página: esta queda cerrada.",
    reconnecting: "Conexión perdida: reconectando…", bad_sign_in: "Extensión o contraseña incorrectas.",
    state_offline: "Desconectado", state_available: "Disponible", state_reserved: "Reservado",
    state_ringing: "Sonando", state_on_call: "En llamada", state_wrap_up: "Cierre", state_break: "En pausa",
    k_caller: "Llamante", k_queue: "Cola", k_priority: "Prioridad", k_language: "Idioma",
    k_ivr: "Recorrido IVR", k_tier: "Nivel de cliente", k_last_agent: "Último agente", k_routing: "Decisión de enrutado",
  },
};

const $ = (id) => document.getElementById(id);
const desk = {
  lang: (localStorage.getItem("lang") || navigator.language || "en").slice(0, 2) === "es" ? "es" : "en",
  token: null, extension: null, state: "offline", ua: null, session: null, offer: null,
  events: null, closedForGood: false, wrapUntil: null, recent: [], retry: 0,
};
window.desk = desk;  // for tests and the console

function t(key, values = {}) {
  const text = (TEXT[desk.lang][key] ?? TEXT.en[key] ?? key);
  return text.replace(/\{(\w+)\}/g, (_, name) => values[name] ?? "");
}

function translatePage() {
  document.documentElement.lang = desk.lang;
  $("lang").value = desk.lang;
  for (const element of document.querySelectorAll("[data-i18n]")) element.textContent = t(element.dataset.i18n);
  showState();
  showCall();
}

// -- sign-in and state -------------------------------------------------------------------
async function api(method, path, body) {
  const response = await fetch(path, {
    method, headers: { "Content-Type": "application/json", ...(desk.token ? { Authorization: `Bearer ${desk.token}` } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw Object.assign(new Error(data.error?.message || response.statusText), { status: response.status });
  return data;
}

async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  const extension = $("extension").value.trim(), password = $("password").value;
  let info;
  try {
    info = await api("POST", "session", { extension, password });
  } catch (error) {
    $("signin-error").textContent = error.status === 401 ? t("bad_sign_in") : error.message;
    return;
  }
  Object.assign(desk, { token: info.token, extension, domain: info.sip_domain, closedForGood: false, recent: [],
                        resume: null, phoneLost: false });
  $("signin").hidden = true;
  $("desk").hidden = false;
  $("who").textContent = `${info.name || ""} · ${extension}`;
  applyState(info);
  openEvents();
  loadRecent();
  startPhone(info, password);
}

function applyState(info) {
  desk.state = info.state;
  desk.reason = info.reason;
  // What to go back to if the phone's connection drops: the router takes an agent whose
  // phone unregisters offline, and the page puts them back once JsSIP has registered again.
  if (info.state === "available" || info.state === "break") desk.resume = { state: info.state, reason: info.reason };
  // Logged out with the phone reachable (by a supervisor, say): not something to undo.
  if (info.state === "offline" && info.reachable !== false) desk.resume = null;
  if (info.state !== "wrap_up") desk.wrapUntil = null;
  showState();
}

function showState() {
  if (!desk.extension) return;
  const state = $("state");
  state.dataset.state = desk.state;
  state.textContent = t(`state_${desk.state}`);
  let detail = desk.state === "break" && desk.reason ? desk.reason : "";
  if (desk.state === "wrap_up" && desk.wrapUntil) {
    detail = t("wrap_up_left", { seconds: Math.max(0, Math.ceil((desk.wrapUntil - Date.now()) / 1000)) });
  }
  $("state-detail").textContent = detail;
}

async function changeState(state, reason) {
  try {
    applyState(await api("POST", "state", { state, reason }));
  } catch (error) {
    $("notice").textContent = error.message;
  }
}

async function signOut() {
  try { await api("DELETE", "session"); } catch (error) { /* signed out anyway */ }
  closeDesk("");
}

function closeDesk(message) {
  desk.closedForGood = true;
  if (desk.events) desk.events.close();
  if (desk.ua) desk.ua.stop();
  desk.token = null;
  $("notice").textContent = message;
  $("signin").hidden = false;
  $("desk").hidden = !message;
  for (const button of document.querySelectorAll("#desk button")) button.disabled = true;
}

// -- live events (a WebSocket that comes back when it drops) ----------------------------
function openEvents() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${location.pathname.replace(/[^/]*$/, "")}events`;
  const socket = new WebSocket(url);
  desk.events = socket;
  socket.onopen = () => { desk.retry = 0; socket.send(JSON.stringify({ token: desk.token })); $("notice").textContent = ""; };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = () => {
    if (desk.closedForGood || desk.events !== socket) return;
    $("notice").textContent = t("reconnecting");
    desk.retry = Math.min(desk.retry + 1, 5);
    setTimeout(openEvents, 500 * desk.retry);
  };
}

function onEvent(event) {
  if (event.type === "state") applyState(event);
  else if (event.type === "offer") { desk.offer = event; showCall(); }
  else if (event.type === "call_ended") {
    // Shown at once; the call record, written a moment later, replaces it on the next load.
    addRecent([{ call_id: event.call_id, caller: desk.offer?.caller || "", queue: event.queue, at: new Date(), local: true }]);
    setTimeout(loadRecent, 3000);
    if (event.wrap_up_seconds > 0) desk.wrapUntil = Date.now() + event.wrap_up_seconds * 1000;
    showState();
  } else if (event.type === "taken_over") closeDesk(t("taken_over"));
  else if (event.type === "unauthorized") closeDesk(t("bad_sign_in"));
}

setInterval(() => { if (desk.state === "wrap_up") showState(); }, 1000);

// The agent's recent calls come from the call records (GET calls), so a reload or a new
// sign-in shows them too; a call that just ended is added until its record is written.
async function loadRecent() {
  if (!desk.token) return;
  try {
    const { calls } = await api("GET", "calls");
    addRecent(calls.map((call) => ({ ...call, at: new Date(call.started) })), true);
  } catch (error) { /* kept as it was; the next call ending loads it again */ }
}

function addRecent(calls, fromRecords = false) {
  const recorded = new Set(calls.map((call) => call.call_id));
  const kept = desk.recent.filter((call) => !recorded.has(call.call_id) && (call.local || !fromRecords));
  desk.recent = [...calls, ...kept].sort((a, b) => b.at - a.at).slice(0, 20);
  showRecent();
}

function showRecent() {
  $("recent").replaceChildren(...desk.recent.map((call) => {
    const item = document.createElement("li");
    item.dataset.callId = call.call_id || "";
    const seconds = call.talk_seconds == null ? null : Math.round(call.talk_seconds);
    const talk = seconds === null ? "" : ` · ${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
    item.textContent = `${call.at.toLocaleString(desk.lang, { dateStyle: "short", timeStyle: "short" })} · ${call.caller} · ${call.queue || ""}${talk}`;
    return item;
  }));
}

// -- the phone -----------------------------------------------------------------------------
function startPhone(info, password) {
  if (!info.webrtc_media) {
    $("phone-state").textContent = t("phone_no_webrtc");
    return;
  }
  if (!window.JsSIP || !info.sip_websocket) {
    $("phone-state").textContent = t(window.JsSIP ? "phone_no_websocket" : "phone_not_built");
    return;
  }
  const ua = new JsSIP.UA({
    sockets: [new JsSIP.WebSocketInterface(info.sip_websocket)],
    uri: `sip:${desk.extension}@${info.sip_domain}`, password, register: true, session_timers: false,
    user_agent: "Centralita agent page",
  });
  desk.ua = ua;
  ua.on("registered", () => {
    $("phone-state").textContent = t("phone_registered");
    $("phone-state").dataset.registered = "yes";
    if (desk.phoneLost && desk.resume && ["offline", "available", "break"].includes(desk.state)) {
      changeState(desk.resume.state, desk.resume.reason || undefined);
    }
    desk.phoneLost = false;
  });
  ua.on("registrationFailed", () => { $("phone-state").textContent = t("phone_failed"); $("phone-state").dataset.registered = "no"; });
  // JsSIP reconnects by itself and registers again; until then the agent sees why no call comes.
  ua.on("disconnected", () => {
    if (desk.closedForGood) return;
    desk.phoneLost = true;
    $("phone-state").textContent = t("phone_reconnecting");
    $("phone-state").dataset.registered = "no";
  });
  ua.on("newRTCSession", ({ session, originator, request }) => {
    if (originator !== "remote") return;
    if (desk.session) { session.terminate({ status_code: 486 }); return; }
    desk.session = session;
    desk.callId = request.call_id;  // the SIP Call-ID of the agent's leg
    desk.held = false;
    desk.muted = false;
    session.on("peerconnection", ({ peerconnection }) => attachAudio(peerconnection));
    session.on("accepted", showCall);
    session.on("confirmed", showCall);
    session.on("hold", showCall);
    session.on("unhold", showCall);
    for (const end of ["ended", "failed"]) {
      session.on(end, () => { if (desk.session === session) desk.session = null; desk.offer = null; showCall(); });
    }
    showCall();
  });
  ua.start();
}

function attachAudio(peerconnection) {
  peerconnection.addEventListener("track", (event) => { $("remote-audio").srcObject = event.streams[0]; });
}

function answer() {
  if (!desk.session || desk.session.isEstablished()) return;
  desk.session.answer({ mediaConstraints: { audio: true, video: false }, pcConfig: { iceServers: [] } });
  if (desk.session.connection) attachAudio(desk.session.connection);
}

function hangUp() { if (desk.session) desk.session.terminate(); }

function toggleHold() {
  if (!desk.session?.isEstablished()) return;
  desk.held = !desk.held;
  if (desk.held) desk.session.hold(); else desk.session.unhold();
  showCall();
}

function toggleMute() {
  if (!desk.session?.isEstablished()) return;
  desk.muted = !desk.muted;
  if (desk.muted) desk.session.mute({ audio: true }); else desk.session.unmute({ audio: true });
  showCall();
}

function transfer() {
  const target = $("transfer-target").value.trim();
  if (!target || !desk.session?.isEstablished()) return;
  desk.session.refer(`sip:${target}@${desk.domain}`);
}

function showCall() {
  const session = desk.session, established = !!session?.isEstablished();
  const caller = desk.offer?.caller || session?.remote_identity?.uri?.user || "";
  let status = t("no_call");
  if (session) status = established ? t(desk.held ? "on_hold" : "talking", { caller }) : t("ringing", { caller });
  $("call-status").textContent = status;
  $("call-status").dataset.call = session ? (established ? "established" : "ringing") : "none";
  $("answer").disabled = !session || established;
  $("hangup").disabled = !session;
  for (const id of ["hold", "mute", "transfer"]) $(id).disabled = !established;
  $("hold").setAttribute("aria-pressed", String(!!desk.held));
  $("mute").setAttribute("aria-pressed", String(!!desk.muted));
  for (const key of document.querySelectorAll("#keypad button")) key.disabled = !established;
  showScreenPop();
}

function showScreenPop() {
  const pop = $("screen-pop");
  const context = desk.offer ? { caller: desk.offer.caller, queue: desk.offer.queue, ...desk.offer.context } : null;
  if (!context) { pop.replaceChildren(); return; }
  const ivr = context.ivr || {}, routing = context.routing || {};
  const values = {
    caller: context.caller, queue: context.queue, priority: context.priority, language: context.language,
    ivr: ivr.path ? [ivr.flow, ivr.path.map((step) => step.node).join(" → ")].filter(Boolean).join(": ")
      + (ivr.digits?.length ? ` (${ivr.digits.map((d) => d.digit).join("")})` : "") : null,
    tier: ivr.customer?.tier ?? context.tier,
    last_agent: routing.last_agent ?? context.last_agent,
    routing: routing.policy ? [routing.policy, routing.chosen, routing.note].filter(Boolean).join(" · ") : null,
  };
  const rows = [];
  for (const [key, value] of Object.entries(values)) {
    if (value === undefined || value === null || value === "") continue;
    const term = document.createElement("dt"), detail = document.createElement("dd");
    term.textContent = t(`k_${key}`);
    detail.textContent = String(value);
    detail.dataset.key = key;
    rows.push(term, detail);
  }
  pop.replaceChildren(...rows);
}

// WebRTC byte counts of the call, for tests and troubleshooting.
desk.audioBytes = async () => {
  const connection = desk.session?.connection;
  const totals = { received: 0, sent: 0 };
  if (!connection) return totals;
  (await connection.getStats()).forEach((report) => {
    if (report.type === "inbound-rtp" && report.kind === "audio") totals.received += report.bytesReceived || 0;
    if (report.type === "outbound-rtp" && report.kind === "audio") totals.sent += report.bytesSent || 0;
  });
  return totals;
};

// -- wiring --------------------------------------------------------------------------------
$("signin-form").addEventListener("submit", signIn);
$("lang").addEventListener("change", () => { desk.lang = $("lang").value; localStorage.setItem("lang", desk.lang); translatePage(); });
$("go-available").addEventListener("click", () => changeState("available"));
$("go-break").addEventListener("click", () => changeState("break", $("break-reason").value));
$("sign-out").addEventListener("click", signOut);
$("answer").addEventListener("click", answer);
$("hangup").addEventListener("click", hangUp);
$("hold").addEventListener("click", toggleHold);
$("mute").addEventListener("click", toggleMute);
$("transfer").addEventListener("click", transfer);
for (const key of document.querySelectorAll("#keypad button")) {
  // RFC 4733 in the media (rtpengine passes it through; SIP INFO digits it would not).
  key.addEventListener("click", () => {
    if (desk.session?.isEstablished()) desk.session.sendDTMF(key.textContent, { transportType: "RFC2833" });
  });
}
document.addEventListener("keydown", (event) => {
  if (event.target.closest("input, select, textarea") || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "a" || event.key === "A") { answer(); event.preventDefault(); }
  if (event.key === "h" || event.key === "H") { hangUp(); event.preventDefault(); }
});
translatePage();

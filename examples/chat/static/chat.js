// The chat page. plait.js (served by the App at /plait.js) keeps one WebSocket to
// /chat/<room>?name=<name> open: after a drop it reconnects with backoff and resumes with
// &since=<the last id seen>, so the list shows every message once, with no gap. The
// socket carries three tagged streams: "messages", "typing" and "members" (presence).
import { Client } from "/plait.js";

const element = (id) => document.getElementById(id);
const joinView = element("join-view");
const chatView = element("chat-view");
const joinForm = element("join");
const roomInput = element("room");
const nameInput = element("name");
const roomName = element("room-name");
const leaveButton = element("leave-button");
const status = element("status");
const memberList = element("members");
const memberCount = element("member-count");
const messages = element("messages");
const typingLine = element("typing");
const alertLine = element("alert");
const sayForm = element("say");
const textInput = element("text");
const sendButton = element("send");

// Typing notices are throttled: the server keeps them to a budget of their own, and a
// busy typist need not tell the room more than every few seconds.
const TYPING_EVERY = 2_500; // ms between two "I am typing" while one goes on typing
const TYPING_AGAIN = 1_000; // ms after one before the next message's "I am typing"
const TYPING_IDLE = 4_000; // ms without a key before "I stopped"
const TYPING_SHOWN = 6_000; // ms another's "typing" shows without news from them
const TEXT_MAX = 500; // characters in a message: the server closes on a longer one
const PENDING_MAX = 64; // messages sent and not yet seen back, remembered for a refusal

let client = null; // the room's connection, while joined
let me = ""; // my name in the room
let members = new Map(); // name -> how many connections (tabs) it has
const typers = new Map(); // name -> the timer that forgets that they type
let typingSent = 0; // when I last said that I type
let typing = false; // whether the room was told that I type, and not yet that I stopped
let typingTimer = null;
let typingLater = null; // an "I am typing" the throttle holds back, sent once it allows
const pending = new Map(); // ref -> text of each message sent and not yet seen back
// A message's ref: this page's own prefix (not crypto.randomUUID, which a page served
// over plain http from another host than localhost does not have), and a count.
const REF_PREFIX = Math.random().toString(36).slice(2, 10);
let sent = 0;
let alertTimer = null;

const clock = new Intl.DateTimeFormat([], { hour: "2-digit", minute: "2-digit" });

// "idle" (not joined), or plait.js's "connecting", "open", "closed"; tests wait on it.
function setState(state, text) {
  status.dataset.state = state;
  status.textContent = text;
  const sendable = state !== "idle" && !(state === "closed" && client === null);
  textInput.disabled = sendButton.disabled = !sendable;
}

function scrolled(add) {
  const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 24;
  add();
  if (atBottom) {
    messages.scrollTop = messages.scrollHeight;
  }
}

function notice(text, kind = "notice") {
  const item = document.createElement("li");
  item.className = kind;
  item.textContent = text;
  scrolled(() => messages.append(item));
}

function showAlert(text) {
  alertLine.textContent = text;
  alertLine.hidden = false;
  clearTimeout(alertTimer);
  alertTimer = setTimeout(() => (alertLine.hidden = true), 4_000);
}

// One item of "messages": {"channel": room, "id": ..., "data": {"type", "user", "text", "at"}}.
function showMessage({ id, data }) {
  if (data?.type !== "message") {
    return;
  }
  const item = document.createElement("li");
  item.className = data.user === me ? "message mine" : "message";
  item.dataset.id = id;
  const who = document.createElement("span");
  who.className = "user";
  who.textContent = data.user;
  const when = document.createElement("time");
  const at = new Date(data.at * 1000);
  when.dateTime = at.toISOString();
  when.title = at.toLocaleString();
  when.textContent = clock.format(at);
  const what = document.createElement("p");
  what.className = "text";
  what.textContent = data.text;
  item.append(who, when, what);
  if (data.user === me) {
    pending.delete(data.ref); // said: no refusal can come for it now
  }
  forgetTyper(data.user);
  scrolled(() => messages.append(item));
}

function showMembers() {
  const names = [...members.keys()].sort((a, b) => a.localeCompare(b));
  memberList.replaceChildren(...names.map((name) => {
    const item = document.createElement("li");
    item.dataset.user = name;
    item.textContent = name;
    item.classList.toggle("me", name === me);
    item.classList.toggle("typing", typers.has(name));
    const tabs = members.get(name);
    if (tabs > 1) {
      item.title = `${tabs} connections`;
    }
    return item;
  }));
  memberCount.textContent = `(${names.length})`;
}

// One item of "members": a presence_state (everyone), then presence_diffs.
function showPresence(event) {
  if (event.type === "presence_state") {
    members = new Map(Object.entries(event.presences).map(([name, p]) => [name, p.count]));
  } else if (event.type === "presence_diff") {
    for (const [name, { count }] of Object.entries(event.leaves)) {
      if (count === 0 && members.delete(name)) {
        forgetTyper(name);
        notice(`${name} left`, "event");
      }
    }
    for (const [name, { count }] of Object.entries(event.joins)) {
      if (!members.has(name) && name !== me) {
        notice(`${name} joined`, "event");
      }
      members.set(name, count);
    }
  }
  showMembers();
}

function showTypers() {
  const names = [...typers.keys()];
  typingLine.textContent =
    names.length === 0 ? "" :
    names.length === 1 ? `${names[0]} is typing…` :
    names.length <= 3 ? `${names.slice(0, -1).join(", ")} and ${names.at(-1)} are typing…` :
    `${names.length} people are typing…`;
  for (const item of memberList.children) {
    item.classList.toggle("typing", typers.has(item.dataset.user));
  }
}

function forgetTyper(name) {
  if (typers.has(name)) {
    clearTimeout(typers.get(name));
    typers.delete(name);
    showTypers();
  }
}

// One item of "typing": {"user", "typing"}.
function showTyping({ user, typing }) {
  if (user === me) {
    return;
  }
  clearTimeout(typers.get(user));
  if (typing) {
    typers.set(user, setTimeout(() => forgetTyper(user), TYPING_SHOWN));
    showTypers();
  } else {
    forgetTyper(user);
  }
}

// Typing is news only now: never queued for a connection to come.
function sendTyping(typing) {
  if (client?.state === "open") {
    client.send({ type: "typing", typing });
  }
}

// "I stopped" only after an "I am typing"; and not when a message is sent, since the
// message itself tells the others (their pages forget a typer whose message comes).
function stopTyping(tell = true) {
  clearTimeout(typingTimer);
  clearTimeout(typingLater);
  typingLater = null;
  if (typing && tell) {
    sendTyping(false);
  }
  typing = false;
}

function startTyping() {
  clearTimeout(typingLater);
  typingLater = null;
  if (textInput.value.trim()) {
    typingSent = Date.now();
    typing = true;
    sendTyping(true);
  }
}

textInput.addEventListener("input", () => {
  if (!textInput.value.trim()) {
    stopTyping();
    return;
  }
  // While typing goes on, a reminder every TYPING_EVERY; once a message is sent, the
  // next one's first key tells the room again, but not sooner than TYPING_AGAIN.
  const since = Date.now() - typingSent;
  if (since > (typing ? TYPING_EVERY : TYPING_AGAIN)) {
    startTyping();
  } else if (!typing && typingLater === null) {
    typingLater = setTimeout(startTyping, TYPING_AGAIN - since);
  }
  clearTimeout(typingTimer);
  typingTimer = setTimeout(stopTyping, TYPING_IDLE);
});

function join(room, name) {
  me = name;
  roomName.textContent = room;
  document.title = `${room} · plait chat`;
  joinView.hidden = true;
  chatView.hidden = false;
  const query = new URLSearchParams({ name });
  client = new Client(`/chat/${encodeURIComponent(room)}?${query}`);
  client.on("messages", showMessage);
  client.on("typing", showTyping);
  client.on("members", showPresence);
  client.onMessage((reply) => {
    if (reply?.error === "rate limit exceeded") {
      refused(reply);
    }
  });
  client.onRecovery(() => notice("Some messages were missed while you were away."));
  client.onState(({ state, code, reason, retryIn }) => {
    const why = reason ? `${code} ${reason}` : `${code}`;
    if (state === "connecting") {
      setState(state, "Connecting…");
    } else if (state === "open") {
      setState(state, `Connected as ${name}`);
      textInput.focus();
    } else if (retryIn !== null) {
      setState(state, `Disconnected (${why}); reconnecting in ${(retryIn / 1000).toFixed(1)} s…`);
      typing = false;
    } else {
      client = null;
      setState(state, `Closed (${why})`);
    }
  });
  client.connect();
}

// A refusal names the message it concerns by its ref: that text goes back into the
// input, after anything refused before it, so that nothing typed is lost. The route's
// flood guard refuses with no ref; only a script sends fast enough to meet it.
function refused({ ref, detail }) {
  const text = pending.get(ref);
  pending.delete(ref);
  if (text === undefined) {
    showAlert(`Slow down: ${detail}. A message was not sent.`);
    return;
  }
  textInput.value = textInput.value ? `${textInput.value} ${text}` : text;
  showAlert(`Slow down: ${detail}. Your message is back in the box: send it again in a moment.`);
}

function leave() {
  stopTyping();
  pending.clear();
  client?.disconnect();
  client = null;
  members.clear();
  for (const name of [...typers.keys()]) {
    forgetTyper(name);
  }
  messages.replaceChildren();
  setState("idle", "Not connected");
  chatView.hidden = true;
  joinView.hidden = false;
  document.title = "plait chat";
}

joinForm.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const room = roomInput.value.trim();
  const name = nameInput.value.trim();
  if (room && name) {
    join(room, name);
  }
});

leaveButton.addEventListener("click", leave);

sayForm.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const text = textInput.value.trim();
  if (!text || client === null) {
    return;
  }
  if (text.length > TEXT_MAX) {
    showAlert(`That is ${text.length} characters; a message holds at most ${TEXT_MAX}.`);
    return;
  }
  stopTyping(false);
  const ref = `${REF_PREFIX}-${++sent}`;
  try {
    client.send({ type: "say", text, ref }); // while reconnecting: queued, sent once back
    pending.set(ref, text);
    if (pending.size > PENDING_MAX) {
      pending.delete(pending.keys().next().value); // never seen back: lost in a drop
    }
    textInput.value = ""; // back if refused
    messages.scrollTop = messages.scrollHeight;
  } catch (error) {
    showAlert(error.message); // closed for good, or too much waiting already
  }
});

// ?room=...&name=... fill the form in, so that a link can name the room.
const given = new URLSearchParams(location.search);
roomInput.value = given.get("room") || roomInput.value;
nameInput.value = given.get("name") || "";

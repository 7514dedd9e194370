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

const TYPING_EVERY = 2_500; // ms between two "I am typing" while one goes on typing
const TYPING_IDLE = 4_000; // ms without a key before "I stopped"
const TYPING_SHOWN = 6_000; // ms another's "typing" shows without news from them

let client = null; // the room's connection, while joined
let me = ""; // my name in the room
let members = new Map(); // name -> how many connections (tabs) it has
const typers = new Map(); // name -> the timer that forgets that they type
let typingSince = 0; // when I last said that I type; 0: I do not
let typingTimer = null;
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

function stopTyping() {
  clearTimeout(typingTimer);
  if (typingSince) {
    typingSince = 0;
    sendTyping(false);
  }
}

textInput.addEventListener("input", () => {
  if (!textInput.value.trim()) {
    stopTyping();
    return;
  }
  if (Date.now() - typingSince > TYPING_EVERY) {
    typingSince = Date.now();
    sendTyping(true);
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
      showAlert(`Slow down: ${reply.detail}. That message was not sent.`);
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
      typingSince = 0;
    } else {
      client = null;
      setState(state, `Closed (${why})`);
    }
  });
  client.connect();
}

function leave() {
  stopTyping();
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
  stopTyping();
  try {
    client.send({ type: "say", text }); // while reconnecting: queued, sent once back
    textInput.value = "";
    messages.scrollTop = messages.scrollHeight;
  } catch (error) {
    showAlert(error.message); // closed for good, or too much waiting already
  }
});

// ?room=...&name=... fill the form in, so that a link can name the room.
const given = new URLSearchParams(location.search);
roomInput.value = given.get("room") || roomInput.value;
nameInput.value = given.get("name") || "";

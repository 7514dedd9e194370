// The chat page. plait.js (served by the App at /plait.js) keeps one WebSocket to
// /chat/<room>?name=<name> open: after a drop it reconnects with backoff and resumes with
// &since=<the last id seen>, so the list shows every message once, with no gap.
import { Client } from "/plait.js";

const element = (id) => document.getElementById(id);
const joinForm = element("join");
const roomInput = element("room");
const nameInput = element("name");
const joinButton = element("join-button");
const leaveButton = element("leave-button");
const status = element("status");
const messages = element("messages");
const sayForm = element("say");
const textInput = element("text");
const sendButton = element("send");

let client = null; // the room's connection, while joined

// "idle" (not joined), or plait.js's "connecting", "open", "closed"; tests wait on it.
function setState(state, text, sendable) {
  status.dataset.state = state;
  status.textContent = text;
  textInput.disabled = !sendable;
  sendButton.disabled = !sendable;
  roomInput.disabled = nameInput.disabled = state !== "idle";
  joinButton.hidden = state !== "idle";
  leaveButton.hidden = state === "idle";
  if (state === "open") {
    textInput.focus();
  }
}

function notice(text) {
  const item = document.createElement("li");
  item.className = "notice";
  item.textContent = text;
  messages.append(item);
}

// One room event: {"channel": room, "id": ..., "data": {"type", "user", "text"}}.
function show(event) {
  const { type, user, text } = event.data;
  const item = document.createElement("li");
  item.className = type;
  item.dataset.id = event.id;
  if (type === "message") {
    const who = document.createElement("span");
    who.className = "user";
    who.textContent = user;
    const what = document.createElement("span");
    what.className = "text";
    what.textContent = text;
    item.append(who, what);
  } else {
    item.textContent = `${user} ${type === "join" ? "joined" : "left"}`;
  }
  const atBottom = messages.scrollHeight - messages.scrollTop - messages.clientHeight < 8;
  messages.append(item);
  if (atBottom) {
    messages.scrollTop = messages.scrollHeight;
  }
}

function join(room, name) {
  const query = new URLSearchParams({ name });
  client = new Client(`/chat/${encodeURIComponent(room)}?${query}`);
  client.onMessage(show);
  client.onRecovery(() => notice("Some messages were missed while you were away."));
  client.onState(({ state, code, reason, retryIn }) => {
    const why = reason ? `${code} ${reason}` : `${code}`;
    if (state === "connecting") {
      setState(state, `Connecting to ${room}…`, true);
    } else if (state === "open") {
      setState(state, `Connected to ${room} as ${name}`, true);
    } else if (retryIn !== null) {
      const seconds = (retryIn / 1000).toFixed(1);
      setState(state, `Disconnected (${why}); reconnecting in ${seconds} s…`, true);
    } else {
      setState(state, `Closed (${why})`, false);
    }
  });
  client.connect();
}

function leave() {
  client?.disconnect();
  client = null;
  setState("idle", "Not connected", false);
}

joinForm.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  leave();
  messages.replaceChildren();
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
  try {
    client.send({ text }); // while reconnecting: queued, sent once the room is back
    textInput.value = "";
  } catch (error) {
    notice(error.message); // closed for good, or too much waiting already
  }
});

// ?room=...&name=... fill the form in, so that a link can name the room.
const given = new URLSearchParams(location.search);
roomInput.value = given.get("room") || roomInput.value;
nameInput.value = given.get("name") || "";

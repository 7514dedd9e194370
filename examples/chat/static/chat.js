// The chat page: one WebSocket to /chat/<room>?name=<name> on the host that served it.
// Every event arrives as {"channel", "id", "data"}; the page keeps the last id it saw and,
// after a drop, reconnects with &since=<that id> so the server replays what was missed
// before going live again.
"use strict";

// Waits between reconnection attempts, then the last one again and again.
const RETRY_DELAYS_MS = [250, 500, 1000, 2000, 4000];

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

let session = null; // {room, name, lastId, attempts, socket, timer} while joined

function socketUrl(room, name, since) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ name });
  if (since !== null) {
    query.set("since", since);
  }
  return `${scheme}//${location.host}/chat/${encodeURIComponent(room)}?${query}`;
}

// One of "idle", "connecting", "connected", "reconnecting"; tests wait on data-state.
function setState(state, text) {
  status.dataset.state = state;
  status.textContent = text;
  const connected = state === "connected";
  textInput.disabled = !connected;
  sendButton.disabled = !connected;
  roomInput.disabled = nameInput.disabled = state !== "idle";
  joinButton.hidden = state !== "idle";
  leaveButton.hidden = state === "idle";
  if (connected) {
    textInput.focus();
  }
}

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

function notice(text) {
  const item = document.createElement("li");
  item.className = "notice";
  item.textContent = text;
  messages.append(item);
}

function connect(current) {
  const socket = new WebSocket(socketUrl(current.room, current.name, current.lastId));
  current.socket = socket;
  if (current.attempts === 0) {
    setState("connecting", `Connecting to ${current.room}…`);
  } else {
    setState("reconnecting", `Reconnecting to ${current.room}…`);
  }
  socket.addEventListener("open", () => {
    current.attempts = 0;
    setState("connected", `Connected to ${current.room} as ${current.name}`);
  });
  socket.addEventListener("message", (message) => {
    let event;
    try {
      event = JSON.parse(message.data);
    } catch {
      return; // not an event of ours
    }
    if (event.recovered === false) {
      notice("Some messages were missed while you were away.");
      return; // a resume with a gap: what follows is not all that was said
    }
    current.lastId = event.id;
    show(event);
  });
  socket.addEventListener("close", (closed) => {
    if (session !== current || current.socket !== socket) {
      return; // left the room, or an old socket
    }
    const delay = RETRY_DELAYS_MS[Math.min(current.attempts, RETRY_DELAYS_MS.length - 1)];
    current.attempts += 1;
    // Some jitter, so that clients dropped together do not all come back at once.
    const wait = Math.round(delay * (0.75 + Math.random() / 2));
    const seconds = (wait / 1000).toFixed(1);
    setState("reconnecting", `Disconnected (${closed.code}); reconnecting in ${seconds} s…`);
    current.timer = setTimeout(() => connect(current), wait);
  });
}

function leave() {
  const current = session;
  session = null;
  if (current !== null) {
    clearTimeout(current.timer);
    current.socket?.close(1000);
  }
  setState("idle", "Not connected");
}

joinForm.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  leave();
  messages.replaceChildren();
  const room = roomInput.value.trim();
  const name = nameInput.value.trim();
  if (!room || !name) {
    return;
  }
  session = { room, name, lastId: null, attempts: 0, socket: null, timer: null };
  connect(session);
});

leaveButton.addEventListener("click", leave);

sayForm.addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  const text = textInput.value.trim();
  const socket = session?.socket;
  if (!text || socket?.readyState !== WebSocket.OPEN) {
    return;
  }
  socket.send(JSON.stringify({ text }));
  textInput.value = "";
});

// ?room=...&name=... fill the form in, so that a link can name the room.
const given = new URLSearchParams(location.search);
roomInput.value = given.get("room") || roomInput.value;
nameInput.value = given.get("name") || "";

// The dashboard page: one connection to /dashboard, whose streams arrive tagged
// {"stream": name, "data": item}. plait.js hands each stream's items to its own listener,
// and the listener's replies, which are not tagged, to onMessage.
import { connect } from "/plait.js";

const KEPT = 10; // items shown per stream
const element = (id) => document.getElementById(id);
const status = element("status");
let every = null; // the speed chosen on this page, sent again after a reconnection

function append(list, text) {
  const item = document.createElement("li");
  item.textContent = text;
  list.append(item);
  while (list.children.length > KEPT) {
    list.firstElementChild.remove();
  }
}

const client = connect("/dashboard");
client.on("ticker", (count) => append(element("ticker"), String(count)));
// The clock stream sends the server's time as seconds since the epoch.
const timeOfDay = (seconds) => new Date(seconds * 1000).toLocaleTimeString();
client.on("clock", (seconds) => append(element("clock"), timeOfDay(seconds)));
client.onMessage((reply) => {
  element("setting").textContent = `The ticker ticks every ${reply.every} s.`;
});
client.onState(({ state, code, reason, retryIn }) => {
  status.dataset.state = state;
  if (state === "closed") {
    const retry = retryIn === null ? "" : `; reconnecting in ${(retryIn / 1000).toFixed(1)} s`;
    status.textContent = `Closed (${code}${reason ? ` ${reason}` : ""})${retry}`;
  } else {
    status.textContent = state === "open" ? "Open" : "Connecting…";
  }
  if (state === "open" && every !== null) {
    client.send({ every }); // the server's settings are per connection
  }
});

element("speed").addEventListener("submit", (submitted) => {
  submitted.preventDefault();
  every = Number(element("every").value);
  client.send({ every });
});

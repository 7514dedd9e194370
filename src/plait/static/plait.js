// plait.js: the browser client for plait's WebSocket routes. No dependencies; an ES module.
//
//   import { connect } from "/plait.js";   // served by plait.App(..., client_path="/plait.js")
//   const client = connect("/chat/lobby?name=ada");
//   client.onMessage((message) => console.log(message));
//   client.on("ticker", (item) => console.log(item));      // a tagged stream
//   client.onState(({ state, code, reason }) => console.log(state, code, reason));
//   client.send({ text: "hi" });                             // JSON
//
// It answers the route's heartbeat, reconnects with backoff after a close worth retrying,
// and resumes with since= (the last id seen), delivering no channel message twice.

/**
 * @typedef {"connecting" | "open" | "closed"} State
 * @typedef {object} StateChange
 * @property {State} state
 * @property {number | null} code The close code ("closed" only; 1006 when no close frame came).
 * @property {string} reason The close reason ("closed" only).
 * @property {number | null} retryIn Milliseconds until the next attempt; null: no retry.
 * @typedef {object} Options
 * @property {{ping?: string, pong?: string, timeout?: number} | false} [heartbeat]
 *   The texts of the route's Heartbeat ("ping", "pong"); false: do not answer. With a
 *   timeout (ms), a connection silent for that long (no ping, no message) is dropped and
 *   retried: set it above the route's interval plus its timeout.
 * @property {{min?: number, max?: number, stable?: number}} [backoff] Milliseconds: the
 *   first wait (250), the cap (10000), and how long a connection must stay open for the
 *   waits to start again from min (5000). Each wait is half to all of min * 2^attempt.
 * @property {"single" | "per-channel" | false} [resume] How since= is sent: "single" (one
 *   id, for a route that subscribes one channel, or several on Redis, whose ids share
 *   one clock: the oldest of the last ids), "per-channel" (since=<channel>:<id> for each
 *   channel), or false (never).
 * @property {(code: number, reason: string) => boolean} [retry] Whether to reconnect after
 *   a close; default: {@link retryable}.
 * @property {number} [sendBuffer] Messages send() queues while not open (16).
 * @property {string | string[]} [protocols] WebSocket subprotocols to offer.
 */

const DEFAULT_HEARTBEAT = { ping: "ping", pong: "pong", timeout: 0 };
const DEFAULT_BACKOFF = { min: 250, max: 10_000, stable: 5_000 };
// Closes that another attempt would only repeat: normal end, protocol and policy errors.
const FINAL_CODES = new Set([1000, 1002, 1003, 1007, 1008, 1009, 1010]);
const MESSAGE_ID = /^(\d+)(?:-(\d+))?$/;

/**
 * Whether a close with this code is worth reconnecting after: going away (1001: idle,
 * heartbeat, shutdown), a lost connection (1006: also a refused handshake, which a browser
 * cannot tell apart), a server error (1011), a restart (1012) or "try again later" (1013).
 * Not: 1000 (the route ended), 1002, 1003, 1007, 1008 (policy: refused, invalid since=),
 * 1009, 1010, and the registered and application codes 3000 to 4999.
 * @param {number} code
 * @returns {boolean}
 */
export function retryable(code) {
  return !FINAL_CODES.has(code) && !(code >= 3000 && code <= 4999);
}

/** Compare two message ids ("<n>-<m>"); NaN when either has another form. */
function compareIds(a, b) {
  const x = MESSAGE_ID.exec(a);
  const y = MESSAGE_ID.exec(b);
  if (x === null || y === null) {
    return a === b ? 0 : NaN;
  }
  return Number(x[1]) - Number(y[1]) || Number(x[2] ?? 0) - Number(y[2] ?? 0);
}

const isObject = (value) => typeof value === "object" && value !== null;

/** A connection to one plait route that outlives its WebSockets. */
export class Client {
  #url;
  #heartbeat;
  #backoff;
  #options;
  #socket = null;
  #retryTimer = null;
  #silenceTimer = null;
  #attempt = 0;
  #openedAt = 0;
  #stopped = false;
  #queue = [];
  #listeners = new Map();
  #last = new Map(); // channel -> stream (null: untagged) -> the last id delivered
  #state = "closed";
  #code = null;
  #reason = "";
  #wake = () => this.#connect();

  /**
   * @param {string} url The route, absolute or relative to the page ("/chat/lobby?name=ada");
   *   http(s) becomes ws(s).
   * @param {Options} [options]
   */
  constructor(url, options = {}) {
    this.#url = new URL(url, globalThis.location?.href);
    this.#url.protocol = this.#url.protocol.replace(/^http/, "ws");
    const heartbeat = options.heartbeat;
    this.#heartbeat = heartbeat === false ? null : { ...DEFAULT_HEARTBEAT, ...heartbeat };
    this.#backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this.#options = { resume: "single", retry: retryable, sendBuffer: 16, ...options };
  }

  /** @returns {State} "closed" (with a null code) until {@link connect} too. */
  get state() { return this.#state; }
  /** @returns {number | null} The code of the last close, while "closed". */
  get code() { return this.#code; }
  /** @returns {string} The reason of the last close, while "closed". */
  get reason() { return this.#reason; }

  /**
   * Call `listener(item)` for each item of the tagged stream `name` ({"stream", "data"}).
   * @param {string} name
   * @param {(item: any) => void} listener
   * @returns {() => void} Removes the listener.
   */
  on(name, listener) { return this.#listen(`stream:${name}`, listener); }

  /**
   * Call `listener(message)` for each message that is not a tagged stream's item: the
   * JSON a route sent (a channel message is the whole {"channel", "id", "data"}), a text
   * that is not JSON as it is, a binary message as an ArrayBuffer.
   * @returns {() => void} Removes the listener.
   */
  onMessage(listener) { return this.#listen("message", listener); }

  /**
   * Call `listener(change)` on each state change.
   * @param {(change: StateChange) => void} listener
   * @returns {() => void} Removes the listener.
   */
  onState(listener) { return this.#listen("state", listener); }

  /**
   * Call `listener(notice)` when a resume has a gap: the server's {"recovered": false,
   * "channels": [...]} (Centrifugo's recovered: false). Not everything published on those
   * channels while away came: reload what the page shows of them.
   * @returns {() => void} Removes the listener.
   */
  onRecovery(listener) { return this.#listen("recovery", listener); }

  /** Open the connection, and keep it open until {@link disconnect} or a final close. */
  connect() {
    if (this.#socket === null && this.#retryTimer === null) {
      this.#stopped = false;
      this.#attempt = 0;
      this.#connect();
    }
  }

  /**
   * Close for good: no retry, and what send() queued is dropped.
   * @param {number} [code] 1000 or 3000 to 4999.
   * @param {string} [reason]
   */
  disconnect(code = 1000, reason = "") {
    this.#socket?.close(code, reason); // throws on a code a browser may not send
    this.#stopped = true;
    this.#queue.length = 0;
    this.#detach();
    this.#change("closed", code, reason);
  }

  /**
   * Send `value` as JSON. While not open it is queued (up to sendBuffer messages) and
   * sent, in order, once a connection opens.
   * @param {any} value
   * @returns {boolean} True when sent now, false when queued.
   * @throws {Error} The client is closed for good, or the queue is full.
   */
  send(value) {
    const text = JSON.stringify(value);
    if (this.#state === "open") {
      this.#socket.send(text);
      return true;
    }
    if (this.#stopped) {
      throw new Error(`plait: the connection is closed (${this.#code} ${this.#reason})`);
    }
    if (this.#queue.length >= this.#options.sendBuffer) {
      throw new Error(`plait: ${this.#queue.length} messages already wait for the connection`);
    }
    this.#queue.push(text);
    return false;
  }

  #listen(kind, listener) {
    const listeners = this.#listeners.get(kind) ?? new Set();
    this.#listeners.set(kind, listeners.add(listener));
    return () => listeners.delete(listener);
  }

  #emit(kind, value) {
    for (const listener of this.#listeners.get(kind) ?? []) {
      try {
        listener(value);
      } catch (error) {
        reportError(error); // one listener's error stops neither the others nor the client
      }
    }
  }

  #change(state, code = null, reason = "", retryIn = null) {
    this.#state = state;
    this.#code = code;
    this.#reason = reason;
    this.#emit("state", { state, code, reason, retryIn });
  }

  #connect() {
    removeEventListener("online", this.#wake);
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    const socket = new WebSocket(this.#address(), this.#options.protocols);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => {
      this.#openedAt = Date.now();
      this.#alive();
      for (const text of this.#queue.splice(0)) {
        socket.send(text); // before "open": what was queued goes before what its listeners send
      }
      this.#change("open");
    };
    socket.onmessage = (event) => this.#receive(event.data);
    socket.onclose = (event) => this.#closed(event.code, event.reason);
    this.#socket = socket;
    this.#change("connecting");
  }

  /** The route's URL, with since= from the last ids seen (the server replays after it). */
  #address() {
    const url = new URL(this.#url);
    const last = new Map(); // channel -> its last id, across the streams carrying it
    for (const [channel, streams] of this.#last) {
      last.set(channel, [...streams.values()].reduce((a, b) => (compareIds(b, a) > 0 ? b : a)));
    }
    if (this.#options.resume === "per-channel" && last.size > 0) {
      url.searchParams.delete("since");
      for (const [channel, id] of last) {
        url.searchParams.append("since", `${channel}:${id}`);
      }
    } else if (this.#options.resume === "single" && last.size > 0) {
      // The oldest: on Redis, whose ids share one clock, nothing newer on any channel is
      // skipped, and what the others saw already comes again only to be dropped.
      const ids = [...last.values()];
      url.searchParams.set("since", ids.reduce((a, b) => (compareIds(b, a) < 0 ? b : a)));
    }
    return url;
  }

  #receive(raw) {
    this.#alive();
    if (this.#heartbeat !== null && raw === this.#heartbeat.ping) {
      this.#socket.send(this.#heartbeat.pong);
      return;
    }
    let message = raw;
    if (typeof raw === "string") {
      try {
        message = JSON.parse(raw);
      } catch {
        // a text that is not JSON: delivered as it is
      }
    }
    let stream = null;
    if (isObject(message) && typeof message.stream === "string" && "data" in message
        && Object.keys(message).length === 2) {
      stream = message.stream;
      message = message.data;
    }
    if (isObject(message) && message.recovered === false) {
      // What came before is gone: ids of those channels start afresh (a restarted
      // in-memory hub counts from 1 again), so the old ones must not hide the new.
      for (const channel of message.channels ?? []) {
        this.#last.delete(channel);
      }
      this.#emit("recovery", message);
      return;
    }
    if (isObject(message) && typeof message.channel === "string"
        && typeof message.id === "string" && !this.#fresh(stream, message.channel, message.id)) {
      return;
    }
    this.#emit(stream === null ? "message" : `stream:${stream}`, message);
  }

  /** False for a channel message already delivered; remembers the id of a new one. */
  #fresh(stream, channel, id) {
    const streams = this.#last.get(channel) ?? new Map(); // by stream: two may carry one
    this.#last.set(channel, streams);
    const last = streams.get(stream);
    if (last !== undefined && compareIds(id, last) <= 0) {
      return false;
    }
    streams.set(stream, id);
    return true;
  }

  /** Something arrived: restart the wait for the next one (heartbeat.timeout). */
  #alive() {
    clearTimeout(this.#silenceTimer);
    if (this.#heartbeat?.timeout > 0) {
      this.#silenceTimer = setTimeout(() => {
        const socket = this.#socket;
        this.#closed(1006, "heartbeat timeout");
        socket?.close(); // a dead network may take long to finish it: not waited for
      }, this.#heartbeat.timeout);
    }
  }

  #detach() {
    clearTimeout(this.#silenceTimer);
    clearTimeout(this.#retryTimer);
    removeEventListener("online", this.#wake);
    this.#retryTimer = null;
    if (this.#socket !== null) {
      this.#socket.onopen = this.#socket.onmessage = this.#socket.onclose = null;
      this.#socket = null;
    }
  }

  #closed(code, reason) {
    this.#detach();
    if (this.#openedAt > 0 && Date.now() - this.#openedAt >= this.#backoff.stable) {
      this.#attempt = 0;
    }
    this.#openedAt = 0;
    if (this.#stopped || !this.#options.retry(code, reason)) {
      this.#stopped = true;
      this.#queue.length = 0;
      this.#change("closed", code, reason);
      return;
    }
    const { min, max } = this.#backoff;
    const wait = Math.min(max, min * 2 ** this.#attempt++);
    const delay = Math.round(wait / 2 + (Math.random() * wait) / 2);
    this.#retryTimer = setTimeout(this.#wake, delay);
    addEventListener("online", this.#wake); // the network is back: try at once
    this.#change("closed", code, reason, delay);
  }
}

/**
 * Make a {@link Client} and connect it once the current script has run, so that
 * listeners added right after this call see every state change and message.
 * @param {string} url
 * @param {Options} [options]
 * @returns {Client}
 */
export function connect(url, options = {}) {
  const client = new Client(url, options);
  queueMicrotask(() => client.code === null && client.connect()); // unless disconnected
  return client;
}

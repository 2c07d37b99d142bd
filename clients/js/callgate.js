// callgate.js: client SDK for the callgate signaling protocol, version 1
// (docs/protocol.md). Plain ES module, no dependencies, no build step.
//
//   import { Room } from './callgate.js';
//   const room = new Room({ url: 'wss://example.org/rtc', token });
//   room.on('trackSubscribed', ({ participantSid, track, stream }) => { ... });
//   await room.connect();
//   await room.publish(await navigator.mediaDevices.getUserMedia({ audio: true, video: true }));
//
// RTCPeerConnection and WebSocket are taken from the options when given, so the
// SDK also runs on react-native-webrtc or in Node with a WebRTC binding. The
// reconnect path uses only those two, setTimeout and Math.random (no window,
// document or navigator), for the same reason.
//
// Staying connected (docs/protocol.md, "Staying connected"): when the
// WebSocket drops, a transport's ICE fails (or stays disconnected for 2 s),
// no inbound bytes at all arrive for 2 s on transports that were receiving
// (the media watchdog reads getStats() every 0.5 s) or the server says
// `reconnecting`, the room goes `reconnecting` and takes its session back
// with `resume` on a new WebSocket, restarting ICE on both transports; when
// the server no longer keeps the session it joins afresh and publishes the
// same tracks again. A WebSocket given up while the session goes on is
// closed with 4000 `resuming` (or left open); only leaving closes with 1000.
//
// Adaptive stream (docs/protocol.md, "Adaptive stream and simulcast"): with
// `new Room({adaptiveStream: true, ...})`, a remote video shown through
// `room.attachVideo(trackSid, element)` is received at the size its elements
// are shown at (ResizeObserver, × devicePixelRatio) and not at all while none
// of them is visible (IntersectionObserver, `document.hidden`): the room sends
// `update_subscription` 300 ms after the last change, and only when what it
// asks for changed. `room.setSubscription(trackSid, settings)` asks for a
// track by hand. Where those observers or `document` are missing (React
// Native), pass them in the options or do without.
//
// Calls (docs/calls.md): a device that is not in a room keeps a presence
// connection, `new CallClient(url, token)`: it is rung (`ring`), accepts,
// declines or cancels calls, follows their state (`callState`), learns that
// a ring it showed stopped (`ringEnded`, with `answeredElsewhere` when
// another device of the same identity answered) and watches other
// identities' presence (`watchPresence`, `presence`). A Room emits `ring`
// and `callState` too, for calls that reach its identity while it is in a
// room.

/** Protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/** WebSocket.OPEN, spelled out because an injected constructor may lack it. */
const WS_OPEN = 1;

/** Waits before the first reconnect tries, in ms (docs/protocol.md, "Client reconnect schedule"). */
export const RECONNECT_SCHEDULE_MS = Object.freeze([0, 300, 1200, 2700, 4800]);
/** Wait before each later try, in ms. */
export const RECONNECT_STEADY_MS = 7000;
/** Tries in all, for resuming (and again for joining afresh). */
export const RECONNECT_TRIES = 10;
/** Up to this much random delay is added to each wait, in ms. */
export const RECONNECT_JITTER_MS = 500;
/** How long a transport's ICE may stay `disconnected` before the room reconnects, in ms. */
export const ICE_DISCONNECTED_MS = 2000;
/** How often the media watchdog reads each transport's stats while connected, in ms. */
export const MEDIA_WATCHDOG_INTERVAL_MS = 500;
/**
 * No inbound bytes at all for this long, on transports one of which was
 * receiving, is a lost connection (in ms): the room resumes.
 */
export const MEDIA_SILENCE_MS = 2000;
/** Grace when the server names none (`reconnect_grace_s`), in s. */
const DEFAULT_GRACE_S = 20;
/** How long an in-place ICE restart (after the server's `reconnecting`) may take before a resume, in ms. */
const ICE_RESTART_TIMEOUT_MS = 5000;

/**
 * The simulcast layers of camera video (the `simulcast` option, on by default), lowest first, as
 * LiveKit's SDKs send them: rid `q` at a quarter of the resolution, `h` at
 * half, `f` at full, each with its bitrate cap (bit/s).
 */
export const SIMULCAST_LAYERS = Object.freeze([
  Object.freeze({ rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 }),
]);
/** Adaptive stream: how long what the elements show must stay the same before it is sent, in ms. */
export const ADAPTIVE_STREAM_DEBOUNCE_MS = 300;
/** Largest `width`/`height` of an `update_subscription` (docs/protocol.md). */
export const MAX_VIDEO_DIMENSION = 16384;
/** Largest `data` payload the server relays, in bytes (docs/protocol.md, "Data messages"). */
export const MAX_DATA_PAYLOAD_BYTES = 16 * 1024;
/** Connection quality levels of `connection_quality`, best first. */
const QUALITIES = new Set(['excellent', 'good', 'poor', 'lost']);

/**
 * Close code we give a WebSocket we stop using while the session goes on
 * (a reconnect try given up, a `resume` the server refused): the server
 * ends the session on any other close frame from the client, as on `leave`.
 */
const CLOSE_RESUMING = 4000;
/** Close code: `resume` named no session the server keeps: join afresh. */
const CLOSE_RESUME_FAILED = 4008;
/** Close code: the session was resumed on a newer WebSocket. */
const CLOSE_REPLACED = 4009;
/**
 * Close code (a cluster): the node the session lived on is gone; the room is
 * placed again on another node, so join afresh.
 */
const CLOSE_NODE_LOST = 4011;
/** Close codes 4001–4007: the token or the protocol was refused; trying again cannot help. */
const isRefusal = (code) => code >= 4001 && code <= 4007;
/**
 * `error` codes that answer a `resume` when the server cannot take the
 * session back (`resume_failed`; a server without resume says `not_joined`
 * or `unknown_message`): join afresh.
 */
const RESUME_IMPOSSIBLE = new Set(['resume_failed', 'not_joined', 'unknown_message']);
/** Reasons of a 1000 close (and of `left`) that end the session for good. */
const END_REASONS = new Set([
  'left', 'removed', 'room_closed', 'duplicate_identity', 'disconnected', 'server_shutdown',
  'insufficient_balance', 'billing_stopped', 'billing_invalid', 'connection_lost',
]);

/**
 * @typedef {object} TrackInfo A published track as the server describes it.
 * @property {string} sid
 * @property {string} kind `audio` or `video`
 * @property {boolean} muted
 * @property {string} [mid] For one's own tracks: the mid in the publisher offer.
 *
 * @typedef {object} Participant
 * @property {string} sid
 * @property {string} identity
 * @property {string} name Display name; empty when the token has none.
 * @property {boolean} canPublish
 * @property {boolean} canSubscribe
 * @property {boolean} canPublishData May send `data` messages.
 * @property {string} metadata Free-form, set by the server API (empty when none).
 * @property {Record<string, string>} attributes Small string map (`hand: 'raised'`).
 * @property {Map<string, TrackInfo>} tracks Published tracks by track sid.
 * @property {boolean} reconnecting Between `participantReconnecting` and `participantResumed`.
 * @property {ConnectionQuality} quality The latest the server said (`connectionQualityChanged`);
 *   `unknown` until it says.
 *
 * @typedef {'excellent'|'good'|'poor'|'lost'|'unknown'} ConnectionQuality
 *
 * @typedef {object} ActiveSpeaker One entry of `room.activeSpeakers`, loudest first.
 * @property {string} participantSid
 * @property {string} trackSid The audio track heard.
 * @property {number} level Smoothed loudness, 0 (silent) to 1 (full scale).
 * @property {Participant|undefined} participant `room.localParticipant` when it is us.
 *
 * @typedef {object} SubscriptionSettings What to receive of one remote track (`setSubscription`).
 * @property {boolean} [disabled] Receive nothing of it (default false).
 * @property {number} [width] The size it is shown at, in device pixels (integers 1–16384);
 * @property {number} [height]   left out: as large as there is.
 * @property {number} [priority] 0–255, higher is served first when bandwidth is short
 *   (the server's default, 128, when left out).
 *
 * @typedef {object} AdaptiveStreamOptions
 * @property {number|'screen'} [pixelDensity] Device pixels per CSS pixel of an element; `screen`
 *   (the default) is `devicePixelRatio`.
 *
 * @typedef {object} RoomInfo
 * @property {string} name
 * @property {string} sid
 * @property {number} maxParticipants
 *
 * @typedef {object} LocalTrackPublication One local track sent on the publisher transport.
 * @property {string|null} sid Track sid; null until the server's `track_published` arrives.
 * @property {string|null} mid
 * @property {string} kind
 * @property {MediaStreamTrack} track
 * @property {MediaStream|undefined} stream
 * @property {boolean} muted
 * @property {RTCRtpTransceiver} transceiver
 * @property {boolean} simulcast Sent as the SIMULCAST_LAYERS encodings.
 * @property {Map<string, boolean>|null} layers What the server's latest `subscribed_layers` wants
 *   of each rid (null before one came); its encodings' `active` follow it.
 * @property {Promise<void>} encodingQueue Changes of the sender's encodings, one at a time.
 *
 * @typedef {object} RemoteTrack A track received on the subscriber transport.
 * @property {string} trackSid
 * @property {string} participantSid
 * @property {string} kind
 * @property {MediaStreamTrack} track
 * @property {MediaStream|undefined} stream The stream whose id is the participant sid.
 * @property {string|null} mid
 *
 * @typedef {object} RoomOptions
 * @property {string} url WebSocket URL of the signaling endpoint, e.g. `ws://127.0.0.1:7880/rtc`.
 * @property {string} token Access token (JWT).
 * @property {typeof RTCPeerConnection} [RTCPeerConnection] Defaults to `globalThis.RTCPeerConnection`.
 * @property {typeof WebSocket} [WebSocket] Defaults to `globalThis.WebSocket`.
 * @property {RTCIceServer[]} [iceServers] Used in addition to (before) the server's `ice_servers`.
 * @property {RTCIceTransportPolicy} [iceTransportPolicy] `relay` to send media only through the
 *   TURN servers (as behind a firewall that lets nothing else out); default: the browser's (`all`).
 * @property {number} [connectTimeout] ms to wait for `joined` (default 15000).
 * @property {number} [negotiationTimeout] ms to wait for a `publish_answer` (default 15000).
 * @property {() => (string|Promise<string>)} [tokenProvider] Called for a fresh token when the
 *   room has to join afresh (the session could not be resumed); when it fails or gives nothing,
 *   the token from the options is used.
 * @property {number} [reconnectTryTimeout] ms one reconnect try waits for `resumed` or
 *   `joined` on its new WebSocket (default 5000).
 * @property {boolean} [simulcast] Publish camera video as three simulcast layers
 *   (SIMULCAST_LAYERS), so each subscriber gets the layer its downlink and the size it
 *   shows the video at allow (default true); false publishes one encoding.
 * @property {boolean|AdaptiveStreamOptions} [adaptiveStream] Receive each video shown through
 *   `attachVideo` at the size it is shown at, and not at all while it is not visible.
 * @property {typeof ResizeObserver} [ResizeObserver] For adaptive stream; defaults to the global.
 * @property {typeof IntersectionObserver} [IntersectionObserver] For adaptive stream; defaults to
 *   the global.
 * @property {Document} [document] For adaptive stream (`hidden`, `visibilitychange`); defaults
 *   to the global.
 *
 * @typedef {object} VideoView One element showing a remote video (`attachVideo`).
 * @property {string} trackSid
 * @property {MediaStreamTrack} track
 * @property {any} element
 * @property {number|null} width Its CSS size from the ResizeObserver (null before it said).
 * @property {number|null} height
 * @property {boolean} visible In the viewport, as the IntersectionObserver says (true before it said).
 *
 * @typedef {'connecting'|'connected'|'reconnecting'|'disconnected'} ConnectionState
 * The room's state: `disconnected` before `connect()` and after the session ended.
 *
 * @typedef {object} SocketCtx One WebSocket and what it is for.
 * @property {WebSocket} ws
 * @property {'join'|'resume'|'session'} phase `join`/`resume` until `joined`/`resumed`, then `session`.
 * @property {boolean} gone Closed or abandoned: nothing from it counts any more.
 * @property {string|null} leftReason The reason of a `left` received on it.
 *
 * @typedef {object} Recovery A reconnect in progress.
 * @property {'ice'|'resume'} mode `ice`: restarting ICE in place on a WebSocket that is up;
 *   `resume`: tries on new WebSockets.
 * @property {number} since When it started (ms since 1970).
 * @property {number} deadline When the server's grace ends (ms since 1970).
 * @property {number} tries Tries made in the current mode (resume, or joining afresh).
 * @property {boolean} fresh Join afresh instead of resuming.
 * @property {ReturnType<typeof setTimeout>|null} timer The next try, or the in-place restart's limit.
 * @property {ReturnType<typeof setTimeout>|null} tryTimer The current try's limit.
 */

/** Error with a protocol-level `code` (an `error` code or a close reason). */
export class CallgateError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} [closeCode] WebSocket close code, when the error comes from a close.
   */
  constructor(code, message, closeCode) {
    super(message);
    this.name = 'CallgateError';
    this.code = code;
    if (closeCode !== undefined) this.closeCode = closeCode;
  }
}

/** Minimal event emitter: works where EventTarget/CustomEvent are missing (React Native). */
class Emitter {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this._listeners = new Map();
  }

  /**
   * Adds a listener; returns a function that removes it.
   * @param {string} type
   * @param {(detail: any) => void} fn
   * @returns {() => void}
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /**
   * Like `on`, but the listener runs at most once.
   * @param {string} type
   * @param {(detail: any) => void} fn
   * @returns {() => void}
   */
  once(type, fn) {
    const off = this.on(type, (detail) => {
      off();
      fn(detail);
    });
    return off;
  }

  /**
   * @param {string} type
   * @param {Function} fn
   */
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }

  /**
   * Calls the listeners; one that throws does not stop the others nor the SDK
   * (the error is rethrown asynchronously so it still shows up).
   * @param {string} type
   * @param {any} detail
   */
  emit(type, detail) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(detail);
      } catch (err) {
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

/**
 * One of the participant's two WebRTC transports with its own negotiation
 * queue and candidate buffers.
 */
class Transport {
  /**
   * @param {'publisher'|'subscriber'} target
   * @param {RTCPeerConnection} pc
   * @param {(msg: object) => void} send
   */
  constructor(target, pc, send) {
    this.target = target;
    this.pc = pc;
    this._send = send;
    /** @type {Promise<unknown>} */
    this._chain = Promise.resolve();
    /** Local candidates held back until the first offer/answer has gone out. */
    this._outgoing = [];
    this._signalled = false;
    /** Remote candidates held back until a remote description is set. */
    this._incoming = [];
    /** Runs out when ICE stayed `disconnected` too long. @type {ReturnType<typeof setTimeout>|null} */
    this.iceTimer = null;
    /** An ICE restart of this transport is under way (after the server's `reconnecting`). */
    this.restarting = false;
    /** Our video senders owe a keyframe once this (publisher) transport sends on its new path. */
    this.keyframePending = false;
    /** The RTCIceTransport whose selected pair we watch for that. @type {any} */
    this.watchedIce = null;
    /** What the media watchdog knows of this transport's inbound bytes. */
    this.inbound = { bytes: /** @type {number|null} */ (null), lastIncreaseAt: 0, increases: 0 };
  }

  /**
   * Forgets what the media watchdog saw: the transport takes part again once
   * it has received bytes twice (after a silence we were told of, such as a
   * remote mute, and after every reconnect).
   */
  resetInbound() {
    this.inbound = { bytes: null, lastIncreaseAt: 0, increases: 0 };
  }

  /** Whether ICE is up (or was never needed: nothing negotiated yet). */
  get iceUp() {
    const s = this.pc.iceConnectionState;
    return !this.pc.remoteDescription || s === 'connected' || s === 'completed';
  }

  clearIceTimer() {
    if (this.iceTimer !== null) clearTimeout(this.iceTimer);
    this.iceTimer = null;
  }

  /**
   * Runs `fn` after every negotiation queued before it: never two at once.
   * @template T
   * @param {() => Promise<T>} fn
   * @returns {Promise<T>}
   */
  enqueue(fn) {
    const run = this._chain.then(fn);
    this._chain = run.catch(() => {});
    return run;
  }

  /** @param {{candidate: string, sdp_mid: string|null, sdp_m_line_index: number|null}} cand */
  sendCandidate(cand) {
    if (this._signalled) this._send({ type: 'candidate', target: this.target, candidate: cand });
    else this._outgoing.push(cand);
  }

  /** Called once our SDP for this transport is on the wire. */
  markSignalled() {
    this._signalled = true;
    for (const cand of this._outgoing.splice(0)) {
      this._send({ type: 'candidate', target: this.target, candidate: cand });
    }
  }

  /**
   * @param {RTCIceCandidateInit} init
   * @returns {Promise<void>}
   */
  async addRemoteCandidate(init) {
    if (!this.pc.remoteDescription) {
      this._incoming.push(init);
      return;
    }
    await this.pc.addIceCandidate(init);
  }

  async flushRemoteCandidates() {
    for (const init of this._incoming.splice(0)) await this.pc.addIceCandidate(init);
  }

  close() {
    this.clearIceTimer();
    try {
      this.pc.close();
    } catch {
      // already closed
    }
  }
}

/**
 * A connection to one callgate room.
 *
 * `state` is a ConnectionState: `connecting` until `joined`, `connected`,
 * `reconnecting` while it takes its session back (or joins afresh), and
 * `disconnected` before `connect()` and once the session ended.
 *
 * Events (subscribe with `room.on(name, fn)`; `fn` gets one plain object):
 * - `connectionStateChanged` `{state, previous}` (the room's ConnectionState)
 * - `reconnecting` `{reason}` (`signaling_lost`, `ice_failed`, `ice_disconnected`,
 *   `no_inbound_media` (the media watchdog), `dtls_timeout`, `internal_error`, `resume_failed`, `node_lost`, `node_drained`, or the server's
 *   `reconnecting` reason, e.g. `media_silent`)
 * - `reconnected` `{resumed}` (`true`: the same session goes on; `false`: joined afresh with a
 *   new participant sid and published the same tracks again)
 * - `participantJoined` `{participant}`
 * - `participantLeft` `{participantSid, identity, reason, participant}`
 * - `participantReconnecting` `{participantSid, identity, participant}` (its connection is lost;
 *   the server keeps it for the grace)
 * - `participantResumed` `{participantSid, identity, participant}`
 * - `trackPublished` `{participantSid, participant, track: TrackInfo}` (remote participants)
 * - `trackUnpublished` `{participantSid, participant, trackSid}`
 * - `localTrackPublished` `{publication, track: TrackInfo}` (the server's sid for one of our tracks)
 * - `trackSubscribed` `{participantSid, participant, trackSid, kind, track, stream}`
 * - `trackUnsubscribed` `{participantSid, participant, trackSid, kind, track, stream}`
 * - `trackMuted` `{participantSid, participant, trackSid, muted}` (also for our own tracks)
 * - `transportStateChanged` `{target: 'publisher'|'subscriber', state}` (RTCPeerConnection.connectionState)
 * - `balance` `{secondsLeft}` (paid calls: what the payer's wallet still covers)
 * - `balanceWarning` `{secondsLeft}` (paid calls: the cut is near)
 * - `activeSpeakersChanged` `{speakers: ActiveSpeaker[]}` (loudest first, ourselves included;
 *   empty: nobody speaks, also while the room is not connected); `room.activeSpeakers` is the same list
 * - `connectionQualityChanged` `{participantSid, quality, participant}` (ours and that of the
 *   participants we receive; also in `participant.quality`)
 * - `disconnected` `{reason, code}` (reason: the server's `left` reason or close reason)
 * - `error` `{code, message, error?}` (server `error` messages and local failures)
 * - `ring` CallRing (a call rings our identity while we are in this room; answer or decline it
 *   with a CallClient, docs/calls.md)
 * - `callState` CallStateUpdate (a call our identity is a member of changed)
 * - `participantUpdated` `{participant, local}` (its grants, name, metadata or attributes changed:
 *   by a moderator, or its own `setAttributes`; `local` for ourselves. Losing `canPublish`
 *   unpublishes our tracks: the server closed our publisher transport, and a fresh one waits
 *   for a promotion)
 * - `roomUpdated` `{room}` (the room's metadata changed; also in `room.roomInfo`)
 * - `data` `{from, fromSid, topic, payload, reliable}` (a data message from another participant)
 *
 * After a resume the room compares the server's `participants` with what it
 * knew and emits `participantJoined`/`participantLeft`/`trackPublished`/
 * `trackUnpublished`/`trackMuted` for what changed meanwhile (a participant
 * gone meanwhile is reported with reason `left`: the server does not say why).
 */
export class Room extends Emitter {
  /** @param {RoomOptions} options */
  constructor(options) {
    super();
    if (!options || typeof options.url !== 'string' || typeof options.token !== 'string') {
      throw new TypeError('Room: options.url and options.token are required strings');
    }
    this.url = options.url;
    this._token = options.token;
    this._tokenProvider = typeof options.tokenProvider === 'function' ? options.tokenProvider : null;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._RTCPeerConnection = options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    this._extraIceServers = options.iceServers ?? [];
    this._iceTransportPolicy = options.iceTransportPolicy;
    this._connectTimeout = options.connectTimeout ?? 15000;
    this._negotiationTimeout = options.negotiationTimeout ?? 15000;
    this._tryTimeout = options.reconnectTryTimeout ?? 5000;
    this._simulcast = options.simulcast !== false;
    /** @type {{pixelDensity: number|'screen'}|null} */
    this._adaptive = options.adaptiveStream
      ? { pixelDensity: 'screen', ...(typeof options.adaptiveStream === 'object' ? options.adaptiveStream : {}) }
      : null;
    this._ResizeObserver = options.ResizeObserver ?? globalThis.ResizeObserver;
    this._IntersectionObserver = options.IntersectionObserver ?? globalThis.IntersectionObserver;
    this._document = options.document ?? globalThis.document;

    /** @type {ConnectionState} */
    this.state = 'disconnected';
    /** @type {RoomInfo|null} */
    this.roomInfo = null;
    /** @type {Participant|null} */
    this.localParticipant = null;
    /** Everybody else in the room, by participant sid. @type {Map<string, Participant>} */
    this.participants = new Map();
    /** Tracks received, by track sid. @type {Map<string, RemoteTrack>} */
    this.subscribedTracks = new Map();
    /** ICE servers in use (options first, then the server's). @type {RTCIceServer[]} */
    this.iceServers = [];
    /** Who speaks now, loudest first (`activeSpeakersChanged`). @type {ActiveSpeaker[]} */
    this.activeSpeakers = [];
    /** How long the server keeps a lost session (s), from `joined`/`resumed`. */
    this.reconnectGraceS = DEFAULT_GRACE_S;

    /** The WebSocket in use (or being tried). @type {SocketCtx|null} */
    this._ctx = null;
    /** Older WebSockets left open for the server to close (4009) or to close at the end. @type {Set<SocketCtx>} */
    this._abandoned = new Set();
    /** Takes this session back with `resume`; null when the server gave none. @type {string|null} */
    this._resumeSecret = null;
    /** @type {Recovery|null} */
    this._recovery = null;
    /** @type {Transport|null} */
    this._pub = null;
    /** @type {Transport|null} */
    this._sub = null;
    /** @type {LocalTrackPublication[]} */
    this._publications = [];
    /** Media sections of the latest subscribe_offer, by mid. */
    this._remoteMedia = new Map();
    /** @type {{resolve: (sdp: string) => void, reject: (e: Error) => void}|null} */
    this._answerWaiter = null;
    /** @type {{resolve: (room: Room) => void, reject: (e: Error) => void}|null} */
    this._joinWaiter = null;
    /** @type {Promise<Room>|null} */
    this._connecting = null;
    /** @type {Promise<void>|null} */
    this._leaving = null;
    /** The media watchdog's next reading. @type {ReturnType<typeof setTimeout>|null} */
    this._watchdogTimer = null;
    /** Counts watchdog starts and stops: a reading from an older run is ignored. */
    this._watchdogRun = 0;

    /** What the app asked of remote tracks (`setSubscription`), by track sid. @type {Map<string, SubscriptionSettings>} */
    this._subscriptionPrefs = new Map();
    /** The `update_subscription` last sent for each track (JSON), by track sid. @type {Map<string, string>} */
    this._sentSubscriptions = new Map();
    /**
     * Elements showing remote videos through `attachVideo`, by track sid. A
     * track in here (even with none left) is one whose elements decide what
     * adaptive stream asks for. @type {Map<string, Set<VideoView>>}
     */
    this._views = new Map();
    /** The same views by element (an element shows one video). @type {Map<any, VideoView>} */
    this._viewByElement = new Map();
    /** @type {ResizeObserver|null} */
    this._resizeObserver = null;
    /** @type {IntersectionObserver|null} */
    this._intersectionObserver = null;
    /** @type {(() => void)|null} */
    this._onVisibilityChange = null;
    /** Adaptive stream's debounce. @type {ReturnType<typeof setTimeout>|null} */
    this._adaptiveTimer = null;
    /**
     * `subscribed_layers` for a track of ours whose sid we have not matched yet.
     * @type {Map<string, Map<string, boolean>>}
     */
    this._pendingLayers = new Map();
  }

  /** The publisher RTCPeerConnection (null before `joined`). */
  get publisherPc() {
    return this._pub?.pc ?? null;
  }

  /** The subscriber RTCPeerConnection (null before `joined`). */
  get subscriberPc() {
    return this._sub?.pc ?? null;
  }

  /** Our published tracks. @returns {LocalTrackPublication[]} */
  get localTracks() {
    return [...this._publications];
  }

  /**
   * Opens the WebSocket and joins. Resolves with the room once `joined`
   * arrived; rejects with a CallgateError (code = close reason) otherwise.
   * @returns {Promise<Room>}
   */
  connect() {
    if (this._connecting) return this._connecting;
    this._connecting = new Promise((resolve, reject) => {
      if (typeof this._WebSocket !== 'function') {
        reject(new CallgateError('no_websocket', 'no WebSocket implementation available'));
        return;
      }
      if (typeof this._RTCPeerConnection !== 'function') {
        reject(new CallgateError('no_webrtc', 'no RTCPeerConnection implementation available'));
        return;
      }
      this._joinWaiter = timedWaiter(this._connectTimeout, resolve, reject, () => {
        this._failJoin(new CallgateError('connect_timeout', `no "joined" within ${this._connectTimeout} ms`));
        this._end(1006, 'connect_timeout');
      });
      this._setState('connecting');
      try {
        this._ctx = this._openSocket('join', { type: 'join', token: this._token, protocol: PROTOCOL_VERSION });
      } catch (err) {
        this._failJoin(new CallgateError('connect_failed', String(err?.message ?? err)));
        this._end(1006, 'connect_failed');
      }
    });
    return this._connecting;
  }

  /**
   * Publishes every track of `stream` not yet published, as `sendonly`
   * transceivers on the publisher transport, then (re)negotiates.
   * @param {MediaStream} stream
   * @returns {Promise<LocalTrackPublication[]>} the new publications (sid filled later)
   */
  async publish(stream) {
    const pub = this._requireJoined().pub;
    if (!this.localParticipant?.canPublish) {
      throw new CallgateError('publish_not_allowed', 'the token has no publish grant');
    }
    return pub.enqueue(async () => {
      const fresh = stream.getTracks().filter((t) => !this._publications.some((p) => p.track === t));
      if (fresh.length === 0) return [];
      /** @type {LocalTrackPublication[]} */
      const added = fresh.map((track) => {
        const { transceiver, simulcast } = this._addSender(pub, track, stream);
        return {
          sid: null,
          mid: null,
          kind: track.kind,
          track,
          stream,
          muted: false,
          transceiver,
          simulcast,
          layers: null,
          encodingQueue: Promise.resolve(),
        };
      });
      this._publications.push(...added);
      try {
        await this._negotiatePublisher(pub);
      } catch (err) {
        for (const p of added) {
          this._publications.splice(this._publications.indexOf(p), 1);
          try {
            if (typeof p.transceiver.stop === 'function') p.transceiver.stop();
            else pub.pc.removeTrack(p.transceiver.sender);
          } catch {
            // the PC may be closed already
          }
        }
        throw err;
      }
      for (const p of added) p.mid = p.transceiver.mid ?? null;
      this._matchLocalTracks();
      return added;
    });
  }

  /**
   * Stops publishing a track (or every published track of a stream) and renegotiates.
   * The track itself is not stopped.
   * @param {MediaStreamTrack|MediaStream} what
   * @returns {Promise<void>}
   */
  async unpublish(what) {
    const pub = this._requireJoined().pub;
    const tracks = typeof what?.getTracks === 'function' ? what.getTracks() : [what];
    return pub.enqueue(async () => {
      const gone = this._publications.filter((p) => tracks.includes(p.track));
      if (gone.length === 0) return;
      for (const p of gone) {
        this._publications.splice(this._publications.indexOf(p), 1);
        pub.pc.removeTrack(p.transceiver.sender); // sendonly -> inactive
      }
      this._expectSilence(pub);
      await this._negotiatePublisher(pub);
    });
  }

  /**
   * Mutes or unmutes one of our published tracks: tells the server (which then
   * forwards none of its packets) and sets `track.enabled` locally. While
   * reconnecting it takes effect locally, and the server is told once the
   * session is back.
   * @param {string|MediaStreamTrack} trackSidOrTrack
   * @param {boolean} muted
   */
  setMuted(trackSidOrTrack, muted) {
    if (this.state !== 'reconnecting') this._requireJoined();
    const pub =
      typeof trackSidOrTrack === 'string'
        ? this._publications.find((p) => p.sid === trackSidOrTrack)
        : this._publications.find((p) => p.track === trackSidOrTrack);
    const sid = typeof trackSidOrTrack === 'string' ? trackSidOrTrack : pub?.sid;
    if (!sid) throw new CallgateError('unknown_track', 'no published track with a known sid matches');
    if (pub) {
      pub.muted = Boolean(muted);
      pub.track.enabled = !muted;
    }
    if (muted) this._expectSilence(this._pub);
    this._send({ type: 'mute', track_sid: sid, muted: Boolean(muted) });
  }

  /**
   * Says what to receive of a remote track (`update_subscription`): nothing
   * while `disabled`, video no larger than `width` × `height` device pixels,
   * and how it ranks (`priority`) when bandwidth is short. Each call replaces
   * the track's settings as a whole (a field left out takes its default). A
   * track not received yet gets them once it is; while reconnecting they are
   * sent once the session is back. With adaptive stream, the elements the
   * track is attached to decide the size and disable it while none is
   * visible; `disabled` and `priority` from here still apply.
   * @param {string} trackSid A remote participant's track.
   * @param {SubscriptionSettings} [settings]
   */
  setSubscription(trackSid, settings = {}) {
    if (this.state !== 'reconnecting') this._requireJoined();
    if (typeof trackSid !== 'string' || trackSid === '') {
      throw new TypeError('setSubscription: trackSid must be a non-empty string');
    }
    const prefs = toSubscriptionSettings(settings);
    const published = [...this.participants.values()].some((p) => p.tracks.has(trackSid));
    if (!published && !this.subscribedTracks.has(trackSid)) {
      throw new CallgateError('unknown_track', `no remote participant publishes track ${trackSid}`);
    }
    this._subscriptionPrefs.set(trackSid, prefs);
    this._syncSubscription(trackSid, true);
  }

  /**
   * Shows a received video in `element` (a <video>): adds the track to the
   * element's `srcObject` stream in place of the video it had (so the
   * element keeps its audio), or gives it a new stream. With adaptive stream
   * the element's size and visibility then decide what is received of the
   * track. Detach it (the returned function, or `detachVideo`) when the
   * element stops showing it; an unsubscribed track is detached by itself.
   * @param {string} trackSid A subscribed video track (`trackSubscribed`).
   * @param {HTMLVideoElement} element
   * @returns {() => void} detaches it
   */
  attachVideo(trackSid, element) {
    const sub = this.subscribedTracks.get(trackSid);
    if (!sub || sub.kind !== 'video') {
      throw new CallgateError('unknown_track', `no video track ${trackSid} is received`);
    }
    if (!element || typeof element !== 'object') throw new TypeError('attachVideo: element is required');
    const detach = () => this.detachVideo(trackSid, element);
    const before = this._viewByElement.get(element);
    if (before?.trackSid === trackSid) return detach;
    if (before) this.detachVideo(before.trackSid, element);
    showTrack(element, sub.track);
    /** @type {VideoView} */
    const view = { trackSid, track: sub.track, element, width: null, height: null, visible: true };
    this._viewByElement.set(element, view);
    let views = this._views.get(trackSid);
    if (!views) this._views.set(trackSid, (views = new Set()));
    views.add(view);
    if (this._adaptive) {
      this._observe(element);
      this._scheduleAdaptive();
    }
    return detach;
  }

  /**
   * Stops showing a received video in `element` (`attachVideo`'s undo):
   * takes the track out of its `srcObject`. With adaptive stream, a track
   * no element shows any more is not received.
   * @param {string} trackSid
   * @param {HTMLVideoElement} element
   */
  detachVideo(trackSid, element) {
    const view = this._viewByElement.get(element);
    if (!view || view.trackSid !== trackSid) return;
    this._viewByElement.delete(element);
    this._views.get(trackSid)?.delete(view);
    this._unobserve(element);
    hideTrack(element, view.track);
    if (this._adaptive) this._scheduleAdaptive();
  }

  /**
   * Leaves the room: sends `leave` and waits (at most `timeoutMs`) for the
   * server to close the WebSocket; then everything is torn down. While
   * reconnecting it stops trying and tears down at once.
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  leave(timeoutMs = 3000) {
    if (this.state === 'disconnected') return Promise.resolve();
    if (this._leaving) return this._leaving;
    this._leaving = new Promise((resolve) => {
      const timer = setTimeout(() => this._end(1000, 'left'), timeoutMs);
      this.once('disconnected', () => {
        clearTimeout(timer);
        resolve();
      });
      if (this.state === 'connected' && this._send({ type: 'leave' })) return;
      // not joined yet, reconnecting, or socket not open: nothing to tell the server
      clearTimeout(timer);
      this._end(1000, 'left');
    });
    return this._leaving;
  }

  // ---------------------------------------------------------------- internals

  _requireJoined() {
    if (this.state !== 'connected' || !this._pub || !this._sub) {
      throw new CallgateError('not_joined', 'the room is not joined');
    }
    return { pub: this._pub, sub: this._sub };
  }

  /** @param {ConnectionState} state */
  _setState(state) {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    if (state === 'connected') this._startWatchdog();
    else this._stopWatchdog();
    this.emit('connectionStateChanged', { state, previous });
    // Nobody is heard while the room is not connected; the server sends the list again when it changes.
    if (state !== 'connected' && this.activeSpeakers.length > 0) this._setActiveSpeakers([]);
  }

  /**
   * Opens a WebSocket that sends `first` once open. Its events count only
   * while it is `this._ctx` (see `_socketGone`). Throws when the constructor does.
   * @param {SocketCtx['phase']} phase
   * @param {object} first
   * @returns {SocketCtx}
   */
  _openSocket(phase, first) {
    const ws = new this._WebSocket(this.url);
    /** @type {SocketCtx} */
    const ctx = { ws, phase, gone: false, leftReason: null };
    ws.onopen = () => {
      if (!ctx.gone) ws.send(JSON.stringify(first));
    };
    ws.onmessage = (ev) => {
      if (!ctx.gone) this._handleFrame(ctx, ev.data);
    };
    // Browsers follow an error with a close (code 1006); other implementations may not.
    ws.onerror = () => this._socketGone(ctx, 1006, 'error');
    ws.onclose = (ev) => this._socketGone(ctx, ev?.code ?? 1006, ev?.reason ?? '');
    return ctx;
  }

  /**
   * Forgets a WebSocket: none of its events count any more. It is closed
   * with 4000 `resuming` (the server keeps the session), or with `how.code`
   * (1000 only when the session ends), or left open (`close: false`).
   * @param {SocketCtx|null} ctx
   * @param {{close?: boolean, code?: number, reason?: string}} [how]
   */
  _dropSocket(ctx, how = {}) {
    if (!ctx) return;
    ctx.gone = true;
    if (this._ctx === ctx) this._ctx = null;
    if (how.close === false) {
      // Left open: the server closes it (4009) once the session is resumed elsewhere.
      this._abandoned.add(ctx);
      ctx.ws.onopen = ctx.ws.onmessage = null;
      ctx.ws.onerror = ctx.ws.onclose = () => this._abandoned.delete(ctx);
      return;
    }
    ctx.ws.onopen = ctx.ws.onmessage = ctx.ws.onerror = ctx.ws.onclose = null;
    try {
      if (how.code === undefined) ctx.ws.close(CLOSE_RESUMING, 'resuming');
      else ctx.ws.close(how.code, how.reason ?? '');
    } catch {
      // already closed
    }
  }

  /**
   * Closes the WebSockets given up during a reconnect with 1000: only when
   * the session they belonged to is over (we left, or joined afresh).
   */
  _closeAbandoned() {
    for (const ctx of this._abandoned) {
      ctx.ws.onerror = ctx.ws.onclose = null;
      try {
        ctx.ws.close(1000, 'left');
      } catch {
        // already closed
      }
    }
    this._abandoned.clear();
  }

  /**
   * A WebSocket closed or failed.
   * @param {SocketCtx} ctx
   * @param {number} code
   * @param {string} reason
   */
  _socketGone(ctx, code, reason) {
    if (ctx.gone) return;
    ctx.gone = true;
    ctx.ws.onopen = ctx.ws.onmessage = ctx.ws.onerror = ctx.ws.onclose = null;
    // A socket that is no longer ours: an older one the server replaced (4009) or one we gave up.
    if (ctx !== this._ctx) return;
    this._ctx = null;

    if (this.state === 'connecting') {
      this._end(code, ctx.leftReason ?? reason);
      return;
    }
    if (this.state === 'disconnected') return;
    if (ctx.phase !== 'session') {
      // a reconnect try failed
      this._tryFailed(ctx.phase, code, reason);
      return;
    }
    // The session's WebSocket.
    const left = ctx.leftReason ?? (code === 1000 && END_REASONS.has(reason) ? reason : null);
    // The server gave up on this session's transports (a stalled DTLS
    // handshake, or a failure inside the server): join again.
    // Or its cluster node drained and stopped: joining again places the room
    // on another node.
    for (const rejoin of ['dtls_timeout', 'internal_error', 'node_drained']) {
      if (left === rejoin || (code === 1000 && reason === rejoin)) {
        this._lostSession(rejoin, true);
        return;
      }
    }
    if (this._leaving || left !== null || isRefusal(code)) {
      this._end(code, left ?? reason);
      return;
    }
    if (code === CLOSE_REPLACED) {
      // Our own session's socket replaced: somebody else resumed this session.
      this._end(code, reason || 'replaced');
      return;
    }
    if (code === CLOSE_RESUME_FAILED) {
      this._lostSession('resume_failed', true);
      return;
    }
    if (code === CLOSE_NODE_LOST) {
      this._lostSession('node_lost', true);
      return;
    }
    this._lostSession('signaling_lost', false);
  }

  /**
   * The session's WebSocket is gone without the session having ended.
   * @param {string} reason
   * @param {boolean} fresh join afresh (the server no longer keeps the session)
   */
  _lostSession(reason, fresh) {
    this._failPendingAnswer();
    if (this.state === 'connected') {
      this._recover(reason, { fresh });
      return;
    }
    const r = this._recovery;
    if (!r) return;
    if (fresh && !r.fresh) {
      r.fresh = true;
      r.tries = 0;
    }
    // During an in-place ICE restart, or while publishing again after joining afresh.
    if (r.mode === 'ice') this._escalate();
    else this._scheduleTry();
  }

  /** @param {object} msg @returns {boolean} whether it was sent */
  _send(msg) {
    const ws = this._ctx?.ws;
    if (!ws || this._ctx?.phase !== 'session' || ws.readyState !== WS_OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  _failJoin(err) {
    const w = this._joinWaiter;
    this._joinWaiter = null;
    w?.reject(err);
  }

  _failPendingAnswer() {
    const w = this._answerWaiter;
    this._answerWaiter = null;
    w?.reject(new CallgateError('not_connected', 'the signaling socket closed'));
  }

  _emitError(code, message, error) {
    this.emit('error', error ? { code, message, error } : { code, message });
  }

  /**
   * @param {SocketCtx} ctx
   * @param {unknown} data
   */
  _handleFrame(ctx, data) {
    if (typeof data !== 'string') return; // the protocol has text frames only
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this._emitError('malformed_message', 'server sent a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    try {
      if (ctx.phase === 'session') this._dispatch(msg, ctx);
      else if (ctx.phase === 'join') this._dispatchJoining(msg, ctx);
      else this._dispatchResuming(msg, ctx);
    } catch (err) {
      this._emitError('internal', `handling "${msg.type}" failed: ${err?.message ?? err}`, err);
    }
  }

  /** Before `joined`, on the first connection or when joining afresh. @param {any} msg @param {SocketCtx} ctx */
  _dispatchJoining(msg, ctx) {
    switch (msg.type) {
      case 'joined':
        if (this.state === 'connecting') return this._onJoined(msg, ctx);
        if (this.state === 'reconnecting') return this._onRejoined(msg, ctx);
        return;
      case 'left':
        ctx.leftReason = typeof msg.reason === 'string' ? msg.reason : 'left';
        return;
      case 'error':
        return this._onServerError(msg);
      default:
        return;
    }
  }

  /** Before `resumed`. @param {any} msg @param {SocketCtx} ctx */
  _dispatchResuming(msg, ctx) {
    if (msg.type === 'resumed') return this._onResumed(msg, ctx);
    if (msg.type !== 'error') return;
    const code = typeof msg.code === 'string' ? msg.code : 'internal';
    if (RESUME_IMPOSSIBLE.has(code)) {
      // The server will not take this session back (it closes with 4008 too): join afresh.
      this._dropSocket(ctx);
      this._tryFailed('resume', CLOSE_RESUME_FAILED, code);
      return;
    }
    this._onServerError(msg);
  }

  /** @param {any} msg @param {SocketCtx} ctx */
  _dispatch(msg, ctx) {
    switch (msg.type) {
      case 'publish_answer':
        return this._onPublishAnswer(msg);
      case 'subscribe_offer':
        return this._onSubscribeOffer(msg);
      case 'candidate':
        return this._onRemoteCandidate(msg);
      case 'participant_joined':
        return this._onParticipantJoined(msg);
      case 'participant_left':
        return this._onParticipantLeft(msg);
      case 'participant_reconnecting':
        return this._onParticipantConnectivity(msg, true);
      case 'participant_resumed':
        return this._onParticipantConnectivity(msg, false);
      case 'track_published':
        return this._onTrackPublished(msg);
      case 'track_unpublished':
        return this._onTrackUnpublished(msg);
      case 'track_muted':
        return this._onTrackMuted(msg);
      case 'reconnecting':
        return this._onServerReconnecting(msg);
      case 'balance':
        // Paid calls: how long the payer's wallet still covers this call.
        return this.emit('balance', { secondsLeft: msg.seconds_left });
      case 'balance_warning':
        return this.emit('balanceWarning', { secondsLeft: msg.seconds_left });
      case 'speakers_changed':
        return this._onSpeakersChanged(msg);
      case 'connection_quality':
        return this._onConnectionQuality(msg);
      case 'subscribed_layers':
        return this._onSubscribedLayers(msg);
      case 'participant_updated':
        return this._onParticipantUpdated(msg);
      case 'room_updated':
        this._takeRoomInfo(msg.room);
        return this.emit('roomUpdated', { room: this.roomInfo });
      case 'data':
        if (typeof msg.payload !== 'string') return;
        return this.emit('data', {
          from: String(msg.from ?? ''),
          fromSid: String(msg.from_sid ?? ''),
          topic: typeof msg.topic === 'string' ? msg.topic : null,
          payload: msg.payload,
          reliable: msg.reliable !== false,
        });
      case 'call_ring': {
        // A room connection serves its identity too (docs/calls.md): a call rings it here.
        const ring = toCallRing(msg);
        return ring ? this.emit('ring', ring) : undefined;
      }
      case 'call_state': {
        const update = toCallState(msg);
        return update ? this.emit('callState', update) : undefined;
      }
      case 'left':
        ctx.leftReason = typeof msg.reason === 'string' ? msg.reason : 'left';
        return;
      case 'error':
        return this._onServerError(msg);
      default:
        return; // newer message types are ignored
    }
  }

  /**
   * What `joined` and `resumed` both carry: the room, ourselves, the resume
   * secret, the grace and the ICE servers (not `participants`).
   * @param {any} msg
   */
  _takeSession(msg) {
    this._takeRoomInfo(msg.room);
    const before = this.localParticipant;
    this.localParticipant = toParticipant(msg.participant ?? {});
    if (before && (!this.localParticipant.sid || before.sid === this.localParticipant.sid)) {
      this.localParticipant.quality = before.quality; // resumed: the same session
    }
    this._resumeSecret = typeof msg.resume_secret === 'string' && msg.resume_secret ? msg.resume_secret : null;
    const grace = Number(msg.reconnect_grace_s);
    this.reconnectGraceS = Number.isFinite(grace) && grace > 0 ? grace : DEFAULT_GRACE_S;
    this.iceServers = [...this._extraIceServers, ...(msg.ice_servers ?? []).map(toIceServer)];
  }

  /** @param {any} room the server's RoomInfo */
  _takeRoomInfo(room) {
    this.roomInfo = {
      name: room?.name ?? '',
      sid: room?.sid ?? '',
      maxParticipants: room?.max_participants ?? 0,
      metadata: typeof room?.metadata === 'string' ? room.metadata : '',
    };
  }

  /** @param {any} msg */
  _onParticipantUpdated(msg) {
    const p = msg.participant;
    if (!p?.sid) return;
    const local = p.sid === this.localParticipant?.sid;
    const known = local ? this.localParticipant : this.participants.get(p.sid);
    const fresh = toParticipant(p);
    if (!known) {
      this.participants.set(fresh.sid, fresh);
      return this.emit('participantUpdated', { participant: fresh, local });
    }
    const couldPublish = known.canPublish;
    for (const key of /** @type {const} */ (['name', 'canPublish', 'canSubscribe', 'canPublishData', 'metadata', 'attributes'])) {
      // @ts-ignore: the same key of the same type on both
      known[key] = fresh[key];
    }
    if (local && couldPublish && !known.canPublish) this._dropPublisher();
    this.emit('participantUpdated', { participant: known, local });
  }

  /**
   * The server took our right to publish away and closed our publisher
   * transport: our publications are gone, and a fresh, unnegotiated
   * publisher transport waits for the right to come back.
   */
  _dropPublisher() {
    const old = this._pub;
    this._publications = [];
    for (const info of this.localParticipant?.tracks.values() ?? []) this.localParticipant?.tracks.delete(info.sid);
    this._pub = this._createTransport('publisher');
    try {
      old?.pc.close();
    } catch {
      // closed already
    }
  }

  /**
   * Sends a data message to the room's others (docs/protocol.md, "Data messages").
   * @param {string} payload At most 16 KiB of UTF-8.
   * @param {{topic?: string, reliable?: boolean, destinations?: string[]}} [options]
   *   `reliable` (default true): kept for a receiver that is reconnecting; `destinations`:
   *   only these identities.
   */
  sendData(payload, options = {}) {
    this._requireJoined();
    if (typeof payload !== 'string') throw new TypeError('sendData: payload must be a string');
    if (new TextEncoder().encode(payload).length > MAX_DATA_PAYLOAD_BYTES) {
      throw new CallgateError('payload_too_large', `a data payload is at most ${MAX_DATA_PAYLOAD_BYTES} bytes`);
    }
    /** @type {Record<string, unknown>} */
    const msg = { type: 'data', payload, reliable: options.reliable !== false };
    if (options.topic !== undefined) msg.topic = String(options.topic);
    if (options.destinations?.length) msg.destinations = options.destinations.map(String);
    this._send(msg);
  }

  /**
   * Sets our own attributes, merged in (an empty value removes a key): a raised
   * hand is `{hand: 'raised'}`, lowered with `{hand: ''}`. Everyone gets `participantUpdated`.
   * @param {Record<string, string>} attributes
   */
  setAttributes(attributes) {
    this._requireJoined();
    this._send({ type: 'set_attributes', attributes });
  }

  /**
   * A room admin (a host's token) changes another participant: `{canPublish, canSubscribe,
   * canPublishData, name, metadata, attributes}`, each optional. Refusals arrive as `error`.
   * @param {string} identity
   * @param {{canPublish?: boolean, canSubscribe?: boolean, canPublishData?: boolean, name?: string,
   *   metadata?: string, attributes?: Record<string, string>}} update
   */
  updateParticipant(identity, update) {
    this._requireJoined();
    /** @type {Record<string, unknown>} */
    const wire = {};
    const names = /** @type {const} */ ([
      ['canPublish', 'can_publish'],
      ['canSubscribe', 'can_subscribe'],
      ['canPublishData', 'can_publish_data'],
      ['name', 'name'],
      ['metadata', 'metadata'],
      ['attributes', 'attributes'],
    ]);
    for (const [ours, theirs] of names) {
      if (update[ours] !== undefined) wire[theirs] = update[ours];
    }
    this._send({ type: 'update_participant', identity, update: wire });
  }

  /**
   * A room admin mutes another participant's track (`trackSid`) or tracks of a `kind`;
   * unmuting is refused unless the room allows it.
   * @param {string} identity
   * @param {{trackSid?: string, kind?: 'audio'|'video', muted?: boolean}} which
   */
  muteParticipant(identity, which) {
    this._requireJoined();
    /** @type {Record<string, unknown>} */
    const mute = { muted: which.muted !== false };
    if (which.trackSid !== undefined) mute.track_sid = which.trackSid;
    if (which.kind !== undefined) mute.kind = which.kind;
    this._send({ type: 'mute_participant', identity, mute });
  }

  /**
   * A room admin removes another participant from the room.
   * @param {string} identity
   */
  removeParticipant(identity) {
    this._requireJoined();
    this._send({ type: 'remove_participant', identity });
  }

  /** @param {any} msg @param {SocketCtx} ctx */
  _onJoined(msg, ctx) {
    ctx.phase = 'session';
    this._takeSession(msg);
    this.participants.clear();
    for (const p of msg.participants ?? []) {
      if (p?.sid && p.sid !== this.localParticipant?.sid) this.participants.set(p.sid, toParticipant(p));
    }
    this._pub = this._createTransport('publisher');
    this._sub = this._createTransport('subscriber');
    this._setState('connected');
    const w = this._joinWaiter;
    this._joinWaiter = null;
    w?.resolve(this);
  }

  /** @param {'publisher'|'subscriber'} target */
  _createTransport(target) {
    const PC = this._RTCPeerConnection;
    const pc = new PC(this._pcConfig());
    const transport = new Transport(target, pc, (m) => this._send(m));
    pc.addEventListener('icecandidate', (ev) => {
      const c = ev.candidate;
      if (!c || !c.candidate) return; // end of candidates: nothing to say
      transport.sendCandidate({
        candidate: c.candidate,
        sdp_mid: c.sdpMid ?? null,
        sdp_m_line_index: c.sdpMLineIndex ?? null,
      });
    });
    pc.addEventListener('connectionstatechange', () => {
      this.emit('transportStateChanged', { target, state: pc.connectionState });
    });
    pc.addEventListener('iceconnectionstatechange', () => this._onIceState(transport));
    if (target === 'subscriber') pc.addEventListener('track', (ev) => this._onTrack(ev));
    return transport;
  }

  /** @returns {RTCConfiguration} */
  _pcConfig() {
    /** @type {RTCConfiguration} */
    const config = { iceServers: this.iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
    if (this._iceTransportPolicy) config.iceTransportPolicy = this._iceTransportPolicy;
    return config;
  }

  /**
   * Offer → publish_offer → publish_answer → setRemoteDescription. Runs inside the publisher queue.
   * @param {Transport} t
   * @param {RTCOfferOptions} [options] `{iceRestart: true}` for new ICE credentials
   */
  async _negotiatePublisher(t, options) {
    const pc = t.pc;
    const offer = await pc.createOffer(options);
    await pc.setLocalDescription(offer);
    const answer = new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._answerWaiter = null;
        reject(new CallgateError('negotiation_timeout', `no publish_answer within ${this._negotiationTimeout} ms`));
      }, this._negotiationTimeout);
      this._answerWaiter = {
        resolve: (sdp) => {
          clearTimeout(timer);
          resolve(sdp);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
    });
    if (!this._send({ type: 'publish_offer', sdp: offer.sdp })) {
      this._failPendingAnswer();
    }
    t.markSignalled();
    let sdp;
    try {
      sdp = await answer;
    } catch (err) {
      if (pc.signalingState === 'have-local-offer') {
        await pc.setLocalDescription({ type: 'rollback' }).catch(() => {});
      }
      throw err;
    }
    await pc.setRemoteDescription({ type: 'answer', sdp });
    await t.flushRemoteCandidates();
  }

  _onPublishAnswer(msg) {
    const w = this._answerWaiter;
    if (!w) {
      this._emitError('unexpected_message', 'publish_answer without a pending publish_offer');
      return;
    }
    this._answerWaiter = null;
    if (typeof msg.sdp !== 'string') w.reject(new CallgateError('malformed_message', 'publish_answer without sdp'));
    else w.resolve(msg.sdp);
  }

  _onSubscribeOffer(msg) {
    const t = this._sub;
    if (!t || typeof msg.sdp !== 'string') return;
    t.enqueue(async () => {
      const pc = t.pc;
      if (pc.signalingState === 'closed' || t !== this._sub) return;
      this._remoteMedia = parseMediaSections(msg.sdp);
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await t.flushRemoteCandidates();
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      this._send({ type: 'subscribe_answer', sdp: answer.sdp });
      t.markSignalled();
      this._dropStaleSubscriptions();
    }).catch((err) => {
      if (this.state !== 'disconnected' && t === this._sub) {
        this._emitError('negotiation_failed', `subscribe_offer: ${err?.message ?? err}`, err);
      }
    });
  }

  /** @param {RTCTrackEvent} ev */
  _onTrack(ev) {
    const mid = ev.transceiver?.mid ?? null;
    const media = mid !== null ? this._remoteMedia.get(mid) : undefined;
    const stream = ev.streams?.[0];
    // Protocol: stream id = publisher's participant sid, track id = track sid.
    // The SDP's msid is the source of truth for the track sid: browsers do not
    // all give the remote MediaStreamTrack the id from the SDP.
    const participantSid = stream?.id ?? media?.streamId ?? '';
    const trackSid = media?.trackId ?? ev.track.id;
    const old = this.subscribedTracks.get(trackSid);
    if (old && old.track === ev.track) return;
    if (old) this._unsubscribe(trackSid);
    /** @type {RemoteTrack} */
    const sub = { trackSid, participantSid, kind: ev.track.kind, track: ev.track, stream, mid };
    this.subscribedTracks.set(trackSid, sub);
    this._syncSubscription(trackSid);
    this.emit('trackSubscribed', { ...sub, participant: this.participants.get(participantSid) });
  }

  /**
   * After a subscriber negotiation: forget tracks whose m-line stopped sending,
   * and follow an m-line that kept sending but now carries another track
   * (no `track` event fires for that).
   */
  _dropStaleSubscriptions() {
    for (const sub of [...this.subscribedTracks.values()]) {
      const media = sub.mid !== null ? this._remoteMedia.get(sub.mid) : undefined;
      if (media && media.sending && (!media.trackId || media.trackId === sub.trackSid)) continue;
      this._unsubscribe(sub.trackSid);
      if (media?.sending && media.trackId && !this.subscribedTracks.has(media.trackId)) {
        const participantSid = media.streamId ?? sub.participantSid;
        /** @type {RemoteTrack} */
        const next = {
          trackSid: media.trackId,
          participantSid,
          kind: sub.kind,
          track: sub.track,
          stream: participantSid === sub.participantSid ? sub.stream : undefined,
          mid: sub.mid,
        };
        this.subscribedTracks.set(next.trackSid, next);
        this._syncSubscription(next.trackSid);
        this.emit('trackSubscribed', { ...next, participant: this.participants.get(participantSid) });
      }
    }
  }

  /** @param {string} trackSid */
  _unsubscribe(trackSid) {
    const sub = this.subscribedTracks.get(trackSid);
    if (!sub) return;
    for (const view of [...(this._views.get(trackSid) ?? [])]) this.detachVideo(trackSid, view.element);
    this._views.delete(trackSid);
    this.subscribedTracks.delete(trackSid);
    this.emit('trackUnsubscribed', { ...sub, participant: this.participants.get(sub.participantSid) });
  }

  _onRemoteCandidate(msg) {
    const t = msg.target === 'publisher' ? this._pub : msg.target === 'subscriber' ? this._sub : null;
    const c = msg.candidate;
    if (!t || !c || typeof c.candidate !== 'string' || c.candidate === '') return;
    /** @type {RTCIceCandidateInit} */
    const init = { candidate: c.candidate, sdpMid: c.sdp_mid ?? null, sdpMLineIndex: c.sdp_m_line_index ?? null };
    if (init.sdpMid === null && init.sdpMLineIndex === null) init.sdpMLineIndex = 0;
    t.addRemoteCandidate(init).catch((err) => {
      if (this.state !== 'disconnected' && (t === this._pub || t === this._sub)) {
        this._emitError('invalid_candidate', `${msg.target} candidate: ${err?.message ?? err}`, err);
      }
    });
  }

  _onParticipantJoined(msg) {
    if (!msg.participant?.sid || msg.participant.sid === this.localParticipant?.sid) return;
    const participant = toParticipant(msg.participant);
    this.participants.set(participant.sid, participant);
    this.emit('participantJoined', { participant });
  }

  _onParticipantLeft(msg) {
    const sid = msg.participant_sid;
    if (typeof sid !== 'string') return;
    this._expectSilence(this._sub);
    for (const sub of [...this.subscribedTracks.values()]) {
      if (sub.participantSid === sid) this._unsubscribe(sub.trackSid);
    }
    const participant = this.participants.get(sid);
    this.participants.delete(sid);
    for (const trackSid of participant?.tracks.keys() ?? []) this._forgetSubscription(trackSid);
    if (this.activeSpeakers.some((s) => s.participantSid === sid)) {
      this._setActiveSpeakers(this.activeSpeakers.filter((s) => s.participantSid !== sid));
    }
    this.emit('participantLeft', {
      participantSid: sid,
      identity: msg.identity ?? participant?.identity ?? '',
      reason: msg.reason ?? 'left',
      participant,
    });
  }

  /**
   * `participant_reconnecting` / `participant_resumed`.
   * @param {any} msg
   * @param {boolean} reconnecting
   */
  _onParticipantConnectivity(msg, reconnecting) {
    const sid = msg.participant_sid;
    if (typeof sid !== 'string' || sid === this.localParticipant?.sid) return;
    const participant = this.participants.get(sid);
    if (participant) participant.reconnecting = reconnecting;
    // Nothing is forwarded from a participant while it is reconnecting.
    if (reconnecting) this._expectSilence(this._sub);
    this.emit(reconnecting ? 'participantReconnecting' : 'participantResumed', {
      participantSid: sid,
      identity: msg.identity ?? participant?.identity ?? '',
      participant,
    });
  }

  _onTrackPublished(msg) {
    const sid = msg.participant_sid;
    const info = msg.track && toTrackInfo(msg.track);
    if (!info) return;
    if (sid === this.localParticipant?.sid) {
      this.localParticipant.tracks.set(info.sid, info);
      const publication = this._matchLocalTracks().find((p) => p.sid === info.sid);
      // A track published again after joining afresh keeps the mute it had.
      if (publication && publication.muted !== info.muted) {
        this._send({ type: 'mute', track_sid: info.sid, muted: publication.muted });
      }
      this.emit('localTrackPublished', { publication, track: info });
      return;
    }
    const participant = this.participants.get(sid);
    if (!participant) return;
    participant.tracks.set(info.sid, info);
    this.emit('trackPublished', { participantSid: sid, participant, track: info });
  }

  /** Gives our publications the sids the server announced, by mid. */
  _matchLocalTracks() {
    const tracks = this.localParticipant ? [...this.localParticipant.tracks.values()] : [];
    for (const p of this._publications) {
      const mid = p.transceiver.mid ?? p.mid;
      if (p.sid || mid === null || mid === undefined) continue;
      const info = tracks.find((t) => t.mid === mid);
      if (info) {
        p.sid = info.sid;
        p.mid = mid;
        const layers = this._pendingLayers.get(info.sid);
        this._pendingLayers.delete(info.sid);
        if (layers) this._applyLayers(p, layers);
      }
    }
    return this._publications;
  }

  _onTrackUnpublished(msg) {
    const sid = msg.participant_sid;
    const trackSid = msg.track_sid;
    if (typeof trackSid !== 'string') return;
    if (sid === this.localParticipant?.sid) {
      this.localParticipant.tracks.delete(trackSid);
      this._pendingLayers.delete(trackSid);
      return;
    }
    this._unsubscribe(trackSid);
    this._forgetSubscription(trackSid);
    this._expectSilence(this._sub);
    const participant = this.participants.get(sid);
    participant?.tracks.delete(trackSid);
    this.emit('trackUnpublished', { participantSid: sid, participant, trackSid });
  }

  _onTrackMuted(msg) {
    const sid = msg.participant_sid;
    const participant = sid === this.localParticipant?.sid ? this.localParticipant : this.participants.get(sid);
    const info = participant?.tracks.get(msg.track_sid);
    const muted = Boolean(msg.muted);
    if (info) info.muted = muted;
    if (muted) this._expectSilence(participant === this.localParticipant ? this._pub : this._sub);
    this.emit('trackMuted', { participantSid: sid, participant, trackSid: msg.track_sid, muted });
  }

  _onServerError(msg) {
    const code = typeof msg.code === 'string' ? msg.code : 'internal';
    const message = typeof msg.message === 'string' ? msg.message : '';
    // Errors carry no request id. While a publish_offer waits for its answer,
    // these codes are taken to be about that offer, which otherwise never completes.
    if (this._answerWaiter && ['publish_not_allowed', 'invalid_sdp', 'malformed_message'].includes(code)) {
      const w = this._answerWaiter;
      this._answerWaiter = null;
      w.reject(new CallgateError(code, message || code));
    }
    this._emitError(code, message);
  }

  // ------------------------------- speakers, quality, subscriptions, simulcast

  /** @param {string} sid @returns {Participant|undefined} */
  _participantBySid(sid) {
    return sid === this.localParticipant?.sid ? this.localParticipant : this.participants.get(sid);
  }

  _onSpeakersChanged(msg) {
    if (!Array.isArray(msg.speakers)) return;
    /** @type {ActiveSpeaker[]} */
    const speakers = [];
    for (const s of msg.speakers) {
      if (typeof s?.participant_sid !== 'string') continue;
      const level = Number(s.level);
      speakers.push({
        participantSid: s.participant_sid,
        trackSid: typeof s.track_sid === 'string' ? s.track_sid : '',
        level: Number.isFinite(level) ? Math.min(1, Math.max(0, level)) : 0,
        participant: this._participantBySid(s.participant_sid),
      });
    }
    this._setActiveSpeakers(speakers);
  }

  /** @param {ActiveSpeaker[]} speakers */
  _setActiveSpeakers(speakers) {
    this.activeSpeakers = speakers;
    this.emit('activeSpeakersChanged', { speakers });
  }

  _onConnectionQuality(msg) {
    if (!Array.isArray(msg.updates)) return;
    for (const u of msg.updates) {
      if (typeof u?.participant_sid !== 'string' || !QUALITIES.has(u.quality)) continue;
      const participant = this._participantBySid(u.participant_sid);
      if (participant) participant.quality = u.quality;
      this.emit('connectionQualityChanged', { participantSid: u.participant_sid, quality: u.quality, participant });
    }
  }

  /**
   * A sender for `track` on the publisher: camera video as the simulcast
   * layers when `simulcast` is on, anything else as one encoding.
   * @param {Transport} pub
   * @param {MediaStreamTrack} track
   * @param {MediaStream|undefined} stream
   * @returns {{transceiver: RTCRtpTransceiver, simulcast: boolean}}
   */
  _addSender(pub, track, stream) {
    /** @type {RTCRtpTransceiverInit} */
    const init = { direction: 'sendonly', streams: stream ? [stream] : [] };
    const simulcast = this._simulcast && isCamera(track);
    if (simulcast) init.sendEncodings = SIMULCAST_LAYERS.map((layer) => ({ ...layer }));
    return { transceiver: pub.pc.addTransceiver(track, init), simulcast };
  }

  /** Which simulcast layers of one of our tracks anybody receives (dynacast). */
  _onSubscribedLayers(msg) {
    if (typeof msg.track_sid !== 'string' || !Array.isArray(msg.layers)) return;
    /** @type {Map<string, boolean>} */
    const layers = new Map();
    for (const l of msg.layers) {
      if (typeof l?.rid === 'string' && typeof l.active === 'boolean') layers.set(l.rid, l.active);
    }
    const publication = this._publications.find((p) => p.sid === msg.track_sid);
    if (publication) this._applyLayers(publication, layers);
    else this._pendingLayers.set(msg.track_sid, layers);
  }

  /**
   * Sets `active` of each of the publication's encodings whose rid `layers`
   * names; encodings without a rid (no simulcast) are left alone.
   * @param {LocalTrackPublication} p
   * @param {Map<string, boolean>} layers
   */
  _applyLayers(p, layers) {
    p.layers = layers;
    const pub = this._pub;
    this._changeEncodings(p, async (sender) => {
      const params = sender.getParameters();
      if (!Array.isArray(params?.encodings) || p.layers !== layers) return; // a newer one follows
      let changed = false;
      for (const e of params.encodings) {
        if (typeof e?.rid !== 'string' || !layers.has(e.rid)) continue;
        const active = /** @type {boolean} */ (layers.get(e.rid));
        if ((e.active !== false) !== active) {
          e.active = active;
          changed = true;
        }
      }
      if (!changed) return;
      await sender.setParameters(params);
      // Nothing at all sent any more: the server's RTCP may stop too, which the watchdog must not take for a loss.
      if (params.encodings.every((e) => e?.active === false) && pub === this._pub) this._expectSilence(pub);
    });
  }

  /**
   * Runs `fn` on the publication's sender after the changes of its encodings
   * queued before it (getParameters/setParameters must not interleave).
   * Does nothing where the sender lacks them; a failure is an `error` event.
   * @param {LocalTrackPublication} p
   * @param {(sender: RTCRtpSender) => Promise<void>} fn
   */
  _changeEncodings(p, fn) {
    const sender = p.transceiver?.sender;
    if (!sender || typeof sender.getParameters !== 'function' || typeof sender.setParameters !== 'function') return;
    p.encodingQueue = (p.encodingQueue ?? Promise.resolve())
      .then(() => fn(sender))
      .catch((err) => {
        if (this.state === 'disconnected' || !this._publications.includes(p)) return;
        this._emitError('set_parameters_failed', `track ${p.sid}: ${err?.message ?? err}`, err);
      });
  }

  /**
   * What to send for `trackSid`: the app's settings, with the size and
   * visibility of the elements showing it under adaptive stream.
   * @param {string} trackSid
   */
  _subscriptionFor(trackSid) {
    const prefs = this._subscriptionPrefs.get(trackSid) ?? {};
    /** @type {{type: string, track_sid: string, disabled: boolean, width?: number, height?: number, priority?: number}} */
    const msg = { type: 'update_subscription', track_sid: trackSid, disabled: Boolean(prefs.disabled) };
    let { width, height } = prefs;
    const views = this._adaptive ? this._views.get(trackSid) : undefined;
    if (views) {
      const shown = this._shownSize(views);
      if (shown) ({ width, height } = shown);
      else msg.disabled = true;
    }
    if (width !== undefined) msg.width = width;
    if (height !== undefined) msg.height = height;
    if (prefs.priority !== undefined) msg.priority = prefs.priority;
    return msg;
  }

  /**
   * The largest size, in device pixels, at which a visible element shows
   * the track; null when none is visible (or the page is hidden).
   * @param {Set<VideoView>} views
   * @returns {{width: number, height: number}|null}
   */
  _shownSize(views) {
    if (this._document?.hidden === true) return null;
    let width = 0;
    let height = 0;
    for (const v of views) {
      if (!v.visible) continue;
      width = Math.max(width, v.width ?? numberOr0(v.element.clientWidth));
      height = Math.max(height, v.height ?? numberOr0(v.element.clientHeight));
    }
    if (!(width > 0 && height > 0)) return null;
    const density = this._pixelDensity();
    const device = (css) => Math.min(MAX_VIDEO_DIMENSION, Math.max(1, Math.round(css * density)));
    return { width: device(width), height: device(height) };
  }

  _pixelDensity() {
    const d = this._adaptive?.pixelDensity;
    const n = d === 'screen' || d === undefined ? Number(globalThis.devicePixelRatio) : Number(d);
    return Number.isFinite(n) && n > 0 ? n : 1;
  }

  /**
   * Sends `update_subscription` for a received track when what it asks for
   * differs from what was last sent (or always, with `force`).
   * @param {string} trackSid
   * @param {boolean} [force]
   */
  _syncSubscription(trackSid, force = false) {
    if (!this.subscribedTracks.has(trackSid)) return; // sent once it is received
    const msg = this._subscriptionFor(trackSid);
    const key = JSON.stringify(msg);
    const last = this._sentSubscriptions.get(trackSid) ?? defaultSubscriptionKey(trackSid);
    if (!force && key === last) return;
    if (this._send(msg)) this._sentSubscriptions.set(trackSid, key);
  }

  /** After a reconnect: what we want of every track we know of goes out again. */
  _resendSubscriptions() {
    const sids = new Set([...this._sentSubscriptions.keys(), ...this._subscriptionPrefs.keys(), ...this._views.keys()]);
    for (const sid of sids) {
      const last = this._sentSubscriptions.get(sid);
      const wanted = JSON.stringify(this._subscriptionFor(sid));
      // A last message lost with the old socket, or settings the server may not have.
      if (wanted !== defaultSubscriptionKey(sid) || (last !== undefined && last !== defaultSubscriptionKey(sid))) {
        this._syncSubscription(sid, true);
      }
    }
  }

  /**
   * Forgets what we asked of a track that is gone (unpublished, its
   * participant left).
   * @param {string} trackSid
   */
  _forgetSubscription(trackSid) {
    this._subscriptionPrefs.delete(trackSid);
    this._sentSubscriptions.delete(trackSid);
  }

  /** @param {any} element */
  _observe(element) {
    const RO = this._ResizeObserver;
    const IO = this._IntersectionObserver;
    if (!this._resizeObserver && typeof RO === 'function') {
      this._resizeObserver = new RO((entries) => {
        for (const entry of entries) {
          const view = this._viewByElement.get(entry.target);
          const box = entry.contentRect;
          if (!view || !box) continue;
          view.width = numberOr0(box.width);
          view.height = numberOr0(box.height);
        }
        this._scheduleAdaptive();
      });
    }
    if (!this._intersectionObserver && typeof IO === 'function') {
      this._intersectionObserver = new IO((entries) => {
        for (const entry of entries) {
          const view = this._viewByElement.get(entry.target);
          if (view) view.visible = Boolean(entry.isIntersecting);
        }
        this._scheduleAdaptive();
      });
    }
    const doc = this._document;
    if (!this._onVisibilityChange && typeof doc?.addEventListener === 'function') {
      this._onVisibilityChange = () => this._scheduleAdaptive();
      doc.addEventListener('visibilitychange', this._onVisibilityChange);
    }
    this._resizeObserver?.observe(element);
    this._intersectionObserver?.observe(element);
  }

  /** @param {any} element */
  _unobserve(element) {
    this._resizeObserver?.unobserve(element);
    this._intersectionObserver?.unobserve(element);
  }

  /** Sends what the elements ask for once they have stayed the same for ADAPTIVE_STREAM_DEBOUNCE_MS. */
  _scheduleAdaptive() {
    if (this._adaptiveTimer !== null) clearTimeout(this._adaptiveTimer);
    this._adaptiveTimer = setTimeout(() => {
      this._adaptiveTimer = null;
      for (const sid of this._views.keys()) this._syncSubscription(sid);
    }, ADAPTIVE_STREAM_DEBOUNCE_MS);
  }

  /** Detaches every element and stops observing (the session is over). */
  _stopAdaptive() {
    for (const view of [...this._viewByElement.values()]) this.detachVideo(view.trackSid, view.element);
    this._views.clear();
    if (this._adaptiveTimer !== null) clearTimeout(this._adaptiveTimer);
    this._adaptiveTimer = null;
    this._resizeObserver?.disconnect();
    this._intersectionObserver?.disconnect();
    this._resizeObserver = this._intersectionObserver = null;
    if (this._onVisibilityChange) this._document?.removeEventListener?.('visibilitychange', this._onVisibilityChange);
    this._onVisibilityChange = null;
  }

  // ------------------------------------------------------- staying connected

  /** @param {Transport} t */
  _onIceState(t) {
    if (t !== this._pub && t !== this._sub) return; // an old transport, closed on joining afresh
    const s = t.pc.iceConnectionState;
    if (s !== 'disconnected') t.clearIceTimer();
    if (s === 'failed') {
      this._iceTrouble('ice_failed');
    } else if (s === 'disconnected') {
      if (t.iceTimer === null) {
        t.iceTimer = setTimeout(() => {
          t.iceTimer = null;
          if ((t === this._pub || t === this._sub) && t.pc.iceConnectionState === 'disconnected') {
            this._iceTrouble('ice_disconnected');
          }
        }, ICE_DISCONNECTED_MS);
      }
    } else if (s === 'connected' || s === 'completed') {
      t.restarting = false;
      if (t === this._pub) this._sendKeyframe(t);
      const r = this._recovery;
      if (r?.mode === 'ice' && this.state === 'reconnecting' && !this._pub?.restarting && !this._sub?.restarting) {
        this._recovered(true);
      }
    }
  }

  /**
   * Media watchdog (while `connected`): reads each transport's inbound
   * bytes every MEDIA_WATCHDOG_INTERVAL_MS. When a transport that was
   * receiving has got nothing for MEDIA_SILENCE_MS and no other transport got
   * anything either, the connection is lost (its network went away; ICE
   * says `disconnected` only seconds later and the old WebSocket may give no
   * sign at all): the room resumes. Transports whose stats say nothing of
   * bytes (or fail) take no part; with none, the watchdog does nothing.
   */
  _startWatchdog() {
    this._stopWatchdog();
    this._pub?.resetInbound();
    this._sub?.resetInbound();
    const run = this._watchdogRun;
    const tick = () => {
      this._watchdogTimer = setTimeout(async () => {
        this._watchdogTimer = null;
        let lost = false;
        try {
          lost = await this._inboundLost();
        } catch {
          lost = false;
        }
        if (run !== this._watchdogRun || this.state !== 'connected') return;
        if (lost) this._recover('no_inbound_media');
        else tick();
      }, MEDIA_WATCHDOG_INTERVAL_MS);
    };
    tick();
  }

  _stopWatchdog() {
    this._watchdogRun = (this._watchdogRun ?? 0) + 1;
    if (this._watchdogTimer) clearTimeout(this._watchdogTimer);
    this._watchdogTimer = null;
  }

  /**
   * One watchdog reading of both transports.
   * @returns {Promise<boolean>} whether no inbound bytes at all arrived for
   *   MEDIA_SILENCE_MS on transports one of which was receiving
   */
  async _inboundLost() {
    const transports = [this._pub, this._sub].filter(
      (t) => t && t.pc.remoteDescription && typeof t.pc.getStats === 'function',
    );
    const readings = await Promise.all(transports.map((t) => inboundBytes(t.pc)));
    const now = Date.now();
    let heard = false;
    let stalled = false;
    transports.forEach((t, i) => {
      const bytes = readings[i];
      if (bytes === null) return; // no stats: takes no part
      const w = t.inbound;
      if (w.bytes === null || bytes < w.bytes) {
        // The first reading, or new candidate pairs after an ICE restart: a new baseline.
        w.bytes = bytes;
        w.lastIncreaseAt = now;
        w.increases = 0;
      } else if (bytes > w.bytes) {
        // Bytes now and then (farther apart than the silence) are not a flow.
        w.increases = now - w.lastIncreaseAt >= MEDIA_SILENCE_MS ? 1 : w.increases + 1;
        w.bytes = bytes;
        w.lastIncreaseAt = now;
      }
      if (now - w.lastIncreaseAt < MEDIA_SILENCE_MS) heard = true;
      else if (w.increases >= 2) stalled = true;
    });
    return stalled && !heard;
  }

  /**
   * Media stops on our subscriber (or publisher) for a reason we were told
   * of: the watchdog waits for it to flow again before it counts.
   * @param {Transport|null} t
   */
  _expectSilence(t) {
    t?.resetInbound();
  }

  /**
   * After a reconnect our subscribers' decoders have lost our video, and a
   * keyframe request the server sent meanwhile went down the old path, so
   * our video starts again with a keyframe once the publisher sends on its
   * new path: when its ICE transport selects a new candidate pair (or, where
   * RTCIceTransport has no such event, when its ICE state is connected again).
   * @param {Transport|null} pub
   */
  _keyframeOnNewPath(pub) {
    if (!pub || this._publications.length === 0) return;
    pub.keyframePending = true;
    let ice = null;
    try {
      const senders = typeof pub.pc.getSenders === 'function' ? pub.pc.getSenders() : [];
      ice = senders.find((x) => x?.transport?.iceTransport)?.transport.iceTransport ?? null;
    } catch {
      ice = null;
    }
    if (!ice || ice === pub.watchedIce || typeof ice.addEventListener !== 'function') return;
    pub.watchedIce = ice;
    ice.addEventListener('selectedcandidatepairchange', () => this._sendKeyframe(pub));
  }

  /** @param {Transport} pub */
  _sendKeyframe(pub) {
    if (!pub.keyframePending || pub !== this._pub) return;
    pub.keyframePending = false;
    for (const p of this._publications) {
      if (p.kind === 'video') this._changeEncodings(p, renewKeyframe);
    }
  }

  /** @param {string} reason */
  _iceTrouble(reason) {
    if (this.state === 'connected') this._recover(reason);
    else if (this.state === 'reconnecting' && this._recovery?.mode === 'ice') this._escalate();
  }

  /** The server heard nothing from our transports: restart ICE on both, on this WebSocket. */
  _onServerReconnecting(msg) {
    if (this.state !== 'connected') return;
    const now = Date.now();
    /** @type {Recovery} */
    const r = {
      mode: 'ice',
      since: now,
      deadline: now + this.reconnectGraceS * 1000,
      tries: 0,
      fresh: false,
      timer: null,
      tryTimer: null,
    };
    this._recovery = r;
    this._setState('reconnecting');
    this.emit('reconnecting', { reason: typeof msg.reason === 'string' ? msg.reason : 'media_silent' });
    r.timer = setTimeout(() => {
      if (this._recovery === r && r.mode === 'ice') this._escalate();
    }, ICE_RESTART_TIMEOUT_MS);
    this._keyframeOnNewPath(this._pub);
    this._restartIce({ subscriber: true });
    if (!this._pub?.restarting && !this._sub?.restarting) this._recovered(true); // nothing to restart
  }

  /**
   * Restarts ICE on the publisher (an offer with new credentials, when
   * publishing) and, with `subscriber`, asks the server to restart the
   * subscriber (`ice_restart`); after `resume` the server does that by itself.
   * @param {{subscriber: boolean}} which
   */
  _restartIce({ subscriber }) {
    const pub = this._pub;
    const sub = this._sub;
    if (pub) pub.restarting = false;
    if (sub) sub.restarting = false;
    if (sub && subscriber && sub.pc.remoteDescription && this._send({ type: 'ice_restart' })) {
      sub.restarting = true;
    }
    if (pub && this._publications.length > 0 && pub.pc.localDescription) {
      pub.restarting = true;
      pub.enqueue(() => this._negotiatePublisher(pub, { iceRestart: true })).catch((err) => {
        if (pub !== this._pub || this.state === 'disconnected') return;
        // The socket dropped meanwhile: the resume that follows restarts it again.
        if (err?.code !== 'not_connected') {
          this._emitError('negotiation_failed', `publisher ICE restart: ${err?.message ?? err}`, err);
        }
      });
    }
  }

  /**
   * Starts reconnecting from `connected`: forgets the WebSocket (left open:
   * the server closes it with 4009 once we resume) and tries on new ones.
   * @param {string} reason
   * @param {{fresh?: boolean}} [opts] `fresh`: join afresh at once (no resume)
   */
  _recover(reason, { fresh = false } = {}) {
    if (this.state !== 'connected') return;
    const now = Date.now();
    this._recovery = {
      mode: 'resume',
      since: now,
      deadline: now + this.reconnectGraceS * 1000,
      tries: 0,
      fresh: fresh || !this._resumeSecret,
      timer: null,
      tryTimer: null,
    };
    this._setState('reconnecting');
    this.emit('reconnecting', { reason });
    this._startTries();
  }

  /** An in-place ICE restart did not do: go on with tries on new WebSockets. */
  _escalate() {
    const r = this._recovery;
    if (!r || r.mode !== 'ice') return;
    if (r.timer !== null) clearTimeout(r.timer);
    r.timer = null;
    r.mode = 'resume';
    r.fresh = r.fresh || !this._resumeSecret;
    this._startTries();
  }

  _startTries() {
    this._pub?.clearIceTimer();
    this._sub?.clearIceTimer();
    if (this._pub) this._pub.restarting = false;
    if (this._sub) this._sub.restarting = false;
    this._dropSocket(this._ctx, { close: false });
    this._failPendingAnswer();
    this._scheduleTry();
  }

  /**
   * Waits as the schedule says, then tries. Past the grace it joins afresh;
   * after the last try the room is disconnected (`connection_lost`).
   * @param {number} [delayMs] instead of the schedule
   */
  _scheduleTry(delayMs) {
    const r = this._recovery;
    if (!r) return;
    if (r.tries >= RECONNECT_TRIES) {
      if (r.fresh) {
        this._end(1006, 'connection_lost');
        return;
      }
      // Resuming did not work within its tries: join afresh, with tries of its own.
      r.fresh = true;
      r.tries = 0;
    }
    let delay = delayMs ?? (RECONNECT_SCHEDULE_MS[r.tries] ?? RECONNECT_STEADY_MS) + Math.random() * RECONNECT_JITTER_MS;
    if (!r.fresh && Date.now() + delay >= r.deadline) {
      // The server will not keep the session that long: join afresh when the grace is over.
      r.fresh = true;
      r.tries = 0;
      delay = Math.max(0, Math.min(delay, r.deadline - Date.now()));
    }
    r.timer = setTimeout(() => {
      r.timer = null;
      if (this._recovery === r) this._try(r);
    }, delay);
  }

  /** @param {Recovery} r */
  async _try(r) {
    r.tries += 1;
    let phase = /** @type {'resume'|'join'} */ (r.fresh ? 'join' : 'resume');
    let first;
    if (phase === 'resume') {
      first = {
        type: 'resume',
        participant_sid: this.localParticipant?.sid ?? '',
        secret: this._resumeSecret ?? '',
        protocol: PROTOCOL_VERSION,
      };
    } else {
      const token = await this._freshToken();
      if (this._recovery !== r) return; // left meanwhile
      first = { type: 'join', token, protocol: PROTOCOL_VERSION };
    }
    let ctx;
    try {
      ctx = this._openSocket(phase, first);
    } catch (err) {
      this._tryFailed(phase, 1006, String(err?.message ?? err));
      return;
    }
    this._ctx = ctx;
    r.tryTimer = setTimeout(() => {
      r.tryTimer = null;
      if (this._ctx !== ctx || ctx.phase === 'session') return;
      // A resume the server may have taken keeps the session (4000); a join
      // we never got `joined` for is a session we do not want (1000).
      this._dropSocket(ctx, phase === 'join' ? { code: 1000, reason: 'left' } : {});
      this._tryFailed(phase, 1006, 'timeout');
    }, this._tryTimeout);
  }

  /** @returns {Promise<string>} */
  async _freshToken() {
    if (this._tokenProvider) {
      try {
        const token = await this._tokenProvider();
        if (typeof token === 'string' && token) return token;
      } catch (err) {
        this._emitError('token_provider_failed', `tokenProvider: ${err?.message ?? err}`, err);
      }
    }
    return this._token;
  }

  /**
   * One reconnect try failed.
   * @param {'join'|'resume'|'session'} phase
   * @param {number} code
   * @param {string} reason
   */
  _tryFailed(phase, code, reason) {
    const r = this._recovery;
    if (!r || this.state !== 'reconnecting') return;
    if (r.tryTimer !== null) clearTimeout(r.tryTimer);
    r.tryTimer = null;
    if (this._leaving) {
      this._end(code, 'left');
      return;
    }
    if (phase === 'join' && isRefusal(code)) {
      // The token (or the room) was refused: joining again the same way cannot help.
      this._end(code, reason);
      return;
    }
    if (phase === 'resume' && code === CLOSE_RESUME_FAILED) {
      if (!r.fresh) {
        r.fresh = true;
        r.tries = 0;
      }
      this._scheduleTry(0);
      return;
    }
    this._scheduleTry();
  }

  /** `resumed`: the same session goes on. @param {any} msg @param {SocketCtx} ctx */
  _onResumed(msg, ctx) {
    const r = this._recovery;
    if (!r || this.state !== 'reconnecting') return;
    if (r.tryTimer !== null) clearTimeout(r.tryTimer);
    r.tryTimer = null;
    ctx.phase = 'session';
    const ourSid = this.localParticipant?.sid;
    this._takeSession(msg);
    if (this.localParticipant && !this.localParticipant.sid && ourSid) this.localParticipant.sid = ourSid;
    this._matchLocalTracks();
    for (const t of [this._pub, this._sub]) {
      if (!t || typeof t.pc.setConfiguration !== 'function') continue;
      try {
        t.pc.setConfiguration(this._pcConfig());
      } catch {
        // keeps the ICE servers it had
      }
    }
    this._syncParticipants(msg.participants);
    // What changed on our side while the server could not hear us.
    for (const p of this._publications) {
      const info = p.sid ? this.localParticipant?.tracks.get(p.sid) : undefined;
      if (info && info.muted !== p.muted) this._send({ type: 'mute', track_sid: p.sid, muted: p.muted });
    }
    // The server's next subscribe_offer restarts the subscriber; we restart the publisher.
    this._keyframeOnNewPath(this._pub);
    this._restartIce({ subscriber: false });
    this._recovered(true);
  }

  /** `joined` while reconnecting: a new session. @param {any} msg @param {SocketCtx} ctx */
  _onRejoined(msg, ctx) {
    const r = this._recovery;
    if (!r) return;
    if (r.tryTimer !== null) clearTimeout(r.tryTimer);
    r.tryTimer = null;
    ctx.phase = 'session';
    this._closeAbandoned(); // the old session is over
    const oldSid = this.localParticipant?.sid;
    const oldPub = this._pub;
    const oldSub = this._sub;
    this._pub = this._sub = null;
    oldPub?.close();
    oldSub?.close();
    for (const sid of [...this.subscribedTracks.keys()]) this._unsubscribe(sid);
    // A new session: the server has the default settings for everything, and our tracks get new sids.
    this._sentSubscriptions.clear();
    this._pendingLayers.clear();
    this._takeSession(msg);
    // Our old session may still be listed while the server's grace runs.
    this._syncParticipants((msg.participants ?? []).filter((p) => p?.sid !== oldSid));
    this._pub = this._createTransport('publisher');
    this._sub = this._createTransport('subscriber');
    const pub = this._pub;
    const again = this._publications.filter((p) => p.track.readyState !== 'ended');
    this._publications = again;
    for (const p of again) {
      p.sid = null;
      p.mid = null;
    }
    const done = () => {
      if (this._recovery === r && this.state === 'reconnecting' && this._ctx === ctx) this._recovered(false);
    };
    if (again.length === 0 || !this.localParticipant?.canPublish) {
      done();
      return;
    }
    pub
      .enqueue(async () => {
        for (const p of again) {
          const { transceiver, simulcast } = this._addSender(pub, p.track, p.stream);
          p.transceiver = transceiver;
          p.simulcast = simulcast;
          p.layers = null;
          p.encodingQueue = Promise.resolve();
          p.track.enabled = !p.muted;
        }
        await this._negotiatePublisher(pub);
        for (const p of again) p.mid = p.transceiver.mid ?? null;
        this._matchLocalTracks();
      })
      .then(done, (err) => {
        // A socket that dropped meanwhile starts the next try, which publishes again.
        if (pub !== this._pub || this.state === 'disconnected' || this._ctx !== ctx) return;
        this._emitError('negotiation_failed', `publishing again: ${err?.message ?? err}`, err);
        done();
      });
  }

  /**
   * Brings `participants` in line with the server's list (after `resumed`,
   * or after joining afresh), emitting the events that the messages missed
   * meanwhile would have.
   * @param {any[]} list
   */
  _syncParticipants(list) {
    /** @type {Map<string, Participant>} */
    const now = new Map();
    for (const raw of Array.isArray(list) ? list : []) {
      if (raw?.sid && raw.sid !== this.localParticipant?.sid) now.set(String(raw.sid), toParticipant(raw));
    }
    for (const [sid, known] of [...this.participants]) {
      if (!now.has(sid)) this._onParticipantLeft({ participant_sid: sid, identity: known.identity, reason: 'left' });
    }
    for (const [sid, p] of now) {
      const known = this.participants.get(sid);
      if (!known) {
        this._onParticipantJoined({
          participant: {
            sid,
            identity: p.identity,
            name: p.name,
            can_publish: p.canPublish,
            can_subscribe: p.canSubscribe,
            tracks: [],
          },
        });
        for (const t of p.tracks.values()) this._onTrackPublished({ participant_sid: sid, track: t });
        continue;
      }
      if (known.reconnecting) this._onParticipantConnectivity({ participant_sid: sid }, false);
      for (const trackSid of [...known.tracks.keys()]) {
        if (!p.tracks.has(trackSid)) this._onTrackUnpublished({ participant_sid: sid, track_sid: trackSid });
      }
      for (const t of p.tracks.values()) {
        const k = known.tracks.get(t.sid);
        if (!k) this._onTrackPublished({ participant_sid: sid, track: t });
        else if (k.muted !== t.muted) this._onTrackMuted({ participant_sid: sid, track_sid: t.sid, muted: t.muted });
      }
    }
  }

  /** @param {boolean} resumed */
  _recovered(resumed) {
    const r = this._recovery;
    if (r) {
      if (r.timer !== null) clearTimeout(r.timer);
      if (r.tryTimer !== null) clearTimeout(r.tryTimer);
    }
    this._recovery = null;
    this._setState('connected');
    this._resendSubscriptions();
    this.emit('reconnected', { resumed });
  }

  /**
   * The session is over: tears everything down and emits `disconnected`.
   * @param {number} code
   * @param {string} reason
   */
  _end(code, reason) {
    if (this.state === 'disconnected') return;
    const r = this._recovery;
    if (r) {
      if (r.timer !== null) clearTimeout(r.timer);
      if (r.tryTimer !== null) clearTimeout(r.tryTimer);
    }
    this._recovery = null;
    const why = this._ctx?.leftReason ?? (reason || (code === 1000 ? 'left' : 'connection_lost'));
    this._dropSocket(this._ctx, { code: 1000, reason: 'left' });
    this._closeAbandoned();
    this._setState('disconnected');
    this._failJoin(new CallgateError(why, `connection closed (${code}${reason ? ` ${reason}` : ''})`, code));
    this._failPendingAnswer();
    this._pub?.close();
    this._sub?.close();
    this._stopAdaptive();
    this._subscriptionPrefs.clear();
    this._sentSubscriptions.clear();
    this._pendingLayers.clear();
    this.subscribedTracks.clear();
    this.emit('disconnected', { reason: why, code });
  }
}

// ------------------------------------------------------------------ calls

/** `presence` statuses (docs/calls.md, "Presence"). */
const PRESENCE_STATUSES = new Set(['online', 'busy', 'offline']);
/** Most identities one `presence_watch` may name (docs/calls.md). */
export const MAX_PRESENCE_WATCH = 100;
/** `call_state` states after which the call is over. */
const CALL_OVER = new Set(['rejected', 'cancelled', 'missed', 'ended']);

/**
 * @typedef {'audio'|'video'} CallType
 *
 * @typedef {object} CallRing A call ringing this identity (`ring` event; docs/calls.md `call_ring`).
 * @property {string} callId `CA_…`
 * @property {string} room The call's room.
 * @property {string} caller The caller's identity.
 * @property {string} callerName What to show; the caller's identity when the backend gave no name.
 * @property {CallType} callType
 * @property {string} token Access token of this callee for the call's room: join with it to answer.
 * @property {number} ringTimeoutS How long the call rings, in s.
 * @property {number} ringEndsAtMs When it stops ringing (ms since 1970, the server's clock).
 *
 * @typedef {object} CallMemberRing One callee of a call and its ring state.
 * @property {string} identity
 * @property {'ringing'|'accepted'|'rejected'|'busy'|'missed'|'cancelled'} ring
 *
 * @typedef {object} CallStateUpdate A change of a call this identity is a member of
 *   (`callState` event; docs/calls.md `call_state`).
 * @property {string} callId
 * @property {'ringing'|'accepted'|'rejected'|'cancelled'|'missed'|'ended'} state
 * @property {string|null} by The member whose action changed it; null for a timeout.
 * @property {string|null} endReason Set once the call ended (`hung_up`, `cancelled`, `declined`, …).
 * @property {CallMemberRing[]} callees
 *
 * @typedef {object} RingEnded A ring this CallClient showed (`ring`) has stopped (`ringEnded` event).
 * @property {string} callId
 * @property {string} state How it ended: this identity's ring state when the server listed it
 *   (`accepted`, `rejected`, `busy`, `missed`, `cancelled`), else the call's state.
 * @property {boolean} answeredElsewhere This identity accepted the call, but not through this
 *   CallClient's `accept()`: another device of the same identity answered it.
 *
 * @typedef {object} PresenceUpdate
 * @property {string} identity
 * @property {'online'|'busy'|'offline'} status
 *
 * @typedef {object} CallClientOptions
 * @property {typeof WebSocket} [WebSocket] Defaults to `globalThis.WebSocket`.
 * @property {number} [connectTimeout] ms to wait for `connected` (default 15000).
 * @property {number} [reconnectTryTimeout] ms one reconnect try waits for `connected` on its
 *   new WebSocket (default 5000).
 * @property {() => (string|Promise<string>)} [tokenProvider] Called for a token before each
 *   reconnect try; when it fails or gives nothing, the token given to the constructor is used.
 *
 * @typedef {object} PresenceSocket The presence connection's WebSocket.
 * @property {WebSocket} ws
 * @property {boolean} connected `connected` arrived on it.
 * @property {boolean} gone Closed or abandoned: nothing from it counts any more.
 *
 * @typedef {object} PresenceRetry A reconnect in progress.
 * @property {number} tries Tries made so far.
 * @property {ReturnType<typeof setTimeout>|null} timer The next try.
 * @property {ReturnType<typeof setTimeout>|null} tryTimer The current try's limit.
 */

/**
 * A device's presence connection, for a device that is not in a room
 * (docs/calls.md, "Signaling messages"): it is rung (`ring`), answers,
 * declines or cancels calls, follows the calls of its identity
 * (`callState`) and watches other identities' presence.
 *
 *   const calls = new CallClient('wss://example.org/rtc', token);
 *   calls.on('ring', (ring) => showIncoming(ring));     // then calls.accept(ring.callId)
 *   calls.on('ringEnded', ({ callId, answeredElsewhere }) => stopRinging(callId));
 *   await calls.connect();
 *   calls.watchPresence(['host1', 'host2']);
 *
 * Any valid access token will do; its `sub` is the identity. Answering is
 * `accept(callId)` and then joining the call's room with the ring's
 * `token` (a `Room`); joining alone answers too.
 *
 * `state` is `connecting` until `connected`, `connected`, `reconnecting`
 * while it connects again, and `disconnected` before `connect()`, after
 * `close()`, when the server refused the token (close codes 4001–4007), or
 * when the reconnect tries ran out. When the WebSocket drops it reconnects
 * on the Room's schedule (RECONNECT_SCHEDULE_MS, then RECONNECT_STEADY_MS,
 * each with up to RECONNECT_JITTER_MS of jitter, RECONNECT_TRIES tries), and
 * sends the watch list again once connected. The server rings a connection
 * opened while a call still rings it, so a ring is not lost across a
 * reconnect; a `call_ring` for a call already shown is not emitted twice.
 *
 * Events (`calls.on(name, fn)`; `fn` gets one plain object):
 * - `connectionStateChanged` `{state, previous}`
 * - `reconnecting` `{reason}` (`signaling_lost`)
 * - `reconnected` `{}` (connected again; the watch list was sent again)
 * - `ring` CallRing (once per call)
 * - `callState` CallStateUpdate (every call this identity is a member of, as caller or callee)
 * - `ringEnded` RingEnded (a ring this client emitted stopped: stop ringing)
 * - `presence` PresenceUpdate (watched identities: at once after `watchPresence`, then on changes)
 * - `error` `{code, message, callId}` (the server's `error`; `callId` null when it named none)
 * - `disconnected` `{reason, code}`
 */
export class CallClient extends Emitter {
  /**
   * @param {string} url WebSocket URL of the signaling endpoint, e.g. `ws://127.0.0.1:7880/rtc`.
   * @param {string} token Access token (JWT) of this identity; no room grant is needed.
   * @param {CallClientOptions} [options]
   */
  constructor(url, token, options = {}) {
    super();
    if (typeof url !== 'string' || typeof token !== 'string') {
      throw new TypeError('CallClient: url and token are required strings');
    }
    this.url = url;
    this._token = token;
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._connectTimeout = options.connectTimeout ?? 15000;
    this._tryTimeout = options.reconnectTryTimeout ?? 5000;
    this._tokenProvider = typeof options.tokenProvider === 'function' ? options.tokenProvider : null;

    /** @type {ConnectionState} */
    this.state = 'disconnected';
    /** Our identity, from `connected` (null before). @type {string|null} */
    this.identity = null;
    /** Calls ringing this client now (emitted as `ring`, not yet `ringEnded`), by call id. @type {Map<string, CallRing>} */
    this.rings = new Map();
    /** The latest status of each watched identity. @type {Map<string, PresenceUpdate['status']>} */
    this.presence = new Map();

    /** The identities watched, sent again after each reconnect. @type {string[]} */
    this._watch = [];
    /** Calls this client accepted (`accept()`), by call id. @type {Set<string>} */
    this._acceptedHere = new Set();
    /** @type {PresenceSocket|null} */
    this._ctx = null;
    /** @type {PresenceRetry|null} */
    this._retry = null;
    /** @type {{resolve: (c: CallClient) => void, reject: (e: Error) => void}|null} */
    this._connectWaiter = null;
    /** @type {Promise<CallClient>|null} */
    this._connecting = null;
  }

  /**
   * Opens the presence connection: sends `connect` and resolves once
   * `connected` arrived (the watch list, if any, is sent then); rejects
   * with a CallgateError (code = close reason, e.g. `token_expired`)
   * otherwise. While connected (or reconnecting) it resolves at once.
   * @returns {Promise<CallClient>}
   */
  connect() {
    if (this.state === 'connected' || this.state === 'reconnecting') return Promise.resolve(this);
    if (this._connecting) return this._connecting;
    const connecting = new Promise((resolve, reject) => {
      if (typeof this._WebSocket !== 'function') {
        reject(new CallgateError('no_websocket', 'no WebSocket implementation available'));
        return;
      }
      this._connectWaiter = timedWaiter(this._connectTimeout, resolve, reject, () =>
        this._end(1006, 'connect_timeout'),
      );
      this._setState('connecting');
      try {
        this._open(this._token);
      } catch (err) {
        this._end(1006, 'connect_failed', String(err?.message ?? err));
      }
    });
    this._connecting = connecting;
    const done = () => {
      if (this._connecting === connecting) this._connecting = null;
    };
    connecting.then(done, done);
    return connecting;
  }

  /**
   * Answers a call that rings this identity (`call_accept`). Then join the
   * call's room with the ring's `token`.
   * @param {string} callId
   */
  accept(callId) {
    requireCallId(callId);
    this._send({ type: 'call_accept', call_id: callId });
    this._acceptedHere.add(callId);
  }

  /**
   * Declines a call that rings this identity (`call_reject`).
   * @param {string} callId
   * @param {'decline'|'busy'} [reason]
   */
  reject(callId, reason = 'decline') {
    requireCallId(callId);
    if (reason !== 'decline' && reason !== 'busy') {
      throw new TypeError(`reject: reason must be "decline" or "busy", not ${JSON.stringify(reason)}`);
    }
    this._send({ type: 'call_reject', call_id: callId, reason });
  }

  /**
   * Cancels a call this identity made, before anybody answered (`call_cancel`).
   * @param {string} callId
   */
  cancel(callId) {
    requireCallId(callId);
    this._send({ type: 'call_cancel', call_id: callId });
  }

  /**
   * Watches these identities' presence (`presence_watch`), replacing the
   * list watched before (an empty list watches nobody). The server answers
   * with one `presence` per identity at once, then one at each change.
   * Before `connected`, or while reconnecting, the list is sent once
   * connected; it is sent again after every reconnect.
   * @param {string[]} identities at most MAX_PRESENCE_WATCH (duplicates count once)
   */
  watchPresence(identities) {
    if (!Array.isArray(identities) || identities.some((i) => typeof i !== 'string' || i === '')) {
      throw new TypeError('watchPresence: identities must be an array of non-empty strings');
    }
    const list = [...new Set(identities)];
    if (list.length > MAX_PRESENCE_WATCH) {
      throw new RangeError(`watchPresence: at most ${MAX_PRESENCE_WATCH} identities, not ${list.length}`);
    }
    this._watch = list;
    for (const identity of [...this.presence.keys()]) {
      if (!list.includes(identity)) this.presence.delete(identity);
    }
    if (this._isUp()) this._sendRaw({ type: 'presence_watch', identities: list });
  }

  /**
   * Closes the presence connection (`leave`, then a normal close) and stops
   * reconnecting. The watch list is kept for a later `connect()`.
   */
  close() {
    if (this.state === 'disconnected') return;
    if (this._isUp()) this._sendRaw({ type: 'leave' });
    this._end(1000, 'left');
  }

  // ---------------------------------------------------------------- internals

  /** @param {ConnectionState} state */
  _setState(state) {
    const previous = this.state;
    if (previous === state) return;
    this.state = state;
    this.emit('connectionStateChanged', { state, previous });
  }

  /** Whether the current WebSocket is open and `connected`. */
  _isUp() {
    const ctx = this._ctx;
    return Boolean(ctx && ctx.connected && !ctx.gone && ctx.ws.readyState === WS_OPEN);
  }

  /** @param {object} msg */
  _sendRaw(msg) {
    this._ctx?.ws.send(JSON.stringify(msg));
  }

  /** Sends, or throws `not_connected` when the presence connection is not up. @param {object} msg */
  _send(msg) {
    if (!this._isUp()) {
      throw new CallgateError('not_connected', `cannot send "${msg.type}": the presence connection is ${this.state}`);
    }
    this._sendRaw(msg);
  }

  /**
   * Opens a WebSocket that sends `connect` with `token` once open, and makes it the current one.
   * @param {string} token
   * @returns {PresenceSocket}
   */
  _open(token) {
    const ws = new this._WebSocket(this.url);
    /** @type {PresenceSocket} */
    const ctx = { ws, connected: false, gone: false };
    ws.onopen = () => {
      if (!ctx.gone) ws.send(JSON.stringify({ type: 'connect', token, protocol: PROTOCOL_VERSION }));
    };
    ws.onmessage = (ev) => {
      if (!ctx.gone) this._handleFrame(ctx, ev.data);
    };
    ws.onerror = () => this._socketGone(ctx, 1006, 'error');
    ws.onclose = (ev) => this._socketGone(ctx, ev?.code ?? 1006, ev?.reason ?? '');
    this._ctx = ctx;
    return ctx;
  }

  /**
   * Forgets a WebSocket and closes it with 1000 (a presence connection has
   * no session to keep).
   * @param {PresenceSocket|null} ctx
   */
  _dropSocket(ctx) {
    if (!ctx) return;
    ctx.gone = true;
    if (this._ctx === ctx) this._ctx = null;
    ctx.ws.onopen = ctx.ws.onmessage = ctx.ws.onerror = ctx.ws.onclose = null;
    try {
      ctx.ws.close(1000, 'left');
    } catch {
      // already closed
    }
  }

  /**
   * A WebSocket closed or failed.
   * @param {PresenceSocket} ctx
   * @param {number} code
   * @param {string} reason
   */
  _socketGone(ctx, code, reason) {
    if (ctx.gone) return;
    ctx.gone = true;
    ctx.ws.onopen = ctx.ws.onmessage = ctx.ws.onerror = ctx.ws.onclose = null;
    if (ctx !== this._ctx) return;
    this._ctx = null;
    if (this.state === 'connecting') {
      this._end(code, reason || 'connection_failed');
    } else if (this.state === 'connected') {
      if (isRefusal(code)) this._end(code, reason);
      else this._startRetry('signaling_lost');
    } else if (this.state === 'reconnecting') {
      this._tryFailed(code, reason);
    }
  }

  /**
   * @param {PresenceSocket} ctx
   * @param {unknown} data
   */
  _handleFrame(ctx, data) {
    if (typeof data !== 'string') return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this.emit('error', { code: 'malformed_message', message: 'server sent a frame that is not JSON', callId: null });
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    try {
      if (msg.type === 'connected') this._onConnected(msg, ctx);
      else if (msg.type === 'error') this._onServerError(msg);
      else if (!ctx.connected) return;
      else if (msg.type === 'call_ring') this._onRing(msg);
      else if (msg.type === 'call_state') this._onCallState(msg);
      else if (msg.type === 'presence') this._onPresence(msg);
      // newer message types are ignored
    } catch (err) {
      this.emit('error', { code: 'internal', message: `handling "${msg.type}" failed: ${err?.message ?? err}`, callId: null, error: err });
    }
  }

  /** @param {any} msg @param {PresenceSocket} ctx */
  _onConnected(msg, ctx) {
    if (ctx.connected) return;
    ctx.connected = true;
    if (typeof msg.identity === 'string') this.identity = msg.identity;
    const r = this._retry;
    this._retry = null;
    if (r) {
      if (r.timer !== null) clearTimeout(r.timer);
      if (r.tryTimer !== null) clearTimeout(r.tryTimer);
    }
    if (this._watch.length > 0) this._sendRaw({ type: 'presence_watch', identities: this._watch });
    this._setState('connected');
    if (r) this.emit('reconnected', {});
    const w = this._connectWaiter;
    this._connectWaiter = null;
    w?.resolve(this);
  }

  /** @param {any} msg */
  _onServerError(msg) {
    this.emit('error', {
      code: typeof msg.code === 'string' ? msg.code : 'internal',
      message: typeof msg.message === 'string' ? msg.message : '',
      callId: typeof msg.call_id === 'string' ? msg.call_id : null,
    });
  }

  /** @param {any} msg */
  _onRing(msg) {
    const ring = toCallRing(msg);
    if (!ring) return;
    const shown = this.rings.has(ring.callId);
    this.rings.set(ring.callId, ring);
    if (!shown) this.emit('ring', ring);
  }

  /** @param {any} msg */
  _onCallState(msg) {
    const update = toCallState(msg);
    if (!update) return;
    this.emit('callState', update);
    const { callId } = update;
    if (this.rings.has(callId)) {
      const mine = update.callees.find((c) => c.identity === this.identity);
      let ended;
      let state;
      if (mine) {
        ended = mine.ring !== 'ringing' || CALL_OVER.has(update.state);
        state = mine.ring !== 'ringing' ? mine.ring : update.state;
      } else {
        // No ring state for us in the message: the call's state and who changed it say it.
        ended = CALL_OVER.has(update.state) || (update.state === 'accepted' && update.by === this.identity);
        state = update.state;
      }
      if (ended) {
        this.rings.delete(callId);
        this.emit('ringEnded', { callId, state, answeredElsewhere: state === 'accepted' && !this._acceptedHere.has(callId) });
      }
    }
    if (CALL_OVER.has(update.state)) this._acceptedHere.delete(callId);
  }

  /** @param {any} msg */
  _onPresence(msg) {
    if (typeof msg.identity !== 'string' || !PRESENCE_STATUSES.has(msg.status)) return;
    this.presence.set(msg.identity, msg.status);
    this.emit('presence', { identity: msg.identity, status: msg.status });
  }

  /** The connection dropped: reconnect on the Room's schedule. @param {string} reason */
  _startRetry(reason) {
    this._retry = { tries: 0, timer: null, tryTimer: null };
    this._setState('reconnecting');
    this.emit('reconnecting', { reason });
    this._scheduleTry();
  }

  _scheduleTry() {
    const r = this._retry;
    if (!r) return;
    if (r.tries >= RECONNECT_TRIES) {
      this._end(1006, 'connection_lost');
      return;
    }
    const delay = (RECONNECT_SCHEDULE_MS[r.tries] ?? RECONNECT_STEADY_MS) + Math.random() * RECONNECT_JITTER_MS;
    r.timer = setTimeout(() => {
      r.timer = null;
      if (this._retry === r) this._try(r);
    }, delay);
  }

  /** @param {PresenceRetry} r */
  async _try(r) {
    r.tries += 1;
    const token = await this._freshToken();
    if (this._retry !== r) return; // closed meanwhile
    let ctx;
    try {
      ctx = this._open(token);
    } catch {
      this._tryFailed(1006, 'connect_failed');
      return;
    }
    r.tryTimer = setTimeout(() => {
      r.tryTimer = null;
      if (this._ctx !== ctx || ctx.connected) return;
      this._dropSocket(ctx);
      this._tryFailed(1006, 'timeout');
    }, this._tryTimeout);
  }

  /** @returns {Promise<string>} */
  async _freshToken() {
    if (this._tokenProvider) {
      try {
        const token = await this._tokenProvider();
        if (typeof token === 'string' && token) return token;
      } catch (err) {
        this.emit('error', { code: 'token_provider_failed', message: `tokenProvider: ${err?.message ?? err}`, callId: null, error: err });
      }
    }
    return this._token;
  }

  /**
   * One reconnect try failed: a refused token ends it, anything else waits for the next try.
   * @param {number} code
   * @param {string} reason
   */
  _tryFailed(code, reason) {
    const r = this._retry;
    if (!r || this.state !== 'reconnecting') return;
    if (r.tryTimer !== null) clearTimeout(r.tryTimer);
    r.tryTimer = null;
    if (isRefusal(code)) {
      this._end(code, reason);
      return;
    }
    this._scheduleTry();
  }

  /**
   * Closes everything and emits `disconnected`.
   * @param {number} code
   * @param {string} reason
   * @param {string} [detail]
   */
  _end(code, reason, detail) {
    if (this.state === 'disconnected') return;
    const r = this._retry;
    this._retry = null;
    if (r) {
      if (r.timer !== null) clearTimeout(r.timer);
      if (r.tryTimer !== null) clearTimeout(r.tryTimer);
    }
    this._dropSocket(this._ctx);
    const why = reason || (code === 1000 ? 'left' : 'connection_lost');
    this.rings.clear();
    this._acceptedHere.clear();
    this.presence.clear();
    this._setState('disconnected');
    const w = this._connectWaiter;
    this._connectWaiter = null;
    w?.reject(new CallgateError(why, detail ?? `connection closed (${code}${reason ? ` ${reason}` : ''})`, code));
    this.emit('disconnected', { reason: why, code });
  }
}

/** @param {unknown} callId */
function requireCallId(callId) {
  if (typeof callId !== 'string' || callId === '') throw new TypeError('callId must be a non-empty string');
}

/** A `call_ring` as a CallRing; null without a call id. @param {any} m @returns {CallRing|null} */
function toCallRing(m) {
  if (typeof m.call_id !== 'string' || m.call_id === '') return null;
  const str = (v) => (typeof v === 'string' ? v : '');
  const caller = str(m.caller);
  return {
    callId: m.call_id,
    room: str(m.room),
    caller,
    callerName: str(m.caller_name) || caller,
    callType: m.call_type === 'video' ? 'video' : 'audio',
    token: str(m.token),
    ringTimeoutS: numberOr0(m.ring_timeout_s),
    ringEndsAtMs: numberOr0(m.ring_ends_at_ms),
  };
}

/** A `call_state` as a CallStateUpdate; null without a call id or state. @param {any} m @returns {CallStateUpdate|null} */
function toCallState(m) {
  if (typeof m.call_id !== 'string' || m.call_id === '' || typeof m.state !== 'string') return null;
  return {
    callId: m.call_id,
    state: m.state,
    by: typeof m.by === 'string' ? m.by : null,
    endReason: typeof m.end_reason === 'string' ? m.end_reason : null,
    callees: (Array.isArray(m.callees) ? m.callees : [])
      .filter((c) => typeof c?.identity === 'string')
      .map((c) => ({ identity: c.identity, ring: typeof c.ring === 'string' ? c.ring : 'ringing' })),
  };
}

/**
 * A promise's settlers that also cancel a timer: `onTimeout` runs if
 * neither is called within `ms`.
 * @template T
 * @param {number} ms
 * @param {(value: T) => void} resolve
 * @param {(err: any) => void} reject
 * @param {() => void} onTimeout
 */
function timedWaiter(ms, resolve, reject, onTimeout) {
  const timer = setTimeout(onTimeout, ms);
  return {
    /** @param {T} value */
    resolve: (value) => {
      clearTimeout(timer);
      resolve(value);
    },
    /** @param {any} err */
    reject: (err) => {
      clearTimeout(timer);
      reject(err);
    },
  };
}

/** @returns {Participant} */
function toParticipant(p) {
  return {
    sid: String(p.sid ?? ''),
    identity: String(p.identity ?? ''),
    name: typeof p.name === 'string' ? p.name : '',
    canPublish: p.can_publish !== false,
    canSubscribe: p.can_subscribe !== false,
    canPublishData: p.can_publish_data !== false,
    metadata: typeof p.metadata === 'string' ? p.metadata : '',
    attributes: p.attributes && typeof p.attributes === 'object' ? { ...p.attributes } : {},
    tracks: new Map((Array.isArray(p.tracks) ? p.tracks : []).map((t) => [t.sid, toTrackInfo(t)])),
    reconnecting: false,
    quality: 'unknown',
  };
}

/**
 * The app's SubscriptionSettings, checked against the protocol's ranges.
 * @param {SubscriptionSettings} settings
 * @returns {SubscriptionSettings}
 */
function toSubscriptionSettings(settings) {
  if (!settings || typeof settings !== 'object') throw new TypeError('setSubscription: settings must be an object');
  const { disabled, width, height, priority } = settings;
  /** @type {SubscriptionSettings} */
  const out = {};
  if (disabled !== undefined) {
    if (typeof disabled !== 'boolean') throw new TypeError('setSubscription: disabled must be a boolean');
    out.disabled = disabled;
  }
  for (const [name, v] of /** @type {const} */ ([['width', width], ['height', height]])) {
    if (v === undefined) continue;
    if (!Number.isInteger(v) || v < 1 || v > MAX_VIDEO_DIMENSION) {
      throw new RangeError(`setSubscription: ${name} must be an integer from 1 to ${MAX_VIDEO_DIMENSION}`);
    }
    out[name] = v;
  }
  if (priority !== undefined) {
    if (!Number.isInteger(priority) || priority < 0 || priority > 255) {
      throw new RangeError('setSubscription: priority must be an integer from 0 to 255');
    }
    out.priority = priority;
  }
  return out;
}

/** The `update_subscription` the server's defaults amount to, as `_syncSubscription` compares them. */
function defaultSubscriptionKey(trackSid) {
  return JSON.stringify({ type: 'update_subscription', track_sid: trackSid, disabled: false });
}

/** @param {unknown} v @returns {number} */
function numberOr0(v) {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : 0;
}

/**
 * Whether a video track comes from a camera (not a screen or window capture,
 * whose settings name a `displaySurface`).
 * @param {MediaStreamTrack} track
 */
function isCamera(track) {
  if (track.kind !== 'video') return false;
  try {
    return typeof track.getSettings !== 'function' || track.getSettings()?.displaySurface === undefined;
  } catch {
    return true;
  }
}

/**
 * Puts `track` in `element`'s `srcObject` in place of its other video
 * tracks, or gives the element a new stream with it.
 * @param {any} element
 * @param {MediaStreamTrack} track
 */
function showTrack(element, track) {
  const stream = element.srcObject;
  if (stream && typeof stream.getVideoTracks === 'function' && typeof stream.addTrack === 'function') {
    for (const t of stream.getVideoTracks()) if (t !== track) stream.removeTrack(t);
    if (!stream.getVideoTracks().includes(track)) stream.addTrack(track);
  } else if (typeof globalThis.MediaStream === 'function') {
    element.srcObject = new globalThis.MediaStream([track]);
  }
  element.autoplay = true;
  element.playsInline = true;
}

/**
 * Takes `track` out of `element`'s `srcObject`; a stream left empty is taken away.
 * @param {any} element
 * @param {MediaStreamTrack} track
 */
function hideTrack(element, track) {
  const stream = element.srcObject;
  if (!stream || typeof stream.getTracks !== 'function') return;
  if (stream.getTracks().includes(track)) stream.removeTrack(track);
  if (stream.getTracks().length === 0) element.srcObject = null;
}

/** @returns {TrackInfo} */
function toTrackInfo(t) {
  /** @type {TrackInfo} */
  const info = { sid: String(t.sid), kind: String(t.kind), muted: Boolean(t.muted) };
  if (t.mid !== undefined && t.mid !== null) info.mid = String(t.mid);
  return info;
}

/**
 * Makes a video sender's encoder start again with a keyframe: its active
 * encodings set inactive and active again (RTCRtpSender has no keyframe
 * request of its own outside encoded transforms); encodings inactive on
 * purpose (simulcast layers nobody receives) stay so. Does nothing where
 * getParameters/setParameters are missing or no encoding is active; never throws.
 * @param {RTCRtpSender|undefined} sender
 */
async function renewKeyframe(sender) {
  if (!sender?.track || typeof sender.getParameters !== 'function' || typeof sender.setParameters !== 'function') {
    return;
  }
  /** @type {boolean[]} */
  let wasActive;
  const setActive = async (active) => {
    const params = sender.getParameters();
    if (!Array.isArray(params?.encodings) || params.encodings.length !== wasActive.length) return false;
    params.encodings.forEach((e, i) => {
      if (wasActive[i]) e.active = active;
    });
    await sender.setParameters(params);
    return true;
  };
  try {
    const params = sender.getParameters();
    if (!Array.isArray(params?.encodings)) return;
    wasActive = params.encodings.map((e) => e?.active !== false);
    if (!wasActive.some(Boolean)) return;
    if (!(await setActive(false))) return;
  } catch {
    return;
  }
  try {
    await setActive(true);
  } catch {
    await setActive(true).catch(() => {});
  }
}

/**
 * A finite, non-negative number from a stats field (numbers, or strings in
 * older implementations), or null.
 * @param {unknown} v
 * @returns {number|null}
 */
function statNumber(v) {
  const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
  return Number.isFinite(n) && n >= 0 ? n : null;
}

/**
 * Bytes received on a peer connection so far, from `getStats()`: the sum of
 * its `transport` stats' `bytesReceived`, or else of its `candidate-pair`
 * stats'. Null when the stats fail or have neither (then the watchdog leaves
 * this connection alone). Copes with a report that is a Map (browsers,
 * react-native-webrtc) or an array, and with legacy entries whose fields are
 * in a `values` array of one-key objects.
 * @param {RTCPeerConnection} pc
 * @returns {Promise<number|null>}
 */
async function inboundBytes(pc) {
  let report;
  try {
    report = await pc.getStats();
  } catch {
    return null;
  }
  if (!report || typeof report.forEach !== 'function') return null;
  let transport = null;
  let pairs = null;
  report.forEach((entry) => {
    if (!entry || typeof entry !== 'object') return;
    let s = entry;
    if (Array.isArray(entry.values)) {
      s = { ...entry };
      for (const kv of entry.values) if (kv && typeof kv === 'object') Object.assign(s, kv);
    }
    const bytes = statNumber(s.bytesReceived);
    if (bytes === null) return;
    if (s.type === 'transport') transport = (transport ?? 0) + bytes;
    else if (s.type === 'candidate-pair' || s.type === 'googCandidatePair') pairs = (pairs ?? 0) + bytes;
  });
  return transport ?? pairs;
}

/** @returns {RTCIceServer} */
function toIceServer(s) {
  /** @type {RTCIceServer} */
  const out = { urls: s.urls };
  if (s.username !== undefined) out.username = s.username;
  if (s.credential !== undefined) out.credential = s.credential;
  return out;
}

/**
 * The media sections of an SDP, by mid: kind, whether the sender side sends,
 * and the msid (stream id, track id).
 * @param {string} sdp
 * @returns {Map<string, {kind: string, sending: boolean, streamId: string|null, trackId: string|null}>}
 */
export function parseMediaSections(sdp) {
  const out = new Map();
  /** @type {any} */
  let cur = null;
  const finish = () => {
    if (cur && cur.mid !== null) {
      out.set(cur.mid, {
        kind: cur.kind,
        sending: cur.port !== 0 && (cur.direction === 'sendonly' || cur.direction === 'sendrecv'),
        streamId: cur.streamId,
        trackId: cur.trackId,
      });
    }
  };
  for (const raw of sdp.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('m=')) {
      finish();
      const [kind, port] = line.slice(2).split(' ');
      cur = { kind, port: Number(port), direction: 'sendrecv', mid: null, streamId: null, trackId: null };
    } else if (cur) {
      if (line.startsWith('a=mid:')) cur.mid = line.slice(6);
      else if (line.startsWith('a=msid:')) {
        const [stream, track] = line.slice(7).split(' ');
        cur.streamId = stream && stream !== '-' ? stream : null;
        cur.trackId = track || null;
      } else if (/^a=(sendrecv|sendonly|recvonly|inactive)$/.test(line)) cur.direction = line.slice(2);
    }
  }
  finish();
  return out;
}

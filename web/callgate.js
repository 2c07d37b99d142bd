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
// SDK also runs on react-native-webrtc or in Node with a WebRTC binding.

/** Protocol version this SDK speaks. */
export const PROTOCOL_VERSION = 1;

/** WebSocket.OPEN, spelled out because an injected constructor may lack it. */
const WS_OPEN = 1;

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
 * @property {Map<string, TrackInfo>} tracks Published tracks by track sid.
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
 * Events (subscribe with `room.on(name, fn)`; `fn` gets one plain object):
 * - `participantJoined` `{participant}`
 * - `participantLeft` `{participantSid, identity, reason, participant}`
 * - `trackPublished` `{participantSid, participant, track: TrackInfo}` (remote participants)
 * - `trackUnpublished` `{participantSid, participant, trackSid}`
 * - `localTrackPublished` `{publication, track: TrackInfo}` (the server's sid for one of our tracks)
 * - `trackSubscribed` `{participantSid, participant, trackSid, kind, track, stream}`
 * - `trackUnsubscribed` `{participantSid, participant, trackSid, kind, track, stream}`
 * - `trackMuted` `{participantSid, participant, trackSid, muted}` (also for our own tracks)
 * - `connectionStateChanged` `{target: 'publisher'|'subscriber', state}`
 * - `balance` `{secondsLeft}` (paid calls: what the payer's wallet still covers)
 * - `balanceWarning` `{secondsLeft}` (paid calls: the cut is near)
 * - `disconnected` `{reason, code}` (reason: the server's `left` reason or close reason)
 * - `error` `{code, message, error?}` (server `error` messages and local failures)
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
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this._RTCPeerConnection = options.RTCPeerConnection ?? globalThis.RTCPeerConnection;
    this._extraIceServers = options.iceServers ?? [];
    this._iceTransportPolicy = options.iceTransportPolicy;
    this._connectTimeout = options.connectTimeout ?? 15000;
    this._negotiationTimeout = options.negotiationTimeout ?? 15000;

    /** @type {'new'|'connecting'|'joined'|'disconnected'} */
    this.state = 'new';
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

    /** @type {WebSocket|null} */
    this._ws = null;
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
    /** @type {string|null} reason from the server's `left` message */
    this._leftReason = null;
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
      const WS = this._WebSocket;
      if (typeof WS !== 'function') {
        reject(new CallgateError('no_websocket', 'no WebSocket implementation available'));
        return;
      }
      if (typeof this._RTCPeerConnection !== 'function') {
        reject(new CallgateError('no_webrtc', 'no RTCPeerConnection implementation available'));
        return;
      }
      const timer = setTimeout(() => {
        this._failJoin(new CallgateError('connect_timeout', `no "joined" within ${this._connectTimeout} ms`));
        this._closeSocket(1000, 'connect_timeout');
        this._handleClose(1006, 'connect_timeout');
      }, this._connectTimeout);
      this._joinWaiter = {
        resolve: (room) => {
          clearTimeout(timer);
          resolve(room);
        },
        reject: (err) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.state = 'connecting';
      let ws;
      try {
        ws = new WS(this.url);
      } catch (err) {
        this.state = 'disconnected';
        this._failJoin(new CallgateError('connect_failed', String(err?.message ?? err)));
        return;
      }
      this._ws = ws;
      ws.onopen = () => this._send({ type: 'join', token: this._token, protocol: PROTOCOL_VERSION });
      ws.onmessage = (ev) => this._handleFrame(ev.data);
      ws.onerror = () => {}; // a close event always follows
      ws.onclose = (ev) => this._handleClose(ev.code, ev.reason);
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
      const added = fresh.map((track) => ({
        sid: null,
        mid: null,
        kind: track.kind,
        track,
        stream,
        muted: false,
        transceiver: pub.pc.addTransceiver(track, { direction: 'sendonly', streams: [stream] }),
      }));
      this._publications.push(...added);
      try {
        await this._negotiatePublisher();
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
      await this._negotiatePublisher();
    });
  }

  /**
   * Mutes or unmutes one of our published tracks: tells the server (which then
   * forwards none of its packets) and sets `track.enabled` locally.
   * @param {string|MediaStreamTrack} trackSidOrTrack
   * @param {boolean} muted
   */
  setMuted(trackSidOrTrack, muted) {
    this._requireJoined();
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
    this._send({ type: 'mute', track_sid: sid, muted: Boolean(muted) });
  }

  /**
   * Leaves the room: sends `leave` and waits (at most `timeoutMs`) for the
   * server to close the WebSocket; then everything is torn down.
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  leave(timeoutMs = 3000) {
    if (this.state === 'disconnected' || this.state === 'new') return Promise.resolve();
    if (this._leaving) return this._leaving;
    this._leaving = new Promise((resolve) => {
      const timer = setTimeout(() => {
        this._closeSocket(1000, 'left');
        this._handleClose(1000, 'left');
      }, timeoutMs);
      this.once('disconnected', () => {
        clearTimeout(timer);
        resolve();
      });
      if (this.state === 'joined' && this._send({ type: 'leave' })) return;
      // not joined yet (or socket not open): nothing to tell the server
      clearTimeout(timer);
      this._closeSocket(1000, 'left');
      this._handleClose(1000, 'left');
    });
    return this._leaving;
  }

  // ---------------------------------------------------------------- internals

  _requireJoined() {
    if (this.state !== 'joined' || !this._pub || !this._sub) {
      throw new CallgateError('not_joined', 'the room is not joined');
    }
    return { pub: this._pub, sub: this._sub };
  }

  /** @param {object} msg @returns {boolean} whether it was sent */
  _send(msg) {
    const ws = this._ws;
    if (!ws || ws.readyState !== WS_OPEN) return false;
    ws.send(JSON.stringify(msg));
    return true;
  }

  _closeSocket(code, reason) {
    try {
      this._ws?.close(code, reason);
    } catch {
      // already closed
    }
  }

  _failJoin(err) {
    const w = this._joinWaiter;
    this._joinWaiter = null;
    w?.reject(err);
  }

  _emitError(code, message, error) {
    this.emit('error', error ? { code, message, error } : { code, message });
  }

  /** @param {unknown} data */
  _handleFrame(data) {
    if (typeof data !== 'string') return; // the protocol has text frames only
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      this._emitError('malformed_message', 'server sent a frame that is not JSON');
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    if (this.state !== 'joined' && msg.type !== 'joined' && msg.type !== 'error' && msg.type !== 'left') return;
    try {
      this._dispatch(msg);
    } catch (err) {
      this._emitError('internal', `handling "${msg.type}" failed: ${err?.message ?? err}`, err);
    }
  }

  /** @param {any} msg */
  _dispatch(msg) {
    switch (msg.type) {
      case 'joined':
        return this._onJoined(msg);
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
      case 'track_published':
        return this._onTrackPublished(msg);
      case 'track_unpublished':
        return this._onTrackUnpublished(msg);
      case 'track_muted':
        return this._onTrackMuted(msg);
      case 'balance':
        // Paid calls: how long the payer's wallet still covers this call.
        return this.emit('balance', { secondsLeft: msg.seconds_left });
      case 'balance_warning':
        return this.emit('balanceWarning', { secondsLeft: msg.seconds_left });
      case 'left':
        this._leftReason = typeof msg.reason === 'string' ? msg.reason : 'left';
        return;
      case 'error':
        return this._onServerError(msg);
      default:
        return; // newer message types are ignored
    }
  }

  _onJoined(msg) {
    if (this.state !== 'connecting') return;
    this.roomInfo = {
      name: msg.room?.name ?? '',
      sid: msg.room?.sid ?? '',
      maxParticipants: msg.room?.max_participants ?? 0,
    };
    this.localParticipant = toParticipant(msg.participant ?? {});
    this.participants.clear();
    for (const p of msg.participants ?? []) {
      if (p?.sid && p.sid !== this.localParticipant.sid) this.participants.set(p.sid, toParticipant(p));
    }
    this.iceServers = [...this._extraIceServers, ...(msg.ice_servers ?? []).map(toIceServer)];
    this._pub = this._createTransport('publisher');
    this._sub = this._createTransport('subscriber');
    this.state = 'joined';
    const w = this._joinWaiter;
    this._joinWaiter = null;
    w?.resolve(this);
  }

  /** @param {'publisher'|'subscriber'} target */
  _createTransport(target) {
    const PC = this._RTCPeerConnection;
    /** @type {RTCConfiguration} */
    const config = { iceServers: this.iceServers, bundlePolicy: 'max-bundle', rtcpMuxPolicy: 'require' };
    if (this._iceTransportPolicy) config.iceTransportPolicy = this._iceTransportPolicy;
    const pc = new PC(config);
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
      this.emit('connectionStateChanged', { target, state: pc.connectionState });
    });
    if (target === 'subscriber') pc.addEventListener('track', (ev) => this._onTrack(ev));
    return transport;
  }

  /** Offer → publish_offer → publish_answer → setRemoteDescription. Runs inside the publisher queue. */
  async _negotiatePublisher() {
    const t = /** @type {Transport} */ (this._pub);
    const pc = t.pc;
    const offer = await pc.createOffer();
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
      this._answerWaiter?.reject(new CallgateError('not_connected', 'the signaling socket is closed'));
      this._answerWaiter = null;
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
    const t = /** @type {Transport} */ (this._sub);
    if (typeof msg.sdp !== 'string') return;
    t.enqueue(async () => {
      const pc = t.pc;
      if (pc.signalingState === 'closed') return;
      this._remoteMedia = parseMediaSections(msg.sdp);
      await pc.setRemoteDescription({ type: 'offer', sdp: msg.sdp });
      await t.flushRemoteCandidates();
      const answer = await pc.createAnswer();
      await pc.setLocalDescription(answer);
      this._send({ type: 'subscribe_answer', sdp: answer.sdp });
      t.markSignalled();
      this._dropStaleSubscriptions();
    }).catch((err) => {
      if (this.state === 'joined') this._emitError('negotiation_failed', `subscribe_offer: ${err?.message ?? err}`, err);
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
        this.emit('trackSubscribed', { ...next, participant: this.participants.get(participantSid) });
      }
    }
  }

  /** @param {string} trackSid */
  _unsubscribe(trackSid) {
    const sub = this.subscribedTracks.get(trackSid);
    if (!sub) return;
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
      if (this.state === 'joined') this._emitError('invalid_candidate', `${msg.target} candidate: ${err?.message ?? err}`, err);
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
    for (const sub of [...this.subscribedTracks.values()]) {
      if (sub.participantSid === sid) this._unsubscribe(sub.trackSid);
    }
    const participant = this.participants.get(sid);
    this.participants.delete(sid);
    this.emit('participantLeft', {
      participantSid: sid,
      identity: msg.identity ?? participant?.identity ?? '',
      reason: msg.reason ?? 'left',
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
      return;
    }
    this._unsubscribe(trackSid);
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

  /**
   * @param {number} code
   * @param {string} reason
   */
  _handleClose(code, reason) {
    if (this.state === 'disconnected') return;
    this.state = 'disconnected';
    const why = this._leftReason ?? (reason || (code === 1000 ? 'left' : 'connection_lost'));
    if (this._ws) {
      this._ws.onopen = this._ws.onmessage = this._ws.onclose = null;
    }
    this._failJoin(new CallgateError(why, `connection closed (${code}${reason ? ` ${reason}` : ''})`, code));
    if (this._answerWaiter) {
      const w = this._answerWaiter;
      this._answerWaiter = null;
      w.reject(new CallgateError('not_connected', 'the signaling socket closed'));
    }
    this._pub?.close();
    this._sub?.close();
    this.subscribedTracks.clear();
    this.emit('disconnected', { reason: why, code });
  }
}

/** @returns {Participant} */
function toParticipant(p) {
  return {
    sid: String(p.sid ?? ''),
    identity: String(p.identity ?? ''),
    name: typeof p.name === 'string' ? p.name : '',
    canPublish: p.can_publish !== false,
    canSubscribe: p.can_subscribe !== false,
    tracks: new Map((Array.isArray(p.tracks) ? p.tracks : []).map((t) => [t.sid, toTrackInfo(t)])),
  };
}

/** @returns {TrackInfo} */
function toTrackInfo(t) {
  /** @type {TrackInfo} */
  const info = { sid: String(t.sid), kind: String(t.kind), muted: Boolean(t.muted) };
  if (t.mid !== undefined && t.mid !== null) info.mid = String(t.mid);
  return info;
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

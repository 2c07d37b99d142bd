/**
 * The media sections of an SDP, by mid: kind, whether the sender side sends,
 * and the msid (stream id, track id).
 * @param {string} sdp
 * @returns {Map<string, {kind: string, sending: boolean, streamId: string|null, trackId: string|null}>}
 */
export function parseMediaSections(sdp: string): Map<string, {
    kind: string;
    sending: boolean;
    streamId: string | null;
    trackId: string | null;
}>;
/** Protocol version this SDK speaks. */
export const PROTOCOL_VERSION: 1;
/** Waits before the first reconnect tries, in ms (docs/protocol.md, "Client reconnect schedule"). */
export const RECONNECT_SCHEDULE_MS: readonly number[];
/** Wait before each later try, in ms. */
export const RECONNECT_STEADY_MS: 7000;
/** Tries in all, for resuming (and again for joining afresh). */
export const RECONNECT_TRIES: 10;
/** Up to this much random delay is added to each wait, in ms. */
export const RECONNECT_JITTER_MS: 500;
/** How long a transport's ICE may stay `disconnected` before the room reconnects, in ms. */
export const ICE_DISCONNECTED_MS: 2000;
/** How often the media watchdog reads each transport's stats while connected, in ms. */
export const MEDIA_WATCHDOG_INTERVAL_MS: 500;
/**
 * No inbound bytes at all for this long, on transports one of which was
 * receiving, is a lost connection (in ms): the room resumes.
 */
export const MEDIA_SILENCE_MS: 2000;
/**
 * The simulcast layers of camera video (the `simulcast` option, on by default), lowest first, as
 * LiveKit's SDKs send them: rid `q` at a quarter of the resolution, `h` at
 * half, `f` at full, each with its bitrate cap (bit/s).
 */
export const SIMULCAST_LAYERS: readonly (Readonly<{
    rid: "q";
    scaleResolutionDownBy: 4;
    maxBitrate: 150000;
}> | Readonly<{
    rid: "h";
    scaleResolutionDownBy: 2;
    maxBitrate: 500000;
}> | Readonly<{
    rid: "f";
    scaleResolutionDownBy: 1;
    maxBitrate: 1500000;
}>)[];
/** Adaptive stream: how long what the elements show must stay the same before it is sent, in ms. */
export const ADAPTIVE_STREAM_DEBOUNCE_MS: 300;
/** Largest `width`/`height` of an `update_subscription` (docs/protocol.md). */
export const MAX_VIDEO_DIMENSION: 16384;
/** Largest `data` payload the server relays, in bytes (docs/protocol.md, "Data messages"). */
export const MAX_DATA_PAYLOAD_BYTES: number;
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
    constructor(code: string, message: string, closeCode?: number);
    code: string;
    closeCode: number;
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
    constructor(options: RoomOptions);
    url: string;
    _token: string;
    _tokenProvider: () => (string | Promise<string>);
    _WebSocket: {
        new (url: string | URL, protocols?: string | string[]): WebSocket;
        prototype: WebSocket;
        readonly CONNECTING: 0;
        readonly OPEN: 1;
        readonly CLOSING: 2;
        readonly CLOSED: 3;
    };
    _RTCPeerConnection: {
        new (configuration?: RTCConfiguration): RTCPeerConnection;
        prototype: RTCPeerConnection;
        generateCertificate(keygenAlgorithm: AlgorithmIdentifier): Promise<RTCCertificate>;
    };
    _extraIceServers: RTCIceServer[];
    _iceTransportPolicy: RTCIceTransportPolicy;
    _connectTimeout: number;
    _negotiationTimeout: number;
    _tryTimeout: number;
    _simulcast: boolean;
    /** @type {{pixelDensity: number|'screen'}|null} */
    _adaptive: {
        pixelDensity: number | "screen";
    } | null;
    _ResizeObserver: {
        new (callback: ResizeObserverCallback): ResizeObserver;
        prototype: ResizeObserver;
    };
    _IntersectionObserver: {
        new (callback: IntersectionObserverCallback, options?: IntersectionObserverInit): IntersectionObserver;
        prototype: IntersectionObserver;
    };
    _document: Document;
    /** @type {ConnectionState} */
    state: ConnectionState;
    /** @type {RoomInfo|null} */
    roomInfo: RoomInfo | null;
    /** @type {Participant|null} */
    localParticipant: Participant | null;
    /** Everybody else in the room, by participant sid. @type {Map<string, Participant>} */
    participants: Map<string, Participant>;
    /** Tracks received, by track sid. @type {Map<string, RemoteTrack>} */
    subscribedTracks: Map<string, RemoteTrack>;
    /** ICE servers in use (options first, then the server's). @type {RTCIceServer[]} */
    iceServers: RTCIceServer[];
    /** Who speaks now, loudest first (`activeSpeakersChanged`). @type {ActiveSpeaker[]} */
    activeSpeakers: ActiveSpeaker[];
    /** How long the server keeps a lost session (s), from `joined`/`resumed`. */
    reconnectGraceS: number;
    /** The WebSocket in use (or being tried). @type {SocketCtx|null} */
    _ctx: SocketCtx | null;
    /** Older WebSockets left open for the server to close (4009) or to close at the end. @type {Set<SocketCtx>} */
    _abandoned: Set<SocketCtx>;
    /** Takes this session back with `resume`; null when the server gave none. @type {string|null} */
    _resumeSecret: string | null;
    /** @type {Recovery|null} */
    _recovery: Recovery | null;
    /** @type {Transport|null} */
    _pub: Transport | null;
    /** @type {Transport|null} */
    _sub: Transport | null;
    /** @type {LocalTrackPublication[]} */
    _publications: LocalTrackPublication[];
    /** Media sections of the latest subscribe_offer, by mid. */
    _remoteMedia: Map<any, any>;
    /** @type {{resolve: (sdp: string) => void, reject: (e: Error) => void}|null} */
    _answerWaiter: {
        resolve: (sdp: string) => void;
        reject: (e: Error) => void;
    } | null;
    /** @type {{resolve: (room: Room) => void, reject: (e: Error) => void}|null} */
    _joinWaiter: {
        resolve: (room: Room) => void;
        reject: (e: Error) => void;
    } | null;
    /** @type {Promise<Room>|null} */
    _connecting: Promise<Room> | null;
    /** @type {Promise<void>|null} */
    _leaving: Promise<void> | null;
    /** The media watchdog's next reading. @type {ReturnType<typeof setTimeout>|null} */
    _watchdogTimer: ReturnType<typeof setTimeout> | null;
    /** Counts watchdog starts and stops: a reading from an older run is ignored. */
    _watchdogRun: number;
    /** What the app asked of remote tracks (`setSubscription`), by track sid. @type {Map<string, SubscriptionSettings>} */
    _subscriptionPrefs: Map<string, SubscriptionSettings>;
    /** The `update_subscription` last sent for each track (JSON), by track sid. @type {Map<string, string>} */
    _sentSubscriptions: Map<string, string>;
    /**
     * Elements showing remote videos through `attachVideo`, by track sid. A
     * track in here (even with none left) is one whose elements decide what
     * adaptive stream asks for. @type {Map<string, Set<VideoView>>}
     */
    _views: Map<string, Set<VideoView>>;
    /** The same views by element (an element shows one video). @type {Map<any, VideoView>} */
    _viewByElement: Map<any, VideoView>;
    /** @type {ResizeObserver|null} */
    _resizeObserver: ResizeObserver | null;
    /** @type {IntersectionObserver|null} */
    _intersectionObserver: IntersectionObserver | null;
    /** @type {(() => void)|null} */
    _onVisibilityChange: (() => void) | null;
    /** Adaptive stream's debounce. @type {ReturnType<typeof setTimeout>|null} */
    _adaptiveTimer: ReturnType<typeof setTimeout> | null;
    /**
     * `subscribed_layers` for a track of ours whose sid we have not matched yet.
     * @type {Map<string, Map<string, boolean>>}
     */
    _pendingLayers: Map<string, Map<string, boolean>>;
    /** The publisher RTCPeerConnection (null before `joined`). */
    get publisherPc(): RTCPeerConnection;
    /** The subscriber RTCPeerConnection (null before `joined`). */
    get subscriberPc(): RTCPeerConnection;
    /** Our published tracks. @returns {LocalTrackPublication[]} */
    get localTracks(): LocalTrackPublication[];
    /**
     * Opens the WebSocket and joins. Resolves with the room once `joined`
     * arrived; rejects with a CallgateError (code = close reason) otherwise.
     * @returns {Promise<Room>}
     */
    connect(): Promise<Room>;
    /**
     * Publishes every track of `stream` not yet published, as `sendonly`
     * transceivers on the publisher transport, then (re)negotiates.
     * @param {MediaStream} stream
     * @returns {Promise<LocalTrackPublication[]>} the new publications (sid filled later)
     */
    publish(stream: MediaStream): Promise<LocalTrackPublication[]>;
    /**
     * Stops publishing a track (or every published track of a stream) and renegotiates.
     * The track itself is not stopped.
     * @param {MediaStreamTrack|MediaStream} what
     * @returns {Promise<void>}
     */
    unpublish(what: MediaStreamTrack | MediaStream): Promise<void>;
    /**
     * Mutes or unmutes one of our published tracks: tells the server (which then
     * forwards none of its packets) and sets `track.enabled` locally. While
     * reconnecting it takes effect locally, and the server is told once the
     * session is back.
     * @param {string|MediaStreamTrack} trackSidOrTrack
     * @param {boolean} muted
     */
    setMuted(trackSidOrTrack: string | MediaStreamTrack, muted: boolean): void;
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
    setSubscription(trackSid: string, settings?: SubscriptionSettings): void;
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
    attachVideo(trackSid: string, element: HTMLVideoElement): () => void;
    /**
     * Stops showing a received video in `element` (`attachVideo`'s undo):
     * takes the track out of its `srcObject`. With adaptive stream, a track
     * no element shows any more is not received.
     * @param {string} trackSid
     * @param {HTMLVideoElement} element
     */
    detachVideo(trackSid: string, element: HTMLVideoElement): void;
    /**
     * Leaves the room: sends `leave` and waits (at most `timeoutMs`) for the
     * server to close the WebSocket; then everything is torn down. While
     * reconnecting it stops trying and tears down at once.
     * @param {number} [timeoutMs]
     * @returns {Promise<void>}
     */
    leave(timeoutMs?: number): Promise<void>;
    _requireJoined(): {
        pub: Transport;
        sub: Transport;
    };
    /** @param {ConnectionState} state */
    _setState(state: ConnectionState): void;
    /**
     * Opens a WebSocket that sends `first` once open. Its events count only
     * while it is `this._ctx` (see `_socketGone`). Throws when the constructor does.
     * @param {SocketCtx['phase']} phase
     * @param {object} first
     * @returns {SocketCtx}
     */
    _openSocket(phase: SocketCtx["phase"], first: object): SocketCtx;
    /**
     * Forgets a WebSocket: none of its events count any more. It is closed
     * with 4000 `resuming` (the server keeps the session), or with `how.code`
     * (1000 only when the session ends), or left open (`close: false`).
     * @param {SocketCtx|null} ctx
     * @param {{close?: boolean, code?: number, reason?: string}} [how]
     */
    _dropSocket(ctx: SocketCtx | null, how?: {
        close?: boolean;
        code?: number;
        reason?: string;
    }): void;
    /**
     * Closes the WebSockets given up during a reconnect with 1000: only when
     * the session they belonged to is over (we left, or joined afresh).
     */
    _closeAbandoned(): void;
    /**
     * A WebSocket closed or failed.
     * @param {SocketCtx} ctx
     * @param {number} code
     * @param {string} reason
     */
    _socketGone(ctx: SocketCtx, code: number, reason: string): void;
    /**
     * The session's WebSocket is gone without the session having ended.
     * @param {string} reason
     * @param {boolean} fresh join afresh (the server no longer keeps the session)
     */
    _lostSession(reason: string, fresh: boolean): void;
    /** @param {object} msg @returns {boolean} whether it was sent */
    _send(msg: object): boolean;
    _failJoin(err: any): void;
    _failPendingAnswer(): void;
    _emitError(code: any, message: any, error: any): void;
    /**
     * @param {SocketCtx} ctx
     * @param {unknown} data
     */
    _handleFrame(ctx: SocketCtx, data: unknown): void;
    /** Before `joined`, on the first connection or when joining afresh. @param {any} msg @param {SocketCtx} ctx */
    _dispatchJoining(msg: any, ctx: SocketCtx): void;
    /** Before `resumed`. @param {any} msg @param {SocketCtx} ctx */
    _dispatchResuming(msg: any, ctx: SocketCtx): void;
    /** @param {any} msg @param {SocketCtx} ctx */
    _dispatch(msg: any, ctx: SocketCtx): void;
    /**
     * What `joined` and `resumed` both carry: the room, ourselves, the resume
     * secret, the grace and the ICE servers (not `participants`).
     * @param {any} msg
     */
    _takeSession(msg: any): void;
    /** @param {any} room the server's RoomInfo */
    _takeRoomInfo(room: any): void;
    /** @param {any} msg */
    _onParticipantUpdated(msg: any): void;
    /**
     * The server took our right to publish away and closed our publisher
     * transport: our publications are gone, and a fresh, unnegotiated
     * publisher transport waits for the right to come back.
     */
    _dropPublisher(): void;
    /**
     * Sends a data message to the room's others (docs/protocol.md, "Data messages").
     * @param {string} payload At most 16 KiB of UTF-8.
     * @param {{topic?: string, reliable?: boolean, destinations?: string[]}} [options]
     *   `reliable` (default true): kept for a receiver that is reconnecting; `destinations`:
     *   only these identities.
     */
    sendData(payload: string, options?: {
        topic?: string;
        reliable?: boolean;
        destinations?: string[];
    }): void;
    /**
     * Sets our own attributes, merged in (an empty value removes a key): a raised
     * hand is `{hand: 'raised'}`, lowered with `{hand: ''}`. Everyone gets `participantUpdated`.
     * @param {Record<string, string>} attributes
     */
    setAttributes(attributes: Record<string, string>): void;
    /**
     * A room admin (a host's token) changes another participant: `{canPublish, canSubscribe,
     * canPublishData, name, metadata, attributes}`, each optional. Refusals arrive as `error`.
     * @param {string} identity
     * @param {{canPublish?: boolean, canSubscribe?: boolean, canPublishData?: boolean, name?: string,
     *   metadata?: string, attributes?: Record<string, string>}} update
     */
    updateParticipant(identity: string, update: {
        canPublish?: boolean;
        canSubscribe?: boolean;
        canPublishData?: boolean;
        name?: string;
        metadata?: string;
        attributes?: Record<string, string>;
    }): void;
    /**
     * A room admin mutes another participant's track (`trackSid`) or tracks of a `kind`;
     * unmuting is refused unless the room allows it.
     * @param {string} identity
     * @param {{trackSid?: string, kind?: 'audio'|'video', muted?: boolean}} which
     */
    muteParticipant(identity: string, which: {
        trackSid?: string;
        kind?: "audio" | "video";
        muted?: boolean;
    }): void;
    /**
     * A room admin removes another participant from the room.
     * @param {string} identity
     */
    removeParticipant(identity: string): void;
    /** @param {any} msg @param {SocketCtx} ctx */
    _onJoined(msg: any, ctx: SocketCtx): void;
    /** @param {'publisher'|'subscriber'} target */
    _createTransport(target: "publisher" | "subscriber"): Transport;
    /** @returns {RTCConfiguration} */
    _pcConfig(): RTCConfiguration;
    /**
     * Offer → publish_offer → publish_answer → setRemoteDescription. Runs inside the publisher queue.
     * @param {Transport} t
     * @param {RTCOfferOptions} [options] `{iceRestart: true}` for new ICE credentials
     */
    _negotiatePublisher(t: Transport, options?: RTCOfferOptions): Promise<void>;
    _onPublishAnswer(msg: any): void;
    _onSubscribeOffer(msg: any): void;
    /** @param {RTCTrackEvent} ev */
    _onTrack(ev: RTCTrackEvent): void;
    /**
     * After a subscriber negotiation: forget tracks whose m-line stopped sending,
     * and follow an m-line that kept sending but now carries another track
     * (no `track` event fires for that).
     */
    _dropStaleSubscriptions(): void;
    /** @param {string} trackSid */
    _unsubscribe(trackSid: string): void;
    _onRemoteCandidate(msg: any): void;
    _onParticipantJoined(msg: any): void;
    _onParticipantLeft(msg: any): void;
    /**
     * `participant_reconnecting` / `participant_resumed`.
     * @param {any} msg
     * @param {boolean} reconnecting
     */
    _onParticipantConnectivity(msg: any, reconnecting: boolean): void;
    _onTrackPublished(msg: any): void;
    /** Gives our publications the sids the server announced, by mid. */
    _matchLocalTracks(): LocalTrackPublication[];
    _onTrackUnpublished(msg: any): void;
    _onTrackMuted(msg: any): void;
    _onServerError(msg: any): void;
    /** @param {string} sid @returns {Participant|undefined} */
    _participantBySid(sid: string): Participant | undefined;
    _onSpeakersChanged(msg: any): void;
    /** @param {ActiveSpeaker[]} speakers */
    _setActiveSpeakers(speakers: ActiveSpeaker[]): void;
    _onConnectionQuality(msg: any): void;
    /**
     * A sender for `track` on the publisher: camera video as the simulcast
     * layers when `simulcast` is on, anything else as one encoding.
     * @param {Transport} pub
     * @param {MediaStreamTrack} track
     * @param {MediaStream|undefined} stream
     * @returns {{transceiver: RTCRtpTransceiver, simulcast: boolean}}
     */
    _addSender(pub: Transport, track: MediaStreamTrack, stream: MediaStream | undefined): {
        transceiver: RTCRtpTransceiver;
        simulcast: boolean;
    };
    /** Which simulcast layers of one of our tracks anybody receives (dynacast). */
    _onSubscribedLayers(msg: any): void;
    /**
     * Sets `active` of each of the publication's encodings whose rid `layers`
     * names; encodings without a rid (no simulcast) are left alone.
     * @param {LocalTrackPublication} p
     * @param {Map<string, boolean>} layers
     */
    _applyLayers(p: LocalTrackPublication, layers: Map<string, boolean>): void;
    /**
     * Runs `fn` on the publication's sender after the changes of its encodings
     * queued before it (getParameters/setParameters must not interleave).
     * Does nothing where the sender lacks them; a failure is an `error` event.
     * @param {LocalTrackPublication} p
     * @param {(sender: RTCRtpSender) => Promise<void>} fn
     */
    _changeEncodings(p: LocalTrackPublication, fn: (sender: RTCRtpSender) => Promise<void>): void;
    /**
     * What to send for `trackSid`: the app's settings, with the size and
     * visibility of the elements showing it under adaptive stream.
     * @param {string} trackSid
     */
    _subscriptionFor(trackSid: string): {
        type: string;
        track_sid: string;
        disabled: boolean;
        width?: number;
        height?: number;
        priority?: number;
    };
    /**
     * The largest size, in device pixels, at which a visible element shows
     * the track; null when none is visible (or the page is hidden).
     * @param {Set<VideoView>} views
     * @returns {{width: number, height: number}|null}
     */
    _shownSize(views: Set<VideoView>): {
        width: number;
        height: number;
    } | null;
    _pixelDensity(): number;
    /**
     * Sends `update_subscription` for a received track when what it asks for
     * differs from what was last sent (or always, with `force`).
     * @param {string} trackSid
     * @param {boolean} [force]
     */
    _syncSubscription(trackSid: string, force?: boolean): void;
    /** After a reconnect: what we want of every track we know of goes out again. */
    _resendSubscriptions(): void;
    /**
     * Forgets what we asked of a track that is gone (unpublished, its
     * participant left).
     * @param {string} trackSid
     */
    _forgetSubscription(trackSid: string): void;
    /** @param {any} element */
    _observe(element: any): void;
    /** @param {any} element */
    _unobserve(element: any): void;
    /** Sends what the elements ask for once they have stayed the same for ADAPTIVE_STREAM_DEBOUNCE_MS. */
    _scheduleAdaptive(): void;
    /** Detaches every element and stops observing (the session is over). */
    _stopAdaptive(): void;
    /** @param {Transport} t */
    _onIceState(t: Transport): void;
    /**
     * Media watchdog (while `connected`): reads each transport's inbound
     * bytes every MEDIA_WATCHDOG_INTERVAL_MS. When a transport that was
     * receiving has got nothing for MEDIA_SILENCE_MS and no other transport got
     * anything either, the connection is lost (its network went away; ICE
     * says `disconnected` only seconds later and the old WebSocket may give no
     * sign at all): the room resumes. Transports whose stats say nothing of
     * bytes (or fail) take no part; with none, the watchdog does nothing.
     */
    _startWatchdog(): void;
    _stopWatchdog(): void;
    /**
     * One watchdog reading of both transports.
     * @returns {Promise<boolean>} whether no inbound bytes at all arrived for
     *   MEDIA_SILENCE_MS on transports one of which was receiving
     */
    _inboundLost(): Promise<boolean>;
    /**
     * Media stops on our subscriber (or publisher) for a reason we were told
     * of: the watchdog waits for it to flow again before it counts.
     * @param {Transport|null} t
     */
    _expectSilence(t: Transport | null): void;
    /**
     * After a reconnect our subscribers' decoders have lost our video, and a
     * keyframe request the server sent meanwhile went down the old path, so
     * our video starts again with a keyframe once the publisher sends on its
     * new path: when its ICE transport selects a new candidate pair (or, where
     * RTCIceTransport has no such event, when its ICE state is connected again).
     * @param {Transport|null} pub
     */
    _keyframeOnNewPath(pub: Transport | null): void;
    /** @param {Transport} pub */
    _sendKeyframe(pub: Transport): void;
    /** @param {string} reason */
    _iceTrouble(reason: string): void;
    /** The server heard nothing from our transports: restart ICE on both, on this WebSocket. */
    _onServerReconnecting(msg: any): void;
    /**
     * Restarts ICE on the publisher (an offer with new credentials, when
     * publishing) and, with `subscriber`, asks the server to restart the
     * subscriber (`ice_restart`); after `resume` the server does that by itself.
     * @param {{subscriber: boolean}} which
     */
    _restartIce({ subscriber }: {
        subscriber: boolean;
    }): void;
    /**
     * Starts reconnecting from `connected`: forgets the WebSocket (left open:
     * the server closes it with 4009 once we resume) and tries on new ones.
     * @param {string} reason
     * @param {{fresh?: boolean}} [opts] `fresh`: join afresh at once (no resume)
     */
    _recover(reason: string, { fresh }?: {
        fresh?: boolean;
    }): void;
    /** An in-place ICE restart did not do: go on with tries on new WebSockets. */
    _escalate(): void;
    _startTries(): void;
    /**
     * Waits as the schedule says, then tries. Past the grace it joins afresh;
     * after the last try the room is disconnected (`connection_lost`).
     * @param {number} [delayMs] instead of the schedule
     */
    _scheduleTry(delayMs?: number): void;
    /** @param {Recovery} r */
    _try(r: Recovery): Promise<void>;
    /** @returns {Promise<string>} */
    _freshToken(): Promise<string>;
    /**
     * One reconnect try failed.
     * @param {'join'|'resume'|'session'} phase
     * @param {number} code
     * @param {string} reason
     */
    _tryFailed(phase: "join" | "resume" | "session", code: number, reason: string): void;
    /** `resumed`: the same session goes on. @param {any} msg @param {SocketCtx} ctx */
    _onResumed(msg: any, ctx: SocketCtx): void;
    /** `joined` while reconnecting: a new session. @param {any} msg @param {SocketCtx} ctx */
    _onRejoined(msg: any, ctx: SocketCtx): void;
    /**
     * Brings `participants` in line with the server's list (after `resumed`,
     * or after joining afresh), emitting the events that the messages missed
     * meanwhile would have.
     * @param {any[]} list
     */
    _syncParticipants(list: any[]): void;
    /** @param {boolean} resumed */
    _recovered(resumed: boolean): void;
    /**
     * The session is over: tears everything down and emits `disconnected`.
     * @param {number} code
     * @param {string} reason
     */
    _end(code: number, reason: string): void;
}
/** Most identities one `presence_watch` may name (docs/calls.md). */
export const MAX_PRESENCE_WATCH: 100;
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
    constructor(url: string, token: string, options?: CallClientOptions);
    url: string;
    _token: string;
    _WebSocket: {
        new (url: string | URL, protocols?: string | string[]): WebSocket;
        prototype: WebSocket;
        readonly CONNECTING: 0;
        readonly OPEN: 1;
        readonly CLOSING: 2;
        readonly CLOSED: 3;
    };
    _connectTimeout: number;
    _tryTimeout: number;
    _tokenProvider: () => (string | Promise<string>);
    /** @type {ConnectionState} */
    state: ConnectionState;
    /** Our identity, from `connected` (null before). @type {string|null} */
    identity: string | null;
    /** Calls ringing this client now (emitted as `ring`, not yet `ringEnded`), by call id. @type {Map<string, CallRing>} */
    rings: Map<string, CallRing>;
    /** The latest status of each watched identity. @type {Map<string, PresenceUpdate['status']>} */
    presence: Map<string, PresenceUpdate["status"]>;
    /** The identities watched, sent again after each reconnect. @type {string[]} */
    _watch: string[];
    /** Calls this client accepted (`accept()`), by call id. @type {Set<string>} */
    _acceptedHere: Set<string>;
    /** @type {PresenceSocket|null} */
    _ctx: PresenceSocket | null;
    /** @type {PresenceRetry|null} */
    _retry: PresenceRetry | null;
    /** @type {{resolve: (c: CallClient) => void, reject: (e: Error) => void}|null} */
    _connectWaiter: {
        resolve: (c: CallClient) => void;
        reject: (e: Error) => void;
    } | null;
    /** @type {Promise<CallClient>|null} */
    _connecting: Promise<CallClient> | null;
    /**
     * Opens the presence connection: sends `connect` and resolves once
     * `connected` arrived (the watch list, if any, is sent then); rejects
     * with a CallgateError (code = close reason, e.g. `token_expired`)
     * otherwise. While connected (or reconnecting) it resolves at once.
     * @returns {Promise<CallClient>}
     */
    connect(): Promise<CallClient>;
    /**
     * Answers a call that rings this identity (`call_accept`). Then join the
     * call's room with the ring's `token`.
     * @param {string} callId
     */
    accept(callId: string): void;
    /**
     * Declines a call that rings this identity (`call_reject`).
     * @param {string} callId
     * @param {'decline'|'busy'} [reason]
     */
    reject(callId: string, reason?: "decline" | "busy"): void;
    /**
     * Cancels a call this identity made, before anybody answered (`call_cancel`).
     * @param {string} callId
     */
    cancel(callId: string): void;
    /**
     * Watches these identities' presence (`presence_watch`), replacing the
     * list watched before (an empty list watches nobody). The server answers
     * with one `presence` per identity at once, then one at each change.
     * Before `connected`, or while reconnecting, the list is sent once
     * connected; it is sent again after every reconnect.
     * @param {string[]} identities at most MAX_PRESENCE_WATCH (duplicates count once)
     */
    watchPresence(identities: string[]): void;
    /**
     * Closes the presence connection (`leave`, then a normal close) and stops
     * reconnecting. The watch list is kept for a later `connect()`.
     */
    close(): void;
    /** @param {ConnectionState} state */
    _setState(state: ConnectionState): void;
    /** Whether the current WebSocket is open and `connected`. */
    _isUp(): boolean;
    /** @param {object} msg */
    _sendRaw(msg: object): void;
    /** Sends, or throws `not_connected` when the presence connection is not up. @param {object} msg */
    _send(msg: object): void;
    /**
     * Opens a WebSocket that sends `connect` with `token` once open, and makes it the current one.
     * @param {string} token
     * @returns {PresenceSocket}
     */
    _open(token: string): PresenceSocket;
    /**
     * Forgets a WebSocket and closes it with 1000 (a presence connection has
     * no session to keep).
     * @param {PresenceSocket|null} ctx
     */
    _dropSocket(ctx: PresenceSocket | null): void;
    /**
     * A WebSocket closed or failed.
     * @param {PresenceSocket} ctx
     * @param {number} code
     * @param {string} reason
     */
    _socketGone(ctx: PresenceSocket, code: number, reason: string): void;
    /**
     * @param {PresenceSocket} ctx
     * @param {unknown} data
     */
    _handleFrame(ctx: PresenceSocket, data: unknown): void;
    /** @param {any} msg @param {PresenceSocket} ctx */
    _onConnected(msg: any, ctx: PresenceSocket): void;
    /** @param {any} msg */
    _onServerError(msg: any): void;
    /** @param {any} msg */
    _onRing(msg: any): void;
    /** @param {any} msg */
    _onCallState(msg: any): void;
    /** @param {any} msg */
    _onPresence(msg: any): void;
    /** The connection dropped: reconnect on the Room's schedule. @param {string} reason */
    _startRetry(reason: string): void;
    _scheduleTry(): void;
    /** @param {PresenceRetry} r */
    _try(r: PresenceRetry): Promise<void>;
    /** @returns {Promise<string>} */
    _freshToken(): Promise<string>;
    /**
     * One reconnect try failed: a refused token ends it, anything else waits for the next try.
     * @param {number} code
     * @param {string} reason
     */
    _tryFailed(code: number, reason: string): void;
    /**
     * Closes everything and emits `disconnected`.
     * @param {number} code
     * @param {string} reason
     * @param {string} [detail]
     */
    _end(code: number, reason: string, detail?: string): void;
}
/**
 * A published track as the server describes it.
 */
export type TrackInfo = {
    sid: string;
    /**
     * `audio` or `video`
     */
    kind: string;
    muted: boolean;
    /**
     * For one's own tracks: the mid in the publisher offer.
     */
    mid?: string;
};
export type Participant = {
    sid: string;
    identity: string;
    /**
     * Display name; empty when the token has none.
     */
    name: string;
    canPublish: boolean;
    canSubscribe: boolean;
    /**
     * May send `data` messages.
     */
    canPublishData: boolean;
    /**
     * Free-form, set by the server API (empty when none).
     */
    metadata: string;
    /**
     * Small string map (`hand: 'raised'`).
     */
    attributes: Record<string, string>;
    /**
     * Published tracks by track sid.
     */
    tracks: Map<string, TrackInfo>;
    /**
     * Between `participantReconnecting` and `participantResumed`.
     */
    reconnecting: boolean;
    /**
     * The latest the server said (`connectionQualityChanged`);
     * `unknown` until it says.
     */
    quality: ConnectionQuality;
};
export type ConnectionQuality = "excellent" | "good" | "poor" | "lost" | "unknown";
/**
 * One entry of `room.activeSpeakers`, loudest first.
 */
export type ActiveSpeaker = {
    participantSid: string;
    /**
     * The audio track heard.
     */
    trackSid: string;
    /**
     * Smoothed loudness, 0 (silent) to 1 (full scale).
     */
    level: number;
    /**
     * `room.localParticipant` when it is us.
     */
    participant: Participant | undefined;
};
/**
 * What to receive of one remote track (`setSubscription`).
 */
export type SubscriptionSettings = {
    /**
     * Receive nothing of it (default false).
     */
    disabled?: boolean;
    /**
     * The size it is shown at, in device pixels (integers 1–16384);
     */
    width?: number;
    /**
     * left out: as large as there is.
     */
    height?: number;
    /**
     * 0–255, higher is served first when bandwidth is short
     * (the server's default, 128, when left out).
     */
    priority?: number;
};
export type AdaptiveStreamOptions = {
    /**
     * Device pixels per CSS pixel of an element; `screen`
     * (the default) is `devicePixelRatio`.
     */
    pixelDensity?: number | "screen";
};
export type RoomInfo = {
    name: string;
    sid: string;
    maxParticipants: number;
};
/**
 * One local track sent on the publisher transport.
 */
export type LocalTrackPublication = {
    /**
     * Track sid; null until the server's `track_published` arrives.
     */
    sid: string | null;
    mid: string | null;
    kind: string;
    track: MediaStreamTrack;
    stream: MediaStream | undefined;
    muted: boolean;
    transceiver: RTCRtpTransceiver;
    /**
     * Sent as the SIMULCAST_LAYERS encodings.
     */
    simulcast: boolean;
    /**
     * What the server's latest `subscribed_layers` wants
     * of each rid (null before one came); its encodings' `active` follow it.
     */
    layers: Map<string, boolean> | null;
    /**
     * Changes of the sender's encodings, one at a time.
     */
    encodingQueue: Promise<void>;
};
/**
 * A track received on the subscriber transport.
 */
export type RemoteTrack = {
    trackSid: string;
    participantSid: string;
    kind: string;
    track: MediaStreamTrack;
    /**
     * The stream whose id is the participant sid.
     */
    stream: MediaStream | undefined;
    mid: string | null;
};
export type RoomOptions = {
    /**
     * WebSocket URL of the signaling endpoint, e.g. `ws://127.0.0.1:7880/rtc`.
     */
    url: string;
    /**
     * Access token (JWT).
     */
    token: string;
    /**
     * Defaults to `globalThis.RTCPeerConnection`.
     */
    RTCPeerConnection?: typeof RTCPeerConnection;
    /**
     * Defaults to `globalThis.WebSocket`.
     */
    WebSocket?: typeof WebSocket;
    /**
     * Used in addition to (before) the server's `ice_servers`.
     */
    iceServers?: RTCIceServer[];
    /**
     * `relay` to send media only through the
     * TURN servers (as behind a firewall that lets nothing else out); default: the browser's (`all`).
     */
    iceTransportPolicy?: RTCIceTransportPolicy;
    /**
     * ms to wait for `joined` (default 15000).
     */
    connectTimeout?: number;
    /**
     * ms to wait for a `publish_answer` (default 15000).
     */
    negotiationTimeout?: number;
    /**
     * Called for a fresh token when the
     * room has to join afresh (the session could not be resumed); when it fails or gives nothing,
     * the token from the options is used.
     */
    tokenProvider?: () => (string | Promise<string>);
    /**
     * ms one reconnect try waits for `resumed` or
     * `joined` on its new WebSocket (default 5000).
     */
    reconnectTryTimeout?: number;
    /**
     * Publish camera video as three simulcast layers
     * (SIMULCAST_LAYERS), so each subscriber gets the layer its downlink and the size it
     * shows the video at allow (default true); false publishes one encoding.
     */
    simulcast?: boolean;
    /**
     * Receive each video shown through
     * `attachVideo` at the size it is shown at, and not at all while it is not visible.
     */
    adaptiveStream?: boolean | AdaptiveStreamOptions;
    /**
     * For adaptive stream; defaults to the global.
     */
    ResizeObserver?: typeof ResizeObserver;
    /**
     * For adaptive stream; defaults to
     * the global.
     */
    IntersectionObserver?: typeof IntersectionObserver;
    /**
     * For adaptive stream (`hidden`, `visibilitychange`); defaults
     * to the global.
     */
    document?: Document;
};
/**
 * One element showing a remote video (`attachVideo`).
 */
export type VideoView = {
    trackSid: string;
    track: MediaStreamTrack;
    element: any;
    /**
     * Its CSS size from the ResizeObserver (null before it said).
     */
    width: number | null;
    height: number | null;
    /**
     * In the viewport, as the IntersectionObserver says (true before it said).
     */
    visible: boolean;
};
/**
 * The room's state: `disconnected` before `connect()` and after the session ended.
 */
export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected";
/**
 * One WebSocket and what it is for.
 */
export type SocketCtx = {
    ws: WebSocket;
    /**
     * `join`/`resume` until `joined`/`resumed`, then `session`.
     */
    phase: "join" | "resume" | "session";
    /**
     * Closed or abandoned: nothing from it counts any more.
     */
    gone: boolean;
    /**
     * The reason of a `left` received on it.
     */
    leftReason: string | null;
};
/**
 * A reconnect in progress.
 */
export type Recovery = {
    /**
     * `ice`: restarting ICE in place on a WebSocket that is up;
     * `resume`: tries on new WebSockets.
     */
    mode: "ice" | "resume";
    /**
     * When it started (ms since 1970).
     */
    since: number;
    /**
     * When the server's grace ends (ms since 1970).
     */
    deadline: number;
    /**
     * Tries made in the current mode (resume, or joining afresh).
     */
    tries: number;
    /**
     * Join afresh instead of resuming.
     */
    fresh: boolean;
    /**
     * The next try, or the in-place restart's limit.
     */
    timer: ReturnType<typeof setTimeout> | null;
    /**
     * The current try's limit.
     */
    tryTimer: ReturnType<typeof setTimeout> | null;
};
export type CallType = "audio" | "video";
/**
 * A call ringing this identity (`ring` event; docs/calls.md `call_ring`).
 */
export type CallRing = {
    /**
     * `CA_…`
     */
    callId: string;
    /**
     * The call's room.
     */
    room: string;
    /**
     * The caller's identity.
     */
    caller: string;
    /**
     * What to show; the caller's identity when the backend gave no name.
     */
    callerName: string;
    callType: CallType;
    /**
     * Access token of this callee for the call's room: join with it to answer.
     */
    token: string;
    /**
     * How long the call rings, in s.
     */
    ringTimeoutS: number;
    /**
     * When it stops ringing (ms since 1970, the server's clock).
     */
    ringEndsAtMs: number;
};
/**
 * One callee of a call and its ring state.
 */
export type CallMemberRing = {
    identity: string;
    ring: "ringing" | "accepted" | "rejected" | "busy" | "missed" | "cancelled";
};
/**
 * A change of a call this identity is a member of
 *  (`callState` event; docs/calls.md `call_state`).
 */
export type CallStateUpdate = {
    callId: string;
    state: "ringing" | "accepted" | "rejected" | "cancelled" | "missed" | "ended";
    /**
     * The member whose action changed it; null for a timeout.
     */
    by: string | null;
    /**
     * Set once the call ended (`hung_up`, `cancelled`, `declined`, …).
     */
    endReason: string | null;
    callees: CallMemberRing[];
};
/**
 * A ring this CallClient showed (`ring`) has stopped (`ringEnded` event).
 */
export type RingEnded = {
    callId: string;
    /**
     * How it ended: this identity's ring state when the server listed it
     * (`accepted`, `rejected`, `busy`, `missed`, `cancelled`), else the call's state.
     */
    state: string;
    /**
     * This identity accepted the call, but not through this
     * CallClient's `accept()`: another device of the same identity answered it.
     */
    answeredElsewhere: boolean;
};
export type PresenceUpdate = {
    identity: string;
    status: "online" | "busy" | "offline";
};
export type CallClientOptions = {
    /**
     * Defaults to `globalThis.WebSocket`.
     */
    WebSocket?: typeof WebSocket;
    /**
     * ms to wait for `connected` (default 15000).
     */
    connectTimeout?: number;
    /**
     * ms one reconnect try waits for `connected` on its
     * new WebSocket (default 5000).
     */
    reconnectTryTimeout?: number;
    /**
     * Called for a token before each
     * reconnect try; when it fails or gives nothing, the token given to the constructor is used.
     */
    tokenProvider?: () => (string | Promise<string>);
};
/**
 * The presence connection's WebSocket.
 */
export type PresenceSocket = {
    ws: WebSocket;
    /**
     * `connected` arrived on it.
     */
    connected: boolean;
    /**
     * Closed or abandoned: nothing from it counts any more.
     */
    gone: boolean;
};
/**
 * A reconnect in progress.
 */
export type PresenceRetry = {
    /**
     * Tries made so far.
     */
    tries: number;
    /**
     * The next try.
     */
    timer: ReturnType<typeof setTimeout> | null;
    /**
     * The current try's limit.
     */
    tryTimer: ReturnType<typeof setTimeout> | null;
};
/** Minimal event emitter: works where EventTarget/CustomEvent are missing (React Native). */
declare class Emitter {
    /** @type {Map<string, Set<Function>>} */
    _listeners: Map<string, Set<Function>>;
    /**
     * Adds a listener; returns a function that removes it.
     * @param {string} type
     * @param {(detail: any) => void} fn
     * @returns {() => void}
     */
    on(type: string, fn: (detail: any) => void): () => void;
    /**
     * Like `on`, but the listener runs at most once.
     * @param {string} type
     * @param {(detail: any) => void} fn
     * @returns {() => void}
     */
    once(type: string, fn: (detail: any) => void): () => void;
    /**
     * @param {string} type
     * @param {Function} fn
     */
    off(type: string, fn: Function): void;
    /**
     * Calls the listeners; one that throws does not stop the others nor the SDK
     * (the error is rethrown asynchronously so it still shows up).
     * @param {string} type
     * @param {any} detail
     */
    emit(type: string, detail: any): void;
}
/**
 * One of the participant's two WebRTC transports with its own negotiation
 * queue and candidate buffers.
 */
declare class Transport {
    /**
     * @param {'publisher'|'subscriber'} target
     * @param {RTCPeerConnection} pc
     * @param {(msg: object) => void} send
     */
    constructor(target: "publisher" | "subscriber", pc: RTCPeerConnection, send: (msg: object) => void);
    target: "publisher" | "subscriber";
    pc: RTCPeerConnection;
    _send: (msg: object) => void;
    /** @type {Promise<unknown>} */
    _chain: Promise<unknown>;
    /** Local candidates held back until the first offer/answer has gone out. */
    _outgoing: any[];
    _signalled: boolean;
    /** Remote candidates held back until a remote description is set. */
    _incoming: any[];
    /** Runs out when ICE stayed `disconnected` too long. @type {ReturnType<typeof setTimeout>|null} */
    iceTimer: ReturnType<typeof setTimeout> | null;
    /** An ICE restart of this transport is under way (after the server's `reconnecting`). */
    restarting: boolean;
    /** Our video senders owe a keyframe once this (publisher) transport sends on its new path. */
    keyframePending: boolean;
    /** The RTCIceTransport whose selected pair we watch for that. @type {any} */
    watchedIce: any;
    /** What the media watchdog knows of this transport's inbound bytes. */
    inbound: {
        bytes: number | null;
        lastIncreaseAt: number;
        increases: number;
    };
    /**
     * Forgets what the media watchdog saw: the transport takes part again once
     * it has received bytes twice (after a silence we were told of, such as a
     * remote mute, and after every reconnect).
     */
    resetInbound(): void;
    /** Whether ICE is up (or was never needed: nothing negotiated yet). */
    get iceUp(): boolean;
    clearIceTimer(): void;
    /**
     * Runs `fn` after every negotiation queued before it: never two at once.
     * @template T
     * @param {() => Promise<T>} fn
     * @returns {Promise<T>}
     */
    enqueue<T>(fn: () => Promise<T>): Promise<T>;
    /** @param {{candidate: string, sdp_mid: string|null, sdp_m_line_index: number|null}} cand */
    sendCandidate(cand: {
        candidate: string;
        sdp_mid: string | null;
        sdp_m_line_index: number | null;
    }): void;
    /** Called once our SDP for this transport is on the wire. */
    markSignalled(): void;
    /**
     * @param {RTCIceCandidateInit} init
     * @returns {Promise<void>}
     */
    addRemoteCandidate(init: RTCIceCandidateInit): Promise<void>;
    flushRemoteCandidates(): Promise<void>;
    close(): void;
}
export {};

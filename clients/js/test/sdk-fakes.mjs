// Fakes of the browser objects the SDK (clients/js/callgate.js) uses, for the
// SDK's tests in node (sdk-*.test.mjs): a WebSocket, an RTCPeerConnection
// with its senders, a local media stream.

export class FakeWS {
  /** @type {FakeWS[]} */
  static all = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    /** @type {any[]} */
    this.sent = [];
    /** @type {{code: number, reason: string}|null} */
    this.closedByClient = null;
    this.openedAt = Date.now();
    FakeWS.all.push(this);
  }
  send(data) {
    this.sent.push(JSON.parse(data));
  }
  close(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.closedByClient = { code, reason };
  }
  // the server's side
  open() {
    this.readyState = 1;
    this.onopen?.({});
  }
  recv(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  serverClose(code, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  types() {
    return this.sent.map((m) => m.type);
  }
  /** The update_subscription messages sent so far. */
  subscriptions() {
    return this.sent.filter((m) => m.type === 'update_subscription');
  }
}

/** An RTCRtpSender's parameters, as browsers hand them out: a fresh copy each time. */
export class FakeSender {
  constructor(track, sendEncodings) {
    this.track = track;
    this.params = { transactionId: '0', encodings: (sendEncodings ?? [{}]).map((e) => ({ active: true, ...e })) };
    /** encodings of every setParameters call */
    this.set = [];
  }
  getParameters() {
    return structuredClone(this.params);
  }
  async setParameters(params) {
    this.set.push(params.encodings.map((e) => ({ rid: e.rid, active: e.active })));
    this.params = structuredClone(params);
  }
  /** `active` of each encoding, by rid. */
  active() {
    return Object.fromEntries(this.params.encodings.map((e) => [e.rid ?? '-', e.active]));
  }
}

export class FakePC {
  /** @type {FakePC[]} */
  static all = [];
  constructor(config) {
    this.config = config;
    this.listeners = {};
    this.iceConnectionState = 'new';
    this.connectionState = 'new';
    this.signalingState = 'stable';
    this.localDescription = null;
    this.remoteDescription = null;
    this.transceivers = [];
    /** options of every createOffer call */
    this.offers = [];
    this.closed = false;
    FakePC.all.push(this);
  }
  fire(type, ev) {
    for (const fn of this.listeners[type] ?? []) fn(ev);
  }
  addEventListener(type, fn) {
    (this.listeners[type] ??= []).push(fn);
  }
  setIce(state) {
    this.iceConnectionState = state;
    this.fire('iceconnectionstatechange', {});
  }
  addTransceiver(track, init) {
    const tr = { mid: null, sender: new FakeSender(track, init.sendEncodings), track, init, stop() {} };
    this.transceivers.push(tr);
    return tr;
  }
  async createOffer(options) {
    this.offers.push(options ?? {});
    return { type: 'offer', sdp: `v=0 offer ${this.offers.length}` };
  }
  async createAnswer() {
    return { type: 'answer', sdp: 'v=0 answer' };
  }
  async setLocalDescription(d) {
    if (d.type === 'rollback') {
      this.signalingState = 'stable';
      return;
    }
    this.localDescription = d;
    if (d.type === 'offer') {
      this.signalingState = 'have-local-offer';
      this.transceivers.forEach((t, i) => (t.mid ??= String(i)));
    } else {
      this.signalingState = 'stable';
    }
  }
  async setRemoteDescription(d) {
    this.remoteDescription = d;
    this.signalingState = d.type === 'offer' ? 'have-remote-offer' : 'stable';
  }
  async addIceCandidate() {}
  setConfiguration(config) {
    this.config = config;
  }
  removeTrack() {}
  /** Stats as the test sets them: `statsReport` (a function of nothing), or none at all. */
  getStats() {
    if (!this.statsReport) return Promise.reject(new Error('no stats'));
    return Promise.resolve(this.statsReport());
  }
  close() {
    this.closed = true;
    this.signalingState = 'closed';
  }
}

export function fakeStream() {
  const tracks = [
    { kind: 'audio', id: 'mic', enabled: true, readyState: 'live' },
    { kind: 'video', id: 'cam', enabled: true, readyState: 'live', getSettings: () => ({ width: 1280, height: 720 }) },
  ];
  return { id: 'local', getTracks: () => tracks };
}

// The SDK's media-plane features (clients/js/callgate.js, docs/protocol.md "Adaptive
// stream and simulcast", "Active speakers and connection quality") against a
// scripted server: fake WebSocket, RTCPeerConnection, senders, observers and
// document injected through the options, and mocked timers, so the
// debounce is checked to the millisecond. No browser, no network.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Room, SIMULCAST_LAYERS, ADAPTIVE_STREAM_DEBOUNCE_MS } from '../callgate.js';
import { FakePC, FakeWS, fakeStream } from './sdk-fakes.mjs';

/** A ResizeObserver the test drives: `resize(element, w, h)` is the browser laying it out. */
class FakeResizeObserver {
  /** @type {FakeResizeObserver[]} */
  static all = [];
  constructor(callback) {
    this.callback = callback;
    this.observed = new Set();
    FakeResizeObserver.all.push(this);
  }
  observe(el) {
    this.observed.add(el);
  }
  unobserve(el) {
    this.observed.delete(el);
  }
  disconnect() {
    this.observed.clear();
  }
  resize(el, width, height) {
    if (this.observed.has(el)) this.callback([{ target: el, contentRect: { width, height } }], this);
  }
}

/** An IntersectionObserver the test drives: `intersect(element, bool)` is it scrolling in or out of view. */
class FakeIntersectionObserver {
  /** @type {FakeIntersectionObserver[]} */
  static all = [];
  constructor(callback) {
    this.callback = callback;
    this.observed = new Set();
    FakeIntersectionObserver.all.push(this);
  }
  observe(el) {
    this.observed.add(el);
  }
  unobserve(el) {
    this.observed.delete(el);
  }
  disconnect() {
    this.observed.clear();
  }
  intersect(el, isIntersecting) {
    if (this.observed.has(el)) this.callback([{ target: el, isIntersecting }], this);
  }
}

class FakeDocument {
  constructor() {
    this.hidden = false;
    this.listeners = new Set();
  }
  addEventListener(type, fn) {
    if (type === 'visibilitychange') this.listeners.add(fn);
  }
  removeEventListener(type, fn) {
    if (type === 'visibilitychange') this.listeners.delete(fn);
  }
  setHidden(hidden) {
    this.hidden = hidden;
    for (const fn of this.listeners) fn({});
  }
}

/** The MediaStream an element gets from attachVideo. */
class FakeMediaStream {
  constructor(tracks = []) {
    this.tracks = [...tracks];
  }
  getTracks() {
    return [...this.tracks];
  }
  getVideoTracks() {
    return this.tracks.filter((t) => t.kind === 'video');
  }
  addTrack(t) {
    this.tracks.push(t);
  }
  removeTrack(t) {
    this.tracks = this.tracks.filter((x) => x !== t);
  }
}

const participant = (sid, identity, tracks = []) => ({
  sid, identity, name: '', can_publish: true, can_subscribe: true, tracks,
});
const session = (type, { sid = 'PA_me', participants = [], tracks = [] } = {}) => ({
  type,
  protocol: 1,
  room: { name: 'demo', sid: 'RM_1', max_participants: 50 },
  participant: participant(sid, 'me', tracks),
  participants,
  ice_servers: [],
  resume_secret: 'Qm9vdHN0cmFwLXNlY3JldC0zMi1ieXRlcwAAAAAAAAA',
  reconnect_grace_s: 20,
});
const BOB = participant('PA_bob', 'bob', [
  { sid: 'TR_bv', kind: 'video', muted: false },
  { sid: 'TR_ba', kind: 'audio', muted: false },
]);
const CAROL = participant('PA_carol', 'carol', [{ sid: 'TR_ca', kind: 'audio', muted: false }]);

/** Lets promise chains (SDK negotiations, setParameters) run; the mocked clock does not move. */
async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/** Everything the room emits of `names`, in order. */
function record(room, names) {
  const events = [];
  for (const name of names) room.on(name, (detail) => events.push({ name, detail }));
  return events;
}

/** A room joined with bob and carol in it, receiving bob's video (and audio), not publishing. */
async function joined(t, options = {}) {
  FakeWS.all = [];
  FakePC.all = [];
  FakeResizeObserver.all = [];
  FakeIntersectionObserver.all = [];
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  const room = new Room({
    url: 'ws://server/rtc', token: 'TOKEN', WebSocket: FakeWS, RTCPeerConnection: FakePC, ...options,
  });
  const connecting = room.connect();
  const ws = FakeWS.all[0];
  ws.open();
  ws.recv(session('joined', { participants: [BOB, CAROL] }));
  await connecting;
  const [pub, sub] = FakePC.all;
  sub.remoteDescription = { type: 'offer', sdp: 'v=0' }; // as if subscribed
  const bobVideo = { kind: 'video', id: 'TR_bv' };
  const bobAudio = { kind: 'audio', id: 'TR_ba' };
  const bobStream = { id: 'PA_bob' };
  sub.fire('track', { track: bobVideo, streams: [bobStream], transceiver: { mid: null } });
  sub.fire('track', { track: bobAudio, streams: [bobStream], transceiver: { mid: null } });
  assert.deepEqual([...room.subscribedTracks.keys()], ['TR_bv', 'TR_ba']);
  return { room, ws, pub, sub, bobVideo, bobAudio };
}

/** `joined`, then publishing a camera and a microphone whose sids the server gave. */
async function publishing(t, options = {}) {
  const ctx = await joined(t, options);
  const { room, ws, pub } = ctx;
  const publishingDone = room.publish(fakeStream());
  await settle();
  ws.recv({ type: 'publish_answer', sdp: 'v=0 answer' });
  await publishingDone;
  ws.recv({ type: 'track_published', participant_sid: 'PA_me', track: { sid: 'TR_ma', kind: 'audio', muted: false, mid: '0' } });
  ws.recv({ type: 'track_published', participant_sid: 'PA_me', track: { sid: 'TR_mv', kind: 'video', muted: false, mid: '1' } });
  const [audio, video] = pub.transceivers;
  return { ...ctx, audio, video };
}

const layers = (q, h, f) => [{ rid: 'q', active: q }, { rid: 'h', active: h }, { rid: 'f', active: f }];

test('simulcast: camera video is published as the q/h/f encodings (4×/2×/1×, 150k/500k/1.5M) by default, the microphone as one; simulcast: false gives one encoding', async (t) => {
  {
    const { audio, video } = await publishing(t);
    assert.equal(video.init.direction, 'sendonly');
    assert.deepEqual(video.init.sendEncodings, [
      { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150_000 },
      { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500_000 },
      { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1_500_000 },
    ]);
    assert.deepEqual(video.init.sendEncodings, SIMULCAST_LAYERS);
    assert.equal(audio.init.sendEncodings, undefined);
    t.mock.timers.reset();
  }
  {
    const { room, video } = await publishing(t, { simulcast: false });
    assert.equal(video.init.sendEncodings, undefined, 'no simulcast when turned off');
    assert.equal(room.localTracks.find((p) => p.kind === 'video').simulcast, false);
  }
});

test('subscribed_layers sets active on the encodings it names by rid, calls setParameters only on a change, and leaves a track without simulcast alone', async (t) => {
  const { ws, audio, video } = await publishing(t, { simulcast: true });
  ws.recv({ type: 'subscribed_layers', track_sid: 'TR_mv', layers: layers(true, true, false) });
  await settle();
  assert.deepEqual(video.sender.active(), { q: true, h: true, f: false });
  assert.equal(video.sender.set.length, 1);

  ws.recv({ type: 'subscribed_layers', track_sid: 'TR_mv', layers: layers(true, true, false) });
  await settle();
  assert.equal(video.sender.set.length, 1, 'the same layers again: no setParameters');

  // Only the full layer is wanted now; a rid the sender does not have is ignored.
  ws.recv({
    type: 'subscribed_layers', track_sid: 'TR_mv', layers: [...layers(false, false, true), { rid: 'x', active: true }],
  });
  await settle();
  assert.deepEqual(video.sender.active(), { q: false, h: false, f: true });
  assert.equal(video.sender.set.length, 2);

  // The microphone's one encoding has no rid: nothing to set.
  ws.recv({ type: 'subscribed_layers', track_sid: 'TR_ma', layers: layers(false, false, false) });
  await settle();
  assert.deepEqual(audio.sender.active(), { '-': true });
  assert.equal(audio.sender.set.length, 0);
});

test('subscribed_layers that comes before track_published names our track is applied once it does', async (t) => {
  const { room, ws, pub } = await joined(t, { simulcast: true });
  const publishingDone = room.publish(fakeStream());
  await settle();
  ws.recv({ type: 'publish_answer', sdp: 'v=0 answer' });
  await publishingDone;
  const video = pub.transceivers[1];
  ws.recv({ type: 'subscribed_layers', track_sid: 'TR_mv', layers: layers(true, false, false) });
  await settle();
  assert.equal(video.sender.set.length, 0, 'not ours yet as far as the SDK knows');
  ws.recv({ type: 'track_published', participant_sid: 'PA_me', track: { sid: 'TR_mv', kind: 'video', muted: false, mid: '1' } });
  await settle();
  assert.deepEqual(video.sender.active(), { q: true, h: false, f: false });
});

test('the keyframe after a resume restarts only the layers in use: a layer subscribed_layers paused stays paused', async (t) => {
  const { room, ws, pub, video } = await publishing(t, { simulcast: true });
  t.mock.method(Math, 'random', () => 0);
  ws.recv({ type: 'subscribed_layers', track_sid: 'TR_mv', layers: layers(true, false, false) });
  await settle();
  ws.serverClose(1006);
  t.mock.timers.tick(0);
  const ws2 = FakeWS.all[1];
  ws2.open();
  ws2.recv(session('resumed', {
    participants: [BOB, CAROL],
    tracks: [{ sid: 'TR_ma', kind: 'audio', muted: false, mid: '0' }, { sid: 'TR_mv', kind: 'video', muted: false, mid: '1' }],
  }));
  await settle();
  assert.equal(room.state, 'connected');
  pub.setIce('connected'); // the publisher sends on its new path: a keyframe is due
  await settle();
  assert.deepEqual(video.sender.set, [
    [{ rid: 'q', active: true }, { rid: 'h', active: false }, { rid: 'f', active: false }], // subscribed_layers
    [{ rid: 'q', active: false }, { rid: 'h', active: false }, { rid: 'f', active: false }], // keyframe: off
    [{ rid: 'q', active: true }, { rid: 'h', active: false }, { rid: 'f', active: false }], // and on again
  ]);
});

test('speakers_changed becomes activeSpeakersChanged and room.activeSpeakers, loudest first with ourselves included; empty means nobody; a reconnect empties it', async (t) => {
  const { room, ws } = await joined(t);
  const events = record(room, ['activeSpeakersChanged']);
  ws.recv({
    type: 'speakers_changed',
    speakers: [
      { participant_sid: 'PA_bob', track_sid: 'TR_ba', level: 0.62 },
      { participant_sid: 'PA_me', track_sid: 'TR_ma', level: 0.18 },
    ],
  });
  const expected = [
    { participantSid: 'PA_bob', trackSid: 'TR_ba', level: 0.62, participant: room.participants.get('PA_bob') },
    { participantSid: 'PA_me', trackSid: 'TR_ma', level: 0.18, participant: room.localParticipant },
  ];
  assert.deepEqual(room.activeSpeakers, expected);
  assert.deepEqual(events, [{ name: 'activeSpeakersChanged', detail: { speakers: expected } }]);
  assert.equal(events[0].detail.speakers[1].participant, room.localParticipant);

  ws.recv({ type: 'speakers_changed', speakers: [] });
  assert.deepEqual(room.activeSpeakers, []);
  assert.deepEqual(events.at(-1).detail, { speakers: [] });

  ws.recv({ type: 'speakers_changed', speakers: [{ participant_sid: 'PA_carol', track_sid: 'TR_ca', level: 0.4 }] });
  assert.equal(room.activeSpeakers[0].participantSid, 'PA_carol');
  // Carol leaves: she is no longer listed.
  ws.recv({ type: 'participant_left', participant_sid: 'PA_carol', identity: 'carol', reason: 'left' });
  assert.deepEqual(room.activeSpeakers, []);
  assert.deepEqual(events.at(-1).detail, { speakers: [] });

  ws.recv({ type: 'speakers_changed', speakers: [{ participant_sid: 'PA_bob', track_sid: 'TR_ba', level: 0.3 }] });
  const before = events.length;
  ws.serverClose(1006); // reconnecting: nobody is heard
  assert.equal(room.state, 'reconnecting');
  assert.deepEqual(room.activeSpeakers, []);
  assert.deepEqual(events.slice(before), [{ name: 'activeSpeakersChanged', detail: { speakers: [] } }]);
});

test('connection_quality sets participant.quality and emits connectionQualityChanged per update, ours included; an unknown quality is ignored', async (t) => {
  const { room, ws } = await joined(t);
  assert.equal(room.participants.get('PA_bob').quality, 'unknown');
  assert.equal(room.localParticipant.quality, 'unknown');
  const events = record(room, ['connectionQualityChanged']);
  ws.recv({
    type: 'connection_quality',
    updates: [
      { participant_sid: 'PA_me', quality: 'excellent' },
      { participant_sid: 'PA_bob', quality: 'poor' },
      { participant_sid: 'PA_carol', quality: 'superb' },
    ],
  });
  assert.equal(room.localParticipant.quality, 'excellent');
  assert.equal(room.participants.get('PA_bob').quality, 'poor');
  assert.equal(room.participants.get('PA_carol').quality, 'unknown');
  assert.deepEqual(events, [
    { name: 'connectionQualityChanged', detail: { participantSid: 'PA_me', quality: 'excellent', participant: room.localParticipant } },
    { name: 'connectionQualityChanged', detail: { participantSid: 'PA_bob', quality: 'poor', participant: room.participants.get('PA_bob') } },
  ]);
  ws.recv({ type: 'connection_quality', updates: [{ participant_sid: 'PA_bob', quality: 'lost' }] });
  assert.equal(room.participants.get('PA_bob').quality, 'lost');
  assert.deepEqual(events.at(-1).detail.quality, 'lost');
});

test('setSubscription sends update_subscription with the whole settings each time; bad values throw and send nothing; a track nobody publishes is unknown_track', async (t) => {
  const { room, ws } = await joined(t);
  room.setSubscription('TR_bv', { width: 640, height: 360, priority: 200 });
  room.setSubscription('TR_bv', { disabled: true });
  room.setSubscription('TR_bv', {});
  room.setSubscription('TR_ba', { priority: 10 });
  assert.deepEqual(ws.subscriptions(), [
    { type: 'update_subscription', track_sid: 'TR_bv', disabled: false, width: 640, height: 360, priority: 200 },
    { type: 'update_subscription', track_sid: 'TR_bv', disabled: true },
    { type: 'update_subscription', track_sid: 'TR_bv', disabled: false },
    { type: 'update_subscription', track_sid: 'TR_ba', disabled: false, priority: 10 },
  ]);

  for (const bad of [{ width: 0 }, { height: 16385 }, { width: 640.5 }, { priority: 256 }, { priority: -1 }, { disabled: 'yes' }]) {
    assert.throws(() => room.setSubscription('TR_bv', bad), /setSubscription/, JSON.stringify(bad));
  }
  assert.throws(() => room.setSubscription('', {}), TypeError);
  assert.throws(() => room.setSubscription('TR_nope', { disabled: true }), { code: 'unknown_track' });
  assert.equal(ws.subscriptions().length, 4, 'nothing sent for what was refused');

  // A track published but not received yet gets its settings once it is.
  ws.recv({ type: 'track_published', participant_sid: 'PA_carol', track: { sid: 'TR_cv', kind: 'video', muted: false } });
  room.setSubscription('TR_cv', { width: 320, height: 180 });
  assert.equal(ws.subscriptions().length, 4);
  FakePC.all[1].fire('track', { track: { kind: 'video', id: 'TR_cv' }, streams: [{ id: 'PA_carol' }], transceiver: { mid: null } });
  assert.deepEqual(ws.subscriptions().at(-1), { type: 'update_subscription', track_sid: 'TR_cv', disabled: false, width: 320, height: 180 });
});

test('setSubscription while reconnecting is sent once the session is resumed, and what was disabled before stays so', async (t) => {
  const { room, ws } = await joined(t);
  t.mock.method(Math, 'random', () => 0); // no jitter: the first try goes out at once
  room.setSubscription('TR_ba', { disabled: true });
  ws.serverClose(1006);
  room.setSubscription('TR_bv', { width: 640, height: 360 });
  t.mock.timers.tick(0);
  const ws2 = FakeWS.all[1];
  ws2.open();
  assert.equal(ws2.sent[0].type, 'resume');
  ws2.recv(session('resumed', { participants: [BOB, CAROL] }));
  await settle();
  assert.equal(room.state, 'connected');
  assert.deepEqual(
    ws2.subscriptions().sort((a, b) => a.track_sid.localeCompare(b.track_sid)),
    [
      { type: 'update_subscription', track_sid: 'TR_ba', disabled: true },
      { type: 'update_subscription', track_sid: 'TR_bv', disabled: false, width: 640, height: 360 },
    ],
  );
});

test(`adaptive stream: one update_subscription per change, ${ADAPTIVE_STREAM_DEBOUNCE_MS} ms after the last, at the element's CSS size × devicePixelRatio; disabled: true when it leaves the viewport, the page is hidden or it is detached`, async (t) => {
  const dpr = globalThis.devicePixelRatio;
  const MS = globalThis.MediaStream;
  globalThis.devicePixelRatio = 2;
  globalThis.MediaStream = FakeMediaStream;
  t.after(() => {
    globalThis.devicePixelRatio = dpr;
    globalThis.MediaStream = MS;
  });
  const doc = new FakeDocument();
  const { room, ws, bobVideo } = await joined(t, {
    adaptiveStream: true,
    ResizeObserver: FakeResizeObserver,
    IntersectionObserver: FakeIntersectionObserver,
    document: doc,
  });
  const element = { srcObject: null, clientWidth: 0, clientHeight: 0 };
  const detach = room.attachVideo('TR_bv', element);
  assert.deepEqual(element.srcObject.getTracks(), [bobVideo]);
  const [ro] = FakeResizeObserver.all;
  const [io] = FakeIntersectionObserver.all;
  const sent = () => ws.subscriptions().filter((m) => m.track_sid === 'TR_bv');

  // Laid out at 320×180, then resized twice in quick succession.
  ro.resize(element, 320, 180);
  io.intersect(element, true);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS - 1);
  assert.deepEqual(sent(), [], 'nothing before the debounce');
  t.mock.timers.tick(1);
  assert.deepEqual(sent(), [{ type: 'update_subscription', track_sid: 'TR_bv', disabled: false, width: 640, height: 360 }]);
  ro.resize(element, 400, 225);
  t.mock.timers.tick(100);
  ro.resize(element, 480, 270);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS - 1);
  assert.equal(sent().length, 1, 'the second resize restarted the wait');
  t.mock.timers.tick(1);
  assert.equal(sent().length, 2, 'one message for both resizes');
  assert.deepEqual(sent()[1], { type: 'update_subscription', track_sid: 'TR_bv', disabled: false, width: 960, height: 540 });

  // The same size again is no news.
  ro.resize(element, 480, 270);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.equal(sent().length, 2);

  // Scrolled out of view, and back.
  io.intersect(element, false);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(sent().at(-1), { type: 'update_subscription', track_sid: 'TR_bv', disabled: true });
  io.intersect(element, true);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(sent().at(-1), { type: 'update_subscription', track_sid: 'TR_bv', disabled: false, width: 960, height: 540 });

  // The page goes to the background, and back.
  doc.setHidden(true);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(sent().at(-1), { type: 'update_subscription', track_sid: 'TR_bv', disabled: true });
  doc.setHidden(false);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(sent().at(-1).disabled, false);
  assert.equal(sent().length, 6);

  // The app's priority goes along with the adaptive size.
  room.setSubscription('TR_bv', { priority: 200 });
  assert.deepEqual(sent().at(-1), { type: 'update_subscription', track_sid: 'TR_bv', disabled: false, width: 960, height: 540, priority: 200 });

  // Detached: no element shows it, so it is not received.
  detach();
  assert.equal(element.srcObject, null);
  assert.equal(ro.observed.size, 0);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(sent().at(-1), { type: 'update_subscription', track_sid: 'TR_bv', disabled: true, priority: 200 });
  assert.equal(sent().length, 8);
  assert.deepEqual(ws.subscriptions().filter((m) => m.track_sid !== 'TR_bv'), [], 'other tracks untouched');
});

test('adaptive stream: a track shown in two elements is asked for at the larger, and disabled only when neither is visible', async (t) => {
  const dpr = globalThis.devicePixelRatio;
  globalThis.devicePixelRatio = 1;
  t.after(() => {
    globalThis.devicePixelRatio = dpr;
  });
  const { room, ws } = await joined(t, {
    adaptiveStream: true,
    ResizeObserver: FakeResizeObserver,
    IntersectionObserver: FakeIntersectionObserver,
    document: new FakeDocument(),
  });
  const stream = () => new FakeMediaStream([{ kind: 'audio', id: 'TR_ba' }]);
  const thumb = { srcObject: stream() };
  const stage = { srcObject: stream() };
  room.attachVideo('TR_bv', thumb);
  room.attachVideo('TR_bv', stage);
  assert.deepEqual(stage.srcObject.getTracks().map((x) => x.id), ['TR_ba', 'TR_bv'], 'the element keeps its audio');
  const [ro] = FakeResizeObserver.all;
  const [io] = FakeIntersectionObserver.all;
  ro.resize(thumb, 160, 90);
  ro.resize(stage, 1280, 720);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(ws.subscriptions(), [{ type: 'update_subscription', track_sid: 'TR_bv', disabled: false, width: 1280, height: 720 }]);
  io.intersect(stage, false);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(ws.subscriptions().at(-1), { type: 'update_subscription', track_sid: 'TR_bv', disabled: false, width: 160, height: 90 });
  io.intersect(thumb, false);
  t.mock.timers.tick(ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(ws.subscriptions().at(-1), { type: 'update_subscription', track_sid: 'TR_bv', disabled: true });
  assert.equal(ws.subscriptions().length, 3);
});

test('without adaptive stream attachVideo only shows the track: no observers, no update_subscription', async (t) => {
  const MS = globalThis.MediaStream;
  globalThis.MediaStream = FakeMediaStream;
  t.after(() => {
    globalThis.MediaStream = MS;
  });
  const { room, ws, bobVideo } = await joined(t, {
    ResizeObserver: FakeResizeObserver,
    IntersectionObserver: FakeIntersectionObserver,
  });
  const element = { srcObject: null };
  const detach = room.attachVideo('TR_bv', element);
  assert.deepEqual(element.srcObject.getTracks(), [bobVideo]);
  assert.equal(FakeResizeObserver.all.length + FakeIntersectionObserver.all.length, 0);
  t.mock.timers.tick(10 * ADAPTIVE_STREAM_DEBOUNCE_MS);
  detach();
  t.mock.timers.tick(10 * ADAPTIVE_STREAM_DEBOUNCE_MS);
  assert.deepEqual(ws.subscriptions(), []);
  assert.throws(() => room.attachVideo('TR_ba', element), { code: 'unknown_track' }, 'an audio track is no video');
});

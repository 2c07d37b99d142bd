// The SDK's reconnect logic (clients/js/callgate.js, docs/protocol.md "Staying
// connected") against a scripted server: fake WebSocket and RTCPeerConnection
// constructors injected through the options (as on react-native-webrtc), and
// mocked timers, so the schedule is checked to the millisecond. No browser,
// no network.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  Room, RECONNECT_SCHEDULE_MS, ICE_DISCONNECTED_MS, MEDIA_SILENCE_MS, MEDIA_WATCHDOG_INTERVAL_MS,
} from '../callgate.js';
import { FakePC, FakeWS, fakeStream } from './sdk-fakes.mjs';

const SECRET = 'Qm9vdHN0cmFwLXNlY3JldC0zMi1ieXRlcwAAAAAAAAA';
const participant = (sid, identity, tracks = []) => ({
  sid, identity, name: '', can_publish: true, can_subscribe: true, tracks,
});
const session = (type, { sid = 'PA_me', participants = [], tracks = [], grace = 20, secret = SECRET } = {}) => ({
  type,
  protocol: 1,
  room: { name: 'demo', sid: 'RM_1', max_participants: 50 },
  participant: participant(sid, 'me', tracks),
  participants,
  ice_servers: [],
  resume_secret: secret,
  reconnect_grace_s: grace,
});
const BOB = participant('PA_bob', 'bob', [{ sid: 'TR_bv', kind: 'video', muted: false }]);
const CAROL = participant('PA_carol', 'carol', [{ sid: 'TR_cv', kind: 'video', muted: false }]);

/** Lets promise chains (SDK negotiations) run; the mocked clock does not move. */
async function settle() {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/** Everything the room emits, in order. */
function record(room) {
  const events = [];
  for (const name of [
    'connectionStateChanged', 'reconnecting', 'reconnected', 'participantJoined', 'participantLeft',
    'participantReconnecting', 'participantResumed', 'trackPublished', 'trackUnpublished',
    'trackUnsubscribed', 'disconnected',
  ]) {
    room.on(name, (detail) => events.push({ name, detail }));
  }
  return events;
}

/** A room joined (with bob in it) and publishing audio and video. */
async function joinedAndPublishing(t, { grace = 20, ...options } = {}) {
  FakeWS.all = [];
  FakePC.all = [];
  t.mock.timers.enable({ apis: ['setTimeout', 'Date'], now: 1_000_000 });
  t.mock.method(Math, 'random', () => 0);
  const room = new Room({
    url: 'ws://server/rtc', token: 'TOKEN-0', WebSocket: FakeWS, RTCPeerConnection: FakePC, ...options,
  });
  const events = record(room);
  const connecting = room.connect();
  const ws = FakeWS.all[0];
  ws.open();
  assert.deepEqual(ws.sent[0], { type: 'join', token: 'TOKEN-0', protocol: 1 });
  ws.recv(session('joined', { participants: [BOB], grace }));
  await connecting;
  assert.equal(room.state, 'connected');
  const stream = fakeStream();
  const publishing = room.publish(stream);
  await settle();
  assert.equal(ws.sent.at(-1).type, 'publish_offer');
  ws.recv({ type: 'publish_answer', sdp: 'v=0 answer' });
  await publishing;
  ws.recv({ type: 'track_published', participant_sid: 'PA_me', track: { sid: 'TR_ma', kind: 'audio', muted: false, mid: '0' } });
  ws.recv({ type: 'track_published', participant_sid: 'PA_me', track: { sid: 'TR_mv', kind: 'video', muted: false, mid: '1' } });
  const [pub, sub] = FakePC.all;
  sub.remoteDescription = { type: 'offer', sdp: 'v=0' }; // as if subscribed
  pub.setIce('connected');
  sub.setIce('connected');
  return { room, events, ws, pub, sub, stream };
}

test('a dropped WebSocket is resumed on a new one with the secret; missed changes become events; the old socket\'s 4009 is ignored', async (t) => {
  const { room, events, ws, pub } = await joinedAndPublishing(t);
  const mark = events.length;
  ws.serverClose(1006);
  assert.equal(room.state, 'reconnecting');
  assert.deepEqual(events.slice(mark).map((e) => e.name), ['connectionStateChanged', 'reconnecting']);
  assert.equal(events.at(-1).detail.reason, 'signaling_lost');

  t.mock.timers.tick(RECONNECT_SCHEDULE_MS[0]);
  assert.equal(FakeWS.all.length, 2, 'the first try goes out at once');
  const ws2 = FakeWS.all[1];
  ws2.open();
  assert.deepEqual(ws2.sent, [{ type: 'resume', participant_sid: 'PA_me', secret: SECRET, protocol: 1 }]);

  // Meanwhile bob left and carol joined with a video track.
  ws2.recv(session('resumed', {
    participants: [CAROL],
    tracks: [{ sid: 'TR_ma', kind: 'audio', muted: false, mid: '0' }, { sid: 'TR_mv', kind: 'video', muted: false, mid: '1' }],
  }));
  await settle();
  assert.equal(room.state, 'connected');
  const after = events.slice(mark + 2);
  assert.deepEqual(
    after.map((e) => `${e.name}:${e.detail.participantSid ?? e.detail.participant?.sid ?? e.detail.state ?? e.detail.resumed}`),
    [
      'participantLeft:PA_bob',
      'participantJoined:PA_carol',
      'trackPublished:PA_carol',
      'connectionStateChanged:connected',
      'reconnected:true',
    ],
  );
  assert.deepEqual([...room.participants.keys()], ['PA_carol']);

  // The publisher restarts ICE: a new offer made with iceRestart on the new socket.
  assert.deepEqual(pub.offers.at(-1), { iceRestart: true });
  assert.equal(ws2.sent.at(-1).type, 'publish_offer');
  // The server's restart offer for the subscriber is answered normally.
  ws2.recv({ type: 'subscribe_offer', sdp: 'v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\na=msid:PA_carol TR_cv\r\n' });
  await settle();
  assert.ok(ws2.types().includes('subscribe_answer'), `answered: ${ws2.types()}`);

  // The old socket was never closed by the client (a close frame other than 4000 would end the session).
  assert.equal(ws.closedByClient, null);
  // The server closes the old socket with 4009 replaced: nothing happens.
  ws.onclose?.({ code: 4009, reason: 'replaced' });
  assert.equal(room.state, 'connected');
  assert.equal(events.filter((e) => e.name === 'disconnected').length, 0);
});

test('resume tries wait 0, 0.3, 1.2, 2.7 s (+ up to 0.5 s jitter) and stop at the grace; then the room joins afresh with the tokenProvider\'s token and publishes the same tracks again', async (t) => {
  let provided = 0;
  const { room, events, ws, stream } = await joinedAndPublishing(t, {
    grace: 5,
    tokenProvider: async () => `TOKEN-${++provided}`,
  });
  t.mock.method(Math, 'random', () => 1); // the whole 500 ms of jitter each time
  const start = Date.now();
  ws.serverClose(1006);
  /** @type {FakeWS[]} */
  const tries = [];
  let joinTry = null;
  for (let ms = 0; ms <= 10_000 && !joinTry; ms += 100) {
    t.mock.timers.tick(ms === 0 ? 0 : 100);
    for (const w of FakeWS.all.slice(1)) {
      if (tries.includes(w)) continue;
      tries.push(w);
      w.open();
      if (w.sent[0].type === 'join') joinTry = w;
      else w.serverClose(1006); // this try fails: the network is still gone
    }
    await settle();
  }
  // Each wait starts when the try before it failed (here: at once).
  assert.deepEqual(tries.map((w) => w.openedAt - start), [500, 1300, 3000, 5000]);
  assert.deepEqual(tries.slice(0, 3).map((w) => w.sent[0].type), ['resume', 'resume', 'resume']);
  assert.ok(joinTry, 'a fresh join when the grace is over');
  assert.deepEqual(joinTry.sent, [{ type: 'join', token: 'TOKEN-1', protocol: 1 }]);

  const oldPcs = [...FakePC.all];
  joinTry.recv(session('joined', { sid: 'PA_me2', participants: [BOB] }));
  await settle();
  assert.ok(oldPcs.every((pc) => pc.closed), 'the old peer connections are closed');
  const newPub = FakePC.all[2];
  assert.deepEqual(newPub.transceivers.map((tr) => tr.track), stream.getTracks(), 'the same tracks are published again');
  assert.equal(joinTry.sent.at(-1).type, 'publish_offer');
  assert.equal(room.state, 'reconnecting', 'not reconnected before the tracks are published');
  joinTry.recv({ type: 'publish_answer', sdp: 'v=0 answer' });
  await settle();
  assert.equal(room.state, 'connected');
  assert.deepEqual(events.at(-1), { name: 'reconnected', detail: { resumed: false } });
  assert.equal(room.localParticipant.sid, 'PA_me2');
  assert.equal(events.filter((e) => e.name === 'participantLeft').length, 0, 'bob stayed: no participantLeft');
});

test('resume_failed (error, then close 4008) makes the room join afresh at once with the original token', async (t) => {
  const { room, ws } = await joinedAndPublishing(t);
  ws.serverClose(1006);
  t.mock.timers.tick(0);
  const resumeTry = FakeWS.all[1];
  resumeTry.open();
  resumeTry.recv({ type: 'error', code: 'resume_failed', message: 'no such session' });
  assert.deepEqual(resumeTry.closedByClient, { code: 4000, reason: 'resuming' }, 'a refused resume is dropped with 4000');
  resumeTry.serverClose(4008, 'resume_failed');
  t.mock.timers.tick(0);
  await settle();
  const joinTry = FakeWS.all[2];
  assert.ok(joinTry, 'a new socket for the fresh join');
  joinTry.open();
  await settle();
  assert.deepEqual(joinTry.sent, [{ type: 'join', token: 'TOKEN-0', protocol: 1 }]);
  assert.equal(room.state, 'reconnecting');
});

test('node_lost (close 4011: the session\'s node is gone) makes the room join afresh at once', async (t) => {
  const { room, ws, events } = await joinedAndPublishing(t);
  ws.serverClose(4011, 'node_lost');
  assert.equal(room.state, 'reconnecting');
  assert.equal(events.filter((e) => e.name === 'reconnecting').at(-1).detail.reason, 'node_lost');
  t.mock.timers.tick(0);
  await settle();
  const joinTry = FakeWS.all[1];
  assert.ok(joinTry, 'a new socket at once');
  joinTry.open();
  await settle();
  assert.deepEqual(joinTry.sent, [{ type: 'join', token: 'TOKEN-0', protocol: 1 }], 'a join, not a resume');
});

test('left node_drained (its cluster node stopped) makes the room join afresh', async (t) => {
  const { room, ws, events } = await joinedAndPublishing(t);
  ws.recv({ type: 'left', reason: 'node_drained' });
  ws.serverClose(1000, 'node_drained');
  assert.equal(room.state, 'reconnecting');
  assert.equal(events.filter((e) => e.name === 'reconnecting').at(-1).detail.reason, 'node_drained');
  t.mock.timers.tick(0);
  await settle();
  const joinTry = FakeWS.all[1];
  joinTry.open();
  await settle();
  assert.deepEqual(joinTry.sent, [{ type: 'join', token: 'TOKEN-0', protocol: 1 }]);
});

test('ICE failed, or disconnected for 2 s, starts a resume; disconnected for less does not', async (t) => {
  const { room, events, pub, sub } = await joinedAndPublishing(t);
  sub.setIce('disconnected');
  t.mock.timers.tick(ICE_DISCONNECTED_MS - 100);
  sub.setIce('connected');
  t.mock.timers.tick(1000);
  assert.equal(room.state, 'connected', 'a short disconnect is not a reconnect');

  sub.setIce('disconnected');
  t.mock.timers.tick(ICE_DISCONNECTED_MS);
  assert.equal(room.state, 'reconnecting');
  assert.equal(events.filter((e) => e.name === 'reconnecting').at(-1).detail.reason, 'ice_disconnected');
  t.mock.timers.tick(0);
  const w = FakeWS.all.at(-1);
  w.open();
  assert.equal(w.sent[0].type, 'resume');
  w.recv(session('resumed', { participants: [BOB] }));
  await settle();
  assert.equal(room.state, 'connected');

  pub.setIce('failed');
  assert.equal(room.state, 'reconnecting');
  assert.equal(events.filter((e) => e.name === 'reconnecting').at(-1).detail.reason, 'ice_failed');
});

test('the server\'s reconnecting restarts ICE in place (publisher offer with iceRestart, ice_restart) and reconnects when ICE is back', async (t) => {
  const { room, events, ws, pub, sub } = await joinedAndPublishing(t);
  const offers = pub.offers.length;
  ws.recv({ type: 'reconnecting', reason: 'media_silent' });
  assert.equal(room.state, 'reconnecting');
  await settle();
  assert.ok(ws.types().includes('ice_restart'), `sent: ${ws.types()}`);
  assert.deepEqual(pub.offers.slice(offers), [{ iceRestart: true }]);
  assert.equal(ws.sent.at(-1).type, 'publish_offer');
  assert.equal(FakeWS.all.length, 1, 'no new WebSocket');
  pub.setIce('checking');
  pub.setIce('connected');
  assert.equal(room.state, 'reconnecting', 'the subscriber is not back yet');
  sub.setIce('checking');
  sub.setIce('connected');
  assert.equal(room.state, 'connected');
  assert.deepEqual(events.at(-1), { name: 'reconnected', detail: { resumed: true } });
});

test('a left with dtls_timeout joins afresh; token close codes and other left reasons end the session', async (t) => {
  {
    const { room, ws } = await joinedAndPublishing(t);
    ws.recv({ type: 'left', reason: 'dtls_timeout' });
    ws.serverClose(1000, 'dtls_timeout');
    assert.equal(room.state, 'reconnecting');
    t.mock.timers.tick(0);
    await settle();
    const w = FakeWS.all.at(-1);
    w.open();
    assert.equal(w.sent[0].type, 'join');
    t.mock.timers.reset();
  }
  {
    const { room, ws, events } = await joinedAndPublishing(t);
    ws.recv({ type: 'left', reason: 'removed' });
    ws.serverClose(1000, 'removed');
    assert.equal(room.state, 'disconnected');
    assert.deepEqual(events.at(-1), { name: 'disconnected', detail: { reason: 'removed', code: 1000 } });
    t.mock.timers.reset();
  }
  {
    const { room, ws } = await joinedAndPublishing(t);
    ws.serverClose(4003, 'token_expired');
    assert.equal(room.state, 'disconnected');
  }
});

test('participant_reconnecting and participant_resumed become participantReconnecting and participantResumed', async (t) => {
  const { room, events, ws } = await joinedAndPublishing(t);
  ws.recv({ type: 'participant_reconnecting', participant_sid: 'PA_bob', identity: 'bob' });
  assert.equal(room.participants.get('PA_bob').reconnecting, true);
  ws.recv({ type: 'participant_resumed', participant_sid: 'PA_bob', identity: 'bob' });
  assert.equal(room.participants.get('PA_bob').reconnecting, false);
  assert.deepEqual(
    events.filter((e) => e.name.startsWith('participantRe')).map((e) => [e.name, e.detail.participantSid, e.detail.identity]),
    [['participantReconnecting', 'PA_bob', 'bob'], ['participantResumed', 'PA_bob', 'bob']],
  );
});

/** Moves the mocked clock in steps of 100 ms, letting the watchdog's getStats() promises settle. */
async function advance(t, ms) {
  for (let done = 0; done < ms; done += 100) {
    t.mock.timers.tick(Math.min(100, ms - done));
    await settle();
  }
}

/** Gives `pc` a byte counter that the returned object moves: a browser-shaped (Map) report. */
function inbound(pc, shape = 'transport') {
  const counter = { bytes: 1000 };
  pc.statsReport = () => {
    if (shape === 'transport') {
      return new Map([
        ['T01', { id: 'T01', type: 'transport', bytesReceived: counter.bytes }],
        ['OT01V', { id: 'OT01V', type: 'outbound-rtp', kind: 'video', bytesSent: 5 }],
      ]);
    }
    if (shape === 'pairs') {
      // No transport stats (as on some react-native-webrtc versions): candidate pairs in an array.
      return [
        { id: 'CP1', type: 'candidate-pair', bytesReceived: counter.bytes },
        { id: 'CP2', type: 'candidate-pair', bytesReceived: 0 },
      ];
    }
    // Legacy shape: fields in a `values` array, numbers as strings.
    return [{ id: 'conn', type: 'googCandidatePair', values: [{ bytesReceived: String(counter.bytes) }] }];
  };
  return counter;
}

/** Bytes keep arriving on `counters` every 100 ms for `ms`. */
async function flowing(t, counters, ms) {
  for (let done = 0; done < ms; done += 100) {
    for (const c of counters) c.bytes += 500;
    await advance(t, 100);
  }
}

test('a resume try that gets no answer is closed with 4000 resuming, and the next try resumes the same session', async (t) => {
  const { room, ws } = await joinedAndPublishing(t, { reconnectTryTimeout: 1000 });
  ws.serverClose(1006);
  t.mock.timers.tick(0);
  const silent = FakeWS.all[1];
  silent.open();
  assert.equal(silent.sent[0].type, 'resume');
  t.mock.timers.tick(1000); // no `resumed`
  assert.deepEqual(silent.closedByClient, { code: 4000, reason: 'resuming' });
  assert.equal(room.state, 'reconnecting');
  t.mock.timers.tick(RECONNECT_SCHEDULE_MS[1]);
  const next = FakeWS.all[2];
  assert.ok(next, 'a next try');
  next.open();
  assert.equal(next.sent[0].type, 'resume');
  next.recv(session('resumed', { participants: [BOB] }));
  await settle();
  assert.equal(room.state, 'connected');
  assert.equal(room.localParticipant.sid, 'PA_me');
});

test('leave() closes with 1000: the session socket after the server\'s silence, and a pending try and the given-up socket while reconnecting', async (t) => {
  {
    const { room, ws } = await joinedAndPublishing(t);
    const leaving = room.leave(3000);
    assert.equal(ws.sent.at(-1).type, 'leave');
    t.mock.timers.tick(3000); // the server never closes
    await leaving;
    assert.deepEqual(ws.closedByClient, { code: 1000, reason: 'left' });
    t.mock.timers.reset();
  }
  {
    const { room, ws, events } = await joinedAndPublishing(t);
    ws.recv({ type: 'reconnecting', reason: 'media_silent' });
    t.mock.timers.tick(5000); // the in-place ICE restart did not do: tries on new sockets
    const attempt = FakeWS.all.at(-1);
    assert.notEqual(attempt, ws);
    assert.equal(ws.closedByClient, null, 'the given-up socket stays open while resuming');
    await room.leave();
    assert.deepEqual(attempt.closedByClient, { code: 1000, reason: 'left' });
    assert.deepEqual(ws.closedByClient, { code: 1000, reason: 'left' });
    assert.equal(events.at(-1).name, 'disconnected');
  }
});

test('media watchdog: no inbound bytes for 2 s on transports that were receiving starts a resume (no_inbound_media); 1.5 s of silence does not', async (t) => {
  const { room, events, ws, pub, sub } = await joinedAndPublishing(t);
  assert.equal(MEDIA_WATCHDOG_INTERVAL_MS, 500);
  assert.equal(MEDIA_SILENCE_MS, 2000);
  const rxPub = inbound(pub);
  const rxSub = inbound(sub);
  await flowing(t, [rxPub, rxSub], 2000);
  await advance(t, 1500); // a short silence
  assert.equal(room.state, 'connected', 'a silence shorter than 2 s is not a lost connection');
  await flowing(t, [rxPub, rxSub], 1000);

  const silentFrom = Date.now();
  await advance(t, MEDIA_SILENCE_MS - 100);
  assert.equal(room.state, 'connected');
  await advance(t, 600);
  assert.equal(room.state, 'reconnecting');
  const at = events.find((e) => e.name === 'reconnecting');
  assert.equal(at.detail.reason, 'no_inbound_media');
  assert.ok(Date.now() - silentFrom <= MEDIA_SILENCE_MS + MEDIA_WATCHDOG_INTERVAL_MS, `detected after ${Date.now() - silentFrom} ms`);
  // The resume path: the old socket is left open, a new one sends `resume`.
  assert.equal(ws.closedByClient, null);
  t.mock.timers.tick(0);
  const w = FakeWS.all.at(-1);
  assert.notEqual(w, ws);
  w.open();
  assert.equal(w.sent[0].type, 'resume');
});

test('media watchdog: one transport still receiving keeps the room connected while the other is silent', async (t) => {
  const { room, pub, sub } = await joinedAndPublishing(t);
  const rxPub = inbound(pub);
  const rxSub = inbound(sub);
  await flowing(t, [rxPub, rxSub], 2000);
  await flowing(t, [rxPub], 5000); // the subscriber gets nothing, the publisher its RTCP
  assert.equal(room.state, 'connected');
});

test('media watchdog: a silence announced by the server (remote mute, participant reconnecting) does not start a resume', async (t) => {
  const { room, ws, sub } = await joinedAndPublishing(t);
  const rxSub = inbound(sub); // the publisher has no stats: only the subscriber counts
  await flowing(t, [rxSub], 2000);
  ws.recv({ type: 'track_muted', participant_sid: 'PA_bob', track_sid: 'TR_bv', muted: true });
  await advance(t, 5000);
  assert.equal(room.state, 'connected', 'muted: nothing to receive');
  ws.recv({ type: 'track_muted', participant_sid: 'PA_bob', track_sid: 'TR_bv', muted: false });
  await flowing(t, [rxSub], 2000);
  ws.recv({ type: 'participant_reconnecting', participant_sid: 'PA_bob', identity: 'bob' });
  await advance(t, 5000);
  assert.equal(room.state, 'connected', 'bob reconnecting: nothing is forwarded from him');
  // Flowing again, then silent without a word from the server: that is ours to fix.
  await flowing(t, [rxSub], 2000);
  await advance(t, MEDIA_SILENCE_MS + MEDIA_WATCHDOG_INTERVAL_MS);
  assert.equal(room.state, 'reconnecting');
});

test('media watchdog: reads candidate-pair bytes from array and legacy reports (react-native-webrtc), and does nothing without stats', async (t) => {
  for (const shape of ['pairs', 'legacy']) {
    const { room, sub } = await joinedAndPublishing(t);
    const rx = inbound(sub, shape);
    await flowing(t, [rx], 2000);
    assert.equal(room.state, 'connected');
    await advance(t, MEDIA_SILENCE_MS + MEDIA_WATCHDOG_INTERVAL_MS);
    assert.equal(room.state, 'reconnecting', `${shape}: silence detected`);
    t.mock.timers.reset();
  }
  {
    const { room, pub, sub } = await joinedAndPublishing(t);
    // getStats() rejects on both (FakePC without a report), then reports without byte counts.
    await advance(t, 10_000);
    assert.equal(room.state, 'connected', 'getStats() failing: the watchdog does nothing');
    for (const pc of [pub, sub]) pc.statsReport = () => new Map([['x', { type: 'transport' }], ['y', null]]);
    await advance(t, 10_000);
    assert.equal(room.state, 'connected', 'no byte counts: the watchdog does nothing');
  }
});
